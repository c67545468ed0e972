"""What the six visualization callbacks cost per epoch, at default settings, on LeNet-5 / Fashion-MNIST.

    python benchmarks/callback_cost.py [--config configs/lenet5.yaml] [--epochs 3] [--accelerator cpu|gpu]

In one process: the same fit (same seed, data, batch 128) without and with all six callbacks, each through
the real CLI with a TensorBoard logger. Prints seconds per epoch, the overhead ratio, each callback's own time per
rendered epoch, and the event-file size per epoch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from callbacks import VISUALIZATIONS  # noqa: E402
from train import cli_main  # noqa: E402


def fit(config: str, epochs: int, accelerator: str, root: str, visualize: bool):
    args = ["fit", "--config", config, "--data.dataset", "fashion_mnist", "--trainer.max_epochs", str(epochs),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.accelerator", accelerator, "--trainer.default_root_dir", root]
    if not visualize:
        args += [a for key in VISUALIZATIONS for a in (f"--{key}.enabled", "false")]
    t0 = time.perf_counter()
    cli = cli_main(args)
    return cli, (time.perf_counter() - t0) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "lenet5.yaml"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--accelerator", default="cpu")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]
    with tempfile.TemporaryDirectory() as tmp:
        fit(args.config, 1, args.accelerator, f"{tmp}/warm", False)  # warm-up: data loading, kernels
        _, plain = fit(args.config, args.epochs, args.accelerator, f"{tmp}/plain", False)
        cli, vis = fit(args.config, args.epochs, args.accelerator, f"{tmp}/vis", True)
        events = sum(p.stat().st_size for p in Path(cli.trainer.log_dir).glob("events.out.tfevents.*"))
        rows = [(type(cb).__name__, sum(cb.seconds) / max(1, len(cb.seconds)))
                for cb in cli.trainer.callbacks if hasattr(cb, "technique")]
    print(f"\nconfig {Path(args.config).name}, {args.epochs} epochs, {args.accelerator}")
    print("| | seconds per epoch |\n|---|---|")
    print(f"| without visualizations | {plain:.2f} s |\n| with all six | {vis:.2f} s |")
    print(f"| overhead | {vis - plain:+.2f} s ({(vis / plain - 1) * 100:+.1f}%) |")
    for name, s in rows:
        print(f"| {name} (own time) | {s:.3f} s |")
    print(f"| event file per epoch | {events / args.epochs / 1e6:.2f} MB |")


if __name__ == "__main__":
    main()
