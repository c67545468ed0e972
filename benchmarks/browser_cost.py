"""What the unit browser's data (``callbacks.units``, at its defaults) adds to the callbacks' drawing time, on LeNet-5
(Fashion-MNIST, 28 px) and on ResNet-18 at 32 px (Fashion-MNIST resized and tinted, ``fashion_mnist_rgb``).

    python benchmarks/browser_cost.py [--epochs 5] [--train-batches 4] [--val-size 1000] [--nets lenet5 resnet18]

In one process, per net: one fit through the real CLI (TensorBoard logger, inline drawing) with every callback at
its defaults and the config's settings, for ``--epochs`` epochs (5: every schedule comes round once: the callbacks
drawn every 5 epochs and the browser's actmax, ``actmax_every=5``, all draw at the last epoch). Validation is held
to ``--val-size`` images, so the fixed sets are all of them. Prints, per net, the callbacks' own drawing seconds
(all but ``units``), the browser's (its actmax part apart) and the ratio, the target being at most +25%, and the
size of the browser's files per layer and drawing. Run it from the repository root.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from callbacks.units import FOLDER  # noqa: E402
from train import cli_main  # noqa: E402

NETS = {
    "lenet5": ("configs/lenet5.yaml", "fashion_mnist"),
    "resnet18": ("configs/resnet18_cifar10.yaml", "fashion_mnist_rgb"),
}


def fit(name: str, args: argparse.Namespace, root: str):
    config, dataset = NETS[name]
    return cli_main(
        [
            "fit",
            "--config",
            str(ROOT / config),
            "--data.dataset",
            dataset,
            "--data.val_size",
            str(args.val_size),
            "--trainer.max_epochs",
            str(args.epochs),
            "--trainer.limit_train_batches",
            str(args.train_batches),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
            "--trainer.default_root_dir",
            root,
            "--drawing",
            "inline",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-batches", type=int, default=4, help="training steps per epoch")
    parser.add_argument("--val-size", type=int, default=1000, help="validation images (the fixed sets are all of them)")
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    args = parser.parse_args()
    sys.argv = sys.argv[:1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.nets:
            cli = fit(name, args, f"{tmp}/{name}")
            cbs = [cb for cb in cli.trainer.callbacks if hasattr(cb, "technique") and hasattr(cb, "seconds")]
            units = next(cb for cb in cbs if cb.technique == "units")
            others = sum(sum(cb.seconds) for cb in cbs if cb is not units)
            own, actmax = sum(units.seconds), sum(units.actmax_seconds)
            run = Path(cli.trainer.log_dir) / FOLDER
            sizes = {
                layer.name: max(sum(f.stat().st_size for f in epoch.iterdir()) for epoch in layer.iterdir())
                for layer in sorted(run.iterdir())
            }
            rows.append((name, others, own, actmax, len(units.seconds), len(units.actmax_seconds), units, sizes))
            print(f"{name}: callbacks {others:.1f} s, units {own:.1f} s (actmax {actmax:.1f} s)", flush=True)
    print(
        f"\n{args.epochs} epochs x {args.train_batches} steps, validation {args.val_size} images, inline drawing, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print("| net | callbacks' drawing (all but units) | units | of it actmax | units / callbacks |")
    print("|---|---|---|---|---|")
    for name, others, own, actmax, n, n_act, _, _ in rows:
        print(
            f"| {name} | {others:.1f} s | {own:.1f} s ({n} drawings) | {actmax:.1f} s ({n_act} drawings) | "
            f"**+{own / others:.0%}** |"
        )
    for name, *_, units, sizes in rows:
        layers = ", ".join(
            f"{layer} ({units.units_of[layer]} units) {size / 1e6:.2f} MB" for layer, size in sizes.items()
        )
        print(f"{name}: browsed layers, largest epoch folder: {layers}")


if __name__ == "__main__":
    main()
