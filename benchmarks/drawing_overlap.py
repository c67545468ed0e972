"""Would drawing off the training thread hide its cost? Training alone, with a drawing thread, with a drawing process.

    python -m benchmarks.drawing_overlap [--batches 300]          # from the repository root

Trains LeNet-5 on Fashion-MNIST for ``--batches`` steps (plain Lightning Trainer, no callbacks) four ways, while a
stand-in for the callbacks' drawing (a ``LiveFigure`` chart redrawn and PNG-encoded in a loop) runs: not at all,
in a thread of the training process, in a separate process, and in a separate process at the lowest CPU priority
(``nice 19``: it may only use what training leaves idle). Prints the training time, how many drawings were
made meanwhile, and what the overlap saved: ``drawing time it did - training time it added``, where the drawing
time is the count times the seconds one drawing takes alone. Positive means overlapping pays.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import threading
import time

import lightning.pytorch as pl
import numpy as np

from benchmarks.epoch_time import PlainModule
from callbacks.figures import to_png
from lit_modules.datamodule import MNISTDataModule


def _drawer(stop, count, niceness: int = 0) -> None:
    """Redraw and encode one chart until ``stop`` is set, counting drawings in ``count`` (at ``niceness``)."""
    from callbacks.live_figure import LiveFigure

    if niceness:
        os.nice(niceness)
    live = LiveFigure(400, 420)
    with live.rc():
        ax = live.fig.add_subplot()
        im = live.animate(ax.imshow(np.random.rand(12, 10)))
        ax.set_xlabel("unit")
        live.title("a chart")
    rng = np.random.default_rng(0)
    while not stop.is_set():
        im.set_data(rng.random((12, 10)))
        to_png(live.image(1))
        with count.get_lock():
            count.value += 1


def train(batches: int) -> float:
    pl.seed_everything(0, verbose=False)
    dm = MNISTDataModule("fashion_mnist", download=False)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=batches,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    t0 = time.perf_counter()
    trainer.fit(PlainModule(), dm)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=300)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    # one drawing alone, for the exchange rate
    stop, count = ctx.Event(), ctx.Value("i", 0)
    timer = threading.Timer(5.0, stop.set)
    timer.start()
    t0 = time.perf_counter()
    _drawer(stop, count)
    per_drawing = (time.perf_counter() - t0) / count.value
    train(20)  # warm-up
    alone = train(args.batches)
    print(f"one drawing alone: {per_drawing * 1000:.0f} ms; training {args.batches} steps alone: {alone:.1f} s")
    print("| drawing runs | training | drawings meanwhile | their time alone | training time added | saved |")
    print("|---|---|---|---|---|---|")
    for how in ("thread", "process", "process at nice 19"):
        stop, count = ctx.Event(), ctx.Value("i", 0)
        worker = (
            threading.Thread(target=_drawer, args=(stop, count))
            if how == "thread"
            else ctx.Process(target=_drawer, args=(stop, count, 19 if "nice" in how else 0))
        )
        worker.start()
        while count.value < 5:  # let it start drawing (a process imports first)
            if not worker.is_alive():
                raise SystemExit(f"the drawing {how} ended before it drew")
            time.sleep(0.1)
        start = count.value
        took = train(args.batches)
        done = count.value - start
        stop.set()
        worker.join()
        work, added = done * per_drawing, took - alone
        print(f"| in a {how} | {took:.1f} s | {done} | {work:.1f} s | {added:.1f} s | {work - added:+.1f} s |")


if __name__ == "__main__":
    main()
