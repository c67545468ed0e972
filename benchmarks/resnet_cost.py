"""What the callbacks cost on the ResNet-18 example (torchvision's ResNet-18 at 32 px, configs/resnet18_cifar10.yaml).

    python -m benchmarks.resnet_cost [--dataset fashion_mnist_rgb] [--epochs 2] [--train-batches 100]
                                     [--batch-size 64] [--val-size 1000] [--accelerator cpu|gpu]

In one process: the same fit (same seed, data and steps) without and with every callback at the config's settings,
each through the real CLI with a TensorBoard logger. Each epoch trains ``--train-batches`` steps and validates the
whole validation split, held to ``--val-size`` images (5,000 in a real run) so that validation stays short; the
fixed set is then all of it, and the callbacks draw from it as in a real run. Prints seconds per
epoch, the ratio, each callback's own seconds per drawing, the event-file size and the load average of the machine
(on a shared machine, compare numbers of one run only). Run it from the repository root (``-m``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from callbacks import VISUALIZATIONS
from train import cli_main

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "resnet18_cifar10.yaml"


def fit(args: argparse.Namespace, root: str, visualize: bool, epochs: int, train_batches: int):
    cli_args = [
        "fit",
        "--config",
        str(CONFIG),
        "--data.dataset",
        args.dataset,
        "--data.batch_size",
        str(args.batch_size),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.limit_train_batches",
        str(train_batches),
        "--data.val_size",
        str(args.val_size),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.accelerator",
        args.accelerator,
        "--trainer.default_root_dir",
        root,
    ]
    if not visualize:
        cli_args += [a for key in VISUALIZATIONS for a in (f"--{key}.enabled", "false")]
    t0 = time.perf_counter()
    cli = cli_main(cli_args)
    return cli, (time.perf_counter() - t0) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist_rgb", help="cifar10 where its files are in data/")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-batches", type=int, default=100, help="training steps per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--val-size", type=int, default=1000, help="validation images (the fixed set is all of them)")
    parser.add_argument("--accelerator", default="cpu")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        fit(args, f"{tmp}/warm", False, 1, 2)  # warm-up: imports, kernels, the page cache
        _, plain = fit(args, f"{tmp}/plain", False, args.epochs, args.train_batches)
        load.append(os.getloadavg()[0])
        cli, vis = fit(args, f"{tmp}/vis", True, args.epochs, args.train_batches)
        load.append(os.getloadavg()[0])
        events = sum(p.stat().st_size for p in Path(cli.trainer.log_dir).glob("events.out.tfevents.*"))
        cbs = [cb for cb in cli.trainer.callbacks if hasattr(cb, "technique")]
    steps = args.epochs * args.train_batches
    print(
        f"\nconfigs/resnet18_cifar10.yaml on {args.dataset}, {args.epochs} epochs x {args.train_batches} steps "
        f"(batch {args.batch_size}, {steps} steps per fit), {args.accelerator}, {os.cpu_count()} CPUs, load average "
        f"{' / '.join(f'{v:.1f}' for v in load)} (start / after plain / after callbacks)"
    )
    print("| | seconds per epoch |\n|---|---|")
    print(f"| without callbacks | {plain:.1f} s |\n| with every callback at the config's settings | {vis:.1f} s |")
    print(f"| ratio | {vis / plain:.2f}x ({(vis / plain - 1) * 100:+.0f}%) |")
    own = sum(sum(cb.seconds) for cb in cbs) / args.epochs
    print(f"| callbacks' own time per epoch, averaged | {own:.1f} s |")
    print(f"| event file per epoch | {events / args.epochs / 1e6:.2f} MB |")
    print("\n| callback | every n epochs | drawings | seconds per drawing | seconds per epoch, averaged |")
    print("|---|---|---|---|---|")
    for cb in sorted(cbs, key=lambda cb: -sum(cb.seconds)):
        n = len(cb.seconds)
        print(
            f"| {cb.technique} | {cb.every_n_epochs} | {n} | {sum(cb.seconds) / max(1, n):.2f} | "
            f"{sum(cb.seconds) / args.epochs:.2f} |"
        )


if __name__ == "__main__":
    main()
