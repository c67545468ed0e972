"""What drawing costs the training run: no pictures vs inline drawing vs a background drawing process.

    .venv/bin/python -m benchmarks.background [--epochs 5] [--repeat 1]      # from the repository root

The user's situation whenever a core is spare: training is limited to one thread (``torch.set_num_threads(1)``),
so the background process (one thread) has the other core. Each way runs ``train.py fit`` (LeNet-5, Fashion-MNIST,
every callback at its defaults, checkpoints on) in this one process, one after another, ``--repeat`` times in
turn:

- ``none``: every visualization off (``--<key>.enabled false``), the floor;
- ``inline``: every callback draws in the training process (``--drawing inline``);
- ``background``: a spawned process draws (``--drawing background``).

Prints each fit's wall clock (from the CLI's start to ``fit`` returning, which in background mode waits until every
picture is written), the ratio to ``none``, and for the drawing runs whether the event files hold every picture
of every epoch (each image tag at each of its epochs, once).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from callbacks import VISUALIZATIONS  # noqa: E402
from callbacks.drawing import Drawing  # noqa: E402
from train import cli_main  # noqa: E402


def fit(root: Path, way: str, epochs: int) -> tuple[float, Path]:
    args = [
        "fit",
        "--config",
        str(ROOT / "configs" / "lenet5.yaml"),
        "--data.dataset",
        "fashion_mnist",
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(root),
    ]
    if way == "none":
        args += [a for key in VISUALIZATIONS for a in (f"--{key}.enabled", "false")]
    else:
        args += ["--drawing", way]
    t0 = time.perf_counter()
    cli = cli_main(args)
    seconds = time.perf_counter() - t0
    for cb in cli.trainer.callbacks:
        if isinstance(cb, Drawing) and cb.resolved == "background":
            waited = ", ".join(f"{k} {v:.2f}" for k, v in cb.waited.items())
            drew = ", ".join(f"{s:.1f}" for s in cb.seconds)
            print(f"    training waited (s): {waited}; the drawing process took (s per job): {drew}")
    return seconds, Path(cli.trainer.logger.log_dir)


def pictures(run: Path) -> tuple[int, int, int]:
    """(image tags, images, duplicates) in the run folder's event files."""
    ea = EventAccumulator(str(run), size_guidance={"images": 0})
    ea.Reload()
    tags = ea.Tags()["images"]
    steps = [(t, e.step) for t in tags for e in ea.Images(t)]
    return len(tags), len(steps), len(steps) - len(set(steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--ways", nargs="+", default=["none", "background", "inline"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    times: dict[str, list[float]] = {w: [] for w in args.ways}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for way in args.ways:
                seconds, run = fit(Path(tmp) / f"{way}{r}", way, args.epochs)
                times[way].append(seconds)
                extra = "" if way == "none" else "  image tags {}, images {}, duplicates {}".format(*pictures(run))
                print(f"[{r}] {way:10s} {seconds:7.1f} s{extra}", flush=True)
    base = min(times["none"]) if "none" in times else None
    print(f"\nLeNet-5, Fashion-MNIST, {args.epochs} epochs, training on 1 thread (best of {args.repeat}):")
    for way, ts in times.items():
        ratio = f"  {min(ts) / base:.3f}x none" if base else ""
        print(f"  {way:10s} {min(ts):7.1f} s{ratio}")


if __name__ == "__main__":
    main()
