"""Bounded resources: resident memory across epochs and event-file size per epoch, for each default config.

    python benchmarks/resources.py                       # all four configs, 3 epochs each + a 10-epoch RSS run
    python benchmarks/resources.py --configs lenet5 --epochs 3 --rss-epochs 10

Every callback on, at its defaults, through the real CLI on Fashion-MNIST. Training is cut to
``--train-batches`` per epoch (the pictures do not depend on how long an epoch is, only on how many epochs are
drawn), validation is the full 5,000-image split. Prints, per config, the event-file size per epoch (images,
scalars, histograms; the projector files are counted apart) and, for the RSS run, the process's resident memory
after each epoch and its growth from the second epoch to the last.

    python benchmarks/resources.py --histograms resnet50 --size 224 --images 200

The activation histograms' peak memory on a torchvision net at ``--size`` px: the process's peak resident memory
above its start while the ``activations`` callback gathers its values pass by pass within ``capture_bytes`` (as it
does), then while one pass captures every default layer of every image (as it did), in this one process.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torchvision  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402

from callbacks.activations import HISTOGRAM_MAX, ActivationsCallback  # noqa: E402
from callbacks.hooks import capture_activations  # noqa: E402
from train import cli_main  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_above(fn) -> float:
    """MB of resident memory above the current at the peak while ``fn`` runs (Linux: the peak is reset first)."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident size
    start = rss_mb()
    fn()
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(hwm.split()[1]) / 1024 - start


def histogram_peaks(model: str, size: int, images: int) -> tuple[int, float, float]:
    """(layers, MB pass by pass, MB in one capture) of the activations callback's histograms on ``model``."""
    torch.manual_seed(0)
    net = getattr(torchvision.models, model)(num_classes=1000).eval()
    cb = ActivationsCallback()
    cb.configure_for(net, (3, size, size))
    x = torch.rand(images, 3, size, size)
    with torch.no_grad():
        bounded = peak_above(lambda: cb.histogram_values(net, x))  # first: freed memory may stay mapped
        whole = peak_above(lambda: capture_activations(net, x, cb.layer_names, stop_after_last=True))
    return len(cb.layer_names), bounded, whole


class RSS(Callback):
    def __init__(self) -> None:
        self.mb: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        gc.collect()
        self.mb.append(rss_mb())


def run(config: str, epochs: int, train_batches: int, root: str, rss: RSS | None = None):
    args = [
        "--config",
        str(ROOT / "configs" / f"{config}.yaml"),
        "--data.dataset",
        "fashion_mnist",
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.limit_train_batches",
        str(train_batches),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.default_root_dir",
        root,
    ]
    cli = cli_main(args, run=False)
    if rss is not None:
        cli.trainer.callbacks.append(rss)
    cli.trainer.fit(cli.model, cli.datamodule)
    log_dir = Path(cli.trainer.log_dir)
    events = sum(p.stat().st_size for p in log_dir.glob("events.out.tfevents.*"))
    projector = sum(p.stat().st_size for p in log_dir.glob("0*/**/*") if p.is_file())
    return events, projector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["mlp", "simple_cnn", "lenet5", "deep_cnn"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rss-epochs", type=int, default=10)
    parser.add_argument("--rss-config", default="lenet5")
    parser.add_argument("--train-batches", type=int, default=20)
    parser.add_argument(
        "--histograms", metavar="MODEL", help="only the histograms' peak memory on this torchvision net"
    )
    parser.add_argument("--size", type=int, default=224, help="(--histograms) image size")
    parser.add_argument("--images", type=int, default=HISTOGRAM_MAX, help="(--histograms) images")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]
    if args.histograms:
        layers, bounded, whole = histogram_peaks(args.histograms, args.size, args.images)
        print(f"\n{args.histograms} at {args.size} px, {args.images} images, {layers} layers: peak resident memory")
        print("| pass by pass within capture_bytes | one capture of every image |\n|---|---|")
        print(f"| {bounded:+.0f} MB | {whole:+.0f} MB |")
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs:
            events, projector = run(config, args.epochs, args.train_batches, f"{tmp}/{config}")
            rows.append((config, events / args.epochs / 1e6, projector / 1e6))
        rss = RSS()
        if args.rss_epochs:
            run(args.rss_config, args.rss_epochs, args.train_batches, f"{tmp}/rss", rss)
    print(f"\nevent file per epoch ({args.epochs} epochs, every callback at its defaults)")
    print("| config | event file per epoch | projector files, whole run |\n|---|---|---|")
    for config, mb, proj in rows:
        print(f"| {config} | {mb:.2f} MB | {proj:.2f} MB |")
    if rss.mb:
        print(f"\nresident memory after each epoch, {args.rss_config}, {args.rss_epochs} epochs (MB):")
        print(" ".join(f"{m:.0f}" for m in rss.mb))
        print(f"growth from epoch 2 to epoch {len(rss.mb)}: {rss.mb[-1] - rss.mb[1]:+.1f} MB")


if __name__ == "__main__":
    main()
