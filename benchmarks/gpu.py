"""What drawing costs a training run on one GPU: none / inline / background, on a small and a mid-sized net.

    python -m benchmarks.gpu                     # on the GPU machine, from the repository root (about 3 minutes)
    python -m benchmarks.gpu --device cpu --tiny # the same table at a tiny size on the CPU (what the tests run)

Two fits, each three ways, in this one process (after a warm-up fit that pays CUDA's and cuDNN's start-up):

- LeNet-5 on Fashion-MNIST (the Debian files where present, else 10 classes of blobs made on the device);
- a torchvision ResNet-18 at 32 px on 100 classes (images made on the device: a class's smooth pattern + noise).

The data lives on the device and is served by slicing (no loader workers), so training is as fast as the device
allows and drawing is measured against that. Every callback at its defaults; ways: ``none`` (no callbacks),
``inline`` (``Drawing("inline")``), ``background`` (``Drawing("background")``: a process drawing on the same
GPU, its memory capped). Printed: the fit's wall clock (from ``fit`` called to ``fit`` returned, every picture
written), its ratio to ``none``, the callbacks' own seconds (inline: in training; background: what training waited
for the drawer, and the drawer's own seconds beside), and the training process's peak memory: GPU memory on a GPU
(``torch.cuda.max_memory_allocated``; the drawer is a process of its own), peak resident memory on the CPU.
Then each callback's own seconds per fit, inline.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from callbacks import VISUALIZATIONS  # noqa: E402
from callbacks.drawing import Drawing  # noqa: E402
from lit_modules.classifier import LitClassifier  # noqa: E402
from lit_modules.datamodule import DEBIAN_FASHION_DIR, read_idx  # noqa: E402
from lit_modules.nets import LeNet5  # noqa: E402

WAYS = ("none", "inline", "background")


def on_device(x: torch.Tensor, y: torch.Tensor, classes: list[str]) -> TensorDataset:
    data = TensorDataset(x, y)
    data.classes, data.targets = classes, y  # torchvision's conventions, which convscope reads
    return data


def loader(data: TensorDataset, batch: int, shuffle: bool) -> DataLoader:
    """Whole batches sliced from device-resident tensors (one gather per batch, no per-sample collate)."""
    order = RandomSampler(data) if shuffle else SequentialSampler(data)
    return DataLoader(data, sampler=BatchSampler(order, batch, drop_last=False), batch_size=None)


def fashion(device: torch.device, n_train: int, n_val: int) -> tuple[TensorDataset, TensorDataset, str]:
    """Fashion-MNIST from the Debian files, else 10 classes of blobs made on the device."""
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]
    if (DEBIAN_FASHION_DIR / "t10k-labels-idx1-ubyte.gz").is_file():
        out = []
        for split, n in (("train", n_train), ("t10k", n_val)):
            x = read_idx(DEBIAN_FASHION_DIR / f"{split}-images-idx3-ubyte.gz", 3)[:n].unsqueeze(1).float() / 255
            y = read_idx(DEBIAN_FASHION_DIR / f"{split}-labels-idx1-ubyte.gz", 1)[:n].long()
            out.append(on_device(x.to(device), y.to(device), names))
        return out[0], out[1], "Fashion-MNIST (Debian files)"
    train, val = made(device, n_train, n_val, classes=10, channels=1, size=28)
    return train, val, "10 classes made on the device (no Fashion-MNIST files)"


def made(
    device: torch.device, n_train: int, n_val: int, classes: int, channels: int, size: int
) -> tuple[TensorDataset, TensorDataset]:
    """``classes`` classes of images made on the device: each class a smooth random pattern, each image that
    pattern plus noise, in [0, 1]."""
    g = torch.Generator(device).manual_seed(0)
    patterns = torch.rand(classes, channels, size // 4, size // 4, generator=g, device=device)
    patterns = F.interpolate(patterns, size=(size, size), mode="bilinear", align_corners=False)
    out = []
    for n in (n_train, n_val):
        y = torch.randint(classes, (n,), generator=g, device=device)
        x = (patterns[y] + 0.3 * torch.randn(n, channels, size, size, generator=g, device=device)).clamp(0, 1)
        out.append(on_device(x, y, [f"class {i}" for i in range(classes)]))
    return out[0], out[1]


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # Linux: resets the peak resident size (VmHWM)
        except OSError:
            pass


def peak_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    for line in Path("/proc/self/status").read_text().splitlines() if Path("/proc/self/status").exists() else []:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def fit(
    net_fn, train: TensorDataset, val: TensorDataset, way: str, args: argparse.Namespace, root: str, name: str
) -> dict:
    """One fit, ``way`` drawing; its wall clock, the callbacks' and the drawer's seconds, peak memory."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    cbs = [] if way == "none" else [VISUALIZATIONS[key](strict=True) for key in args.callbacks]
    drawing = None if way == "none" else Drawing(way)
    trainer = Trainer(
        max_epochs=args.epochs,
        accelerator=device.type,
        devices=[device.index or 0] if device.type == "cuda" else 1,
        logger=TensorBoardLogger(root, name=f"{name}-{way}"),
        callbacks=[*cbs, *([drawing] if drawing else [])],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=True,
        num_sanity_val_steps=0,
        limit_train_batches=args.steps,
    )
    module = LitClassifier(net_fn(), num_classes=len(train.classes))  # the project's own: Adam, cross-entropy
    reset_peak(device)
    t0 = time.perf_counter()
    trainer.fit(module, loader(train, args.batch, True), loader(val, args.batch * 2, False))
    seconds = time.perf_counter() - t0
    own = {cb.technique: sum(cb.seconds) for cb in cbs}
    background = drawing is not None and drawing.resolved == "background"
    return {
        "model": name,
        "way": way,
        "fit": seconds,
        "own": sum(own.values()),
        "each": own,
        "waited": sum(drawing.waited.values()) if background else None,
        "drawer": sum(drawing.seconds) if background else None,
        "peak": peak_mb(device),
    }


