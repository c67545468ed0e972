"""The sidecar: draw a run's pictures from the weight snapshots its training writes, here or on another machine.

    python train.py fit --config configs/lenet5.yaml --drawing watch      # training: snapshots, no drawing
    python -m convscope.watch lightning_logs/version_0                     # drawing (in the repo: callbacks.watch)

Training with ``Drawing("watch")`` writes ``<run>/drawing/spec.pt`` (the module, data and callbacks to rebuild)
and one ``epoch_NNNNN.pt`` per epoch that has pictures (a CPU copy of the weights). The watcher draws each, in
epoch order and none skipped, with the ``Drawer`` the background mode uses, so the pictures are the inline ones;
step = epoch. It writes its own event file into the run folder, so the run folder may be on shared storage and the
watcher on another machine (with the same code and data). It stops once it has drawn the last epoch and, after a
finished fit, the evolution pictures.

Resumable, each epoch exactly once: after each epoch it records in ``<run>/drawing/watch_state.pt`` the epochs
drawn, the callbacks' states and how long its event file was. A watcher killed mid-epoch is restarted with the
same command; it cuts its old event file back to the recorded length (dropping the half-drawn epoch) and goes on.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .drawing import SNAPSHOT_DIR, Drawer, cut_back, write_atomic

__all__ = ["watch", "main"]

STATE = "watch_state.pt"


def _snapshots(folder: Path) -> dict[int, Path]:
    out = {}
    for path in folder.glob("epoch_*.pt"):
        m = re.fullmatch(r"epoch_(\d+)\.pt", path.name)
        if m:
            out[int(m.group(1))] = path
    return dict(sorted(out.items()))


def _load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=False)  # written by the run's own training process


def watch(
    run_dir: str | Path, poll: float = 5.0, timeout: float | None = None, threads: int | None = None, log=print
) -> list[int]:
    """Draw every snapshot of the run in ``run_dir`` not drawn yet, in order, until the run's last; returns the
    epochs drawn by this call. ``timeout``: give up (``TimeoutError``) after this many seconds without anything new."""
    if threads is not None:
        torch.set_num_threads(threads)
    run = Path(run_dir)
    folder = run / SNAPSHOT_DIR
    state_path = folder / STATE
    waited = time.monotonic()

    def idle() -> None:
        if timeout is not None and time.monotonic() - waited > timeout:
            raise TimeoutError(f"convscope.watch: nothing new in {folder} for {timeout:.0f} s")
        time.sleep(poll)

    if not (folder / "spec.pt").is_file():
        if not run.is_dir() and timeout is None:
            raise FileNotFoundError(f"convscope.watch: no run folder {run}")
        log(
            f"convscope.watch: waiting for {folder / 'spec.pt'}: the run must train with `--drawing watch` "
            "(Drawing('watch')); it writes it at fit start"
        )
    while not (folder / "spec.pt").is_file():  # the training may not have started yet
        idle()
    state = (
        _load(state_path) if state_path.is_file() else {"drawn": [], "states": None, "event": None, "finished": False}
    )
    if state["finished"]:
        log(f"convscope.watch: {run} is drawn to its end (epochs {state['drawn']})")
        return []
    cut_back(state["event"])  # drop what a killed watcher wrote after its last record
    drawer = Drawer(_load(folder / "spec.pt"), run)
    if state["states"] is not None:
        drawer.load_states(state["states"])
    drawn_now: list[int] = []

    def record(**changes) -> None:
        states, event = drawer.report()
        state.update(changes, states=states, event=event)
        write_atomic(state, state_path)

    try:
        while True:
            end = _load(folder / "end.pt") if (folder / "end.pt").is_file() else None  # before listing snapshots
            new = [(e, p) for e, p in _snapshots(folder).items() if e not in state["drawn"]]
            for epoch, path in new:
                snap = _load(path)
                drawer.draw(snap["epoch"], snap["due"], snap["weights"])
                record(drawn=[*state["drawn"], epoch])
                drawn_now.append(epoch)
                log(f"convscope.watch: drew epoch {epoch}")
                waited = time.monotonic()
            if new:
                continue
            if end is not None:
                if not end["interrupted"]:
                    drawer.finish(end["last_step"])
                    record(finished=True)
                    log(f"convscope.watch: the fit ended; drew its evolution pictures at step {end['last_step']}")
                else:
                    log(
                        "convscope.watch: the fit was interrupted; every snapshot it wrote is drawn. Run the watcher "
                        "again when training resumes"
                    )
                return drawn_now
            idle()
    finally:
        drawer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m convscope.watch", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="the run folder (lightning_logs/version_N) of a fit with drawing: watch")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between looks for new snapshots")
    parser.add_argument("--timeout", type=float, default=None, help="give up after this many seconds with nothing new")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for drawing")
    args = parser.parse_args(argv)
    try:
        watch(args.run_dir, args.poll, args.timeout, args.threads)
    except (FileNotFoundError, TimeoutError) as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
