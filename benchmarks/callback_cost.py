"""What the visualization and analysis callbacks cost per epoch, at default settings, on LeNet-5 / Fashion-MNIST.

    python benchmarks/callback_cost.py [--config configs/lenet5.yaml] [--epochs 3] [--accelerator cpu|gpu] [CLI ...]

The callbacks' own time is each technique's ``render`` (``Technique.seconds``); the validation loop's capture for
the shared fixed-set pass is in the wall clock only.

In one process: the same fit (same seed, data, batch 128) without and with every callback, each through
the real CLI with a TensorBoard logger. Prints seconds per epoch, the overhead ratio, each callback's own time per
rendered epoch, and the event-file size per epoch. Further arguments go to the fit with callbacks, to price another
schedule, e.g. ``--feature_maps.every_n_epochs 2 --occlusion.enabled false``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from callbacks import TECHNIQUES, Convscope  # noqa: E402
from train import cli_main  # noqa: E402


def fit(config: str, epochs: int, accelerator: str, root: str, visualize: bool, extra: list[str] = (), limit=None):
    args = [
        "fit",
        "--config",
        config,
        "--data.dataset",
        "fashion_mnist",
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.accelerator",
        accelerator,
        "--trainer.default_root_dir",
        root,
    ]
    if limit is not None:  # (the tests' tiny size)
        args += ["--trainer.limit_train_batches", str(limit), "--trainer.limit_val_batches", str(limit)]
    if not visualize:
        args += [a for key in TECHNIQUES for a in (f"--{key}.enabled", "false")]
    else:
        args += list(extra)
    t0 = time.perf_counter()
    cli = cli_main(args)
    return cli, (time.perf_counter() - t0) / epochs


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "lenet5.yaml"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--limit", type=int, default=None, help="batches per epoch (a tiny run, for the tests)")
    args, extra = parser.parse_known_args(argv)
    sys.argv = sys.argv[:1]
    with tempfile.TemporaryDirectory() as tmp:
        fit(args.config, 1, args.accelerator, f"{tmp}/warm", False, limit=args.limit)  # warm-up: data, kernels
        _, plain = fit(args.config, args.epochs, args.accelerator, f"{tmp}/plain", False, limit=args.limit)
        cli, vis = fit(args.config, args.epochs, args.accelerator, f"{tmp}/vis", True, extra, args.limit)
        events = sum(p.stat().st_size for p in Path(cli.trainer.log_dir).glob("events.out.tfevents.*"))
        owners = [cb for cb in cli.trainer.callbacks if isinstance(cb, Convscope)]
        cbs = [t for owner in owners for t in owner.enabled()]
    issue3 = {"filters", "feature_maps", "fc_activations", "actmax", "deconv", "selectivity"}
    print(
        f"\nconfig {Path(args.config).name}, {args.epochs} epochs, {args.accelerator}"
        + (f", with callbacks: {' '.join(extra)}" if extra else "")
    )
    print("| | seconds per epoch |\n|---|---|")
    given = "with every callback, as given" if extra else "with every callback at its defaults"
    print(f"| without callbacks | {plain:.2f} s |\n| {given} | {vis:.2f} s |")
    print(f"| wall-clock overhead | {vis - plain:+.2f} s ({(vis / plain - 1) * 100:+.1f}%) |")
    groups = {
        "the six visualizations": [cb for cb in cbs if cb.technique in issue3],
        "the neuron analyses": [cb for cb in cbs if cb.technique not in issue3],
    }
    for name, group in groups.items():
        own = sum(sum(cb.seconds) for cb in group) / args.epochs
        print(f"| {name}: own time per epoch, averaged | {own:.3f} s ({own / plain * 100:.1f}% of a plain epoch) |")
    print(f"| event file per epoch | {events / args.epochs / 1e6:.2f} MB |")
    print("\n| callback | every n epochs | drawings | seconds per drawing | seconds per epoch, averaged |")
    print("|---|---|---|---|---|")
    rows = []
    for cb in cbs:
        n = len(cb.seconds)
        rows.append({"technique": cb.technique, "drawings": n, "seconds": sum(cb.seconds)})
        print(
            f"| {cb.technique} | {cb.every_n_epochs} | {n} | {sum(cb.seconds) / max(1, n):.3f} | "
            f"{sum(cb.seconds) / args.epochs:.3f} |"
        )
    return rows


if __name__ == "__main__":
    main()