def table(rows: list[dict], device: torch.device) -> str:
    """The rows as a Markdown table: each fit beside its model's ``none``."""
    memory = "peak GPU memory (training)" if device.type == "cuda" else "peak resident memory"
    lines = [
        f"| model | drawing | fit | x none | callbacks' own time in training | drawer's own time | {memory} |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        none = next(n for n in rows if n["model"] == r["model"] and n["way"] == "none")["fit"]
        training = r["waited"] if r["waited"] is not None else r["own"]
        lines.append(
            f"| {r['model']} | {r['way']} | {r['fit']:.1f} s | {r['fit'] / none:.2f} | {training:.1f} s | "
            + (f"{r['drawer']:.1f} s" if r["drawer"] is not None else "-")
            + " | "
            + (f"{r['peak']:.0f} MB" if r["peak"] is not None else "n/a")
            + " |"
        )
    return "\n".join(lines)


def per_callback(rows: list[dict]) -> str:
    """Each callback's own seconds per fit, inline, one column per model."""
    inline = [r for r in rows if r["way"] == "inline"]
    lines = ["| callback | " + " | ".join(r["model"] for r in inline) + " |", "|---" * (len(inline) + 1) + "|"]
    for key in inline[0]["each"] if inline else []:
        lines.append(f"| {key} | " + " | ".join(f"{r['each'][key]:.2f} s" for r in inline) + " |")
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="training steps per epoch (default: the whole set)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lenet-train", type=int, default=60000)
    parser.add_argument("--resnet-train", type=int, default=12800, help="ResNet-18's training images (100 steps)")
    parser.add_argument("--val", type=int, default=5000, help="validation images, each model")
    parser.add_argument("--ways", nargs="+", default=list(WAYS), choices=WAYS)
    parser.add_argument("--callbacks", nargs="+", default=list(VISUALIZATIONS), choices=list(VISUALIZATIONS))
    parser.add_argument("--tiny", action="store_true", help="a tiny size: 1 epoch, 2 steps, 256 validation images")
    args = parser.parse_args(argv)
    if args.tiny:
        args.epochs, args.steps, args.val, args.lenet_train, args.resnet_train = 1, 2, 256, 256, 256
    if "none" not in args.ways:
        args.ways = ["none", *args.ways]  # the ratios' floor
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
    t_start = time.perf_counter()
    lenet_train, lenet_val, source = fashion(device, args.lenet_train, args.val)
    resnet_train, resnet_val = made(device, args.resnet_train, args.val, classes=100, channels=3, size=32)
    models = {
        "LeNet-5": (LeNet5, lenet_train, lenet_val),
        "ResNet-18, 32 px, 100 classes": (
            lambda: torchvision.models.resnet18(num_classes=100),
            resnet_train,
            resnet_val,
        ),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        warm = argparse.Namespace(**{**vars(args), "epochs": 1, "steps": 2})
        fit(models["ResNet-18, 32 px, 100 classes"][0], resnet_train, resnet_val, "none", warm, tmp, "warm-up")
        for name, (net_fn, train, val) in models.items():
            for way in args.ways:
                rows.append(r := fit(net_fn, train, val, way, args, tmp, name))
                print(f"{name}, {way}: {r['fit']:.1f} s", flush=True)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"\n{card}; torch {torch.__version__}; {args.epochs} epochs at batch {args.batch}, "
        f"{args.steps or 'all'} steps each; LeNet-5 on {source} ({len(lenet_train)} images), ResNet-18 on "
        f"{len(resnet_train)} images; {args.val} validation images; whole script {time.perf_counter() - t_start:.0f} s"
    )
    print(table(rows, device))
    print("\neach callback's own seconds per fit, inline:")
    print(per_callback(rows))
    return rows


if __name__ == "__main__":
    main()
