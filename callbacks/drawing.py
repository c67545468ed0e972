"""Pictures off the training path: a drawing process beside training, or a sidecar that follows the run.

    Trainer(callbacks=[*visualizations, Drawing("background")])   # a spawned process draws beside training
    Trainer(callbacks=[*visualizations, Drawing("watch")])        # weight snapshots for the sidecar:
    python -m convscope.watch lightning_logs/version_0             # draws them, here or on another machine

Modes (``train.py``: ``drawing: background``):

- ``inline``: every callback draws in the training process at validation end, as it always did.
- ``background``: at each validation end the training process pays only for a CPU copy of the weights. A spawned
  process (``threads`` threads) loads it into its own copy of the module and draws every picture there: a
  ``Drawer`` runs copies of the visualization callbacks over the same validation data (``Trainer.validate``) and
  writes an event file of its own into the run folder (TensorBoard merges a folder's event files). The drawer
  draws on the trainer's device: on a GPU trainer, its own CUDA context on the trainer's GPU, its memory capped at
  ``memory_fraction`` of the GPU's; on a CPU trainer, the CPU. A CPU drawer beside a GPU trainer only when asked
  (``device="cpu"``). At most ``queue`` snapshots wait; when the queue is full, training waits, so nothing is
  dropped. Checkpoints do not wait for the drawer: they hold the callbacks' states after its last drawn epoch and
  the epochs submitted since (with their weights); a fit resumed from one draws those first. Fit end, an
  exception, Ctrl-C and SIGTERM wait until every submitted epoch is drawn. Rank zero only under DDP.
- ``watch``: the training process writes the snapshots to ``<run>/drawing/`` and draws nothing; ``convscope.watch``
  draws them (see ``watch.py``).
- ``auto`` (the default): ``background`` only where the drawer gets resources of its own, so that it is never slower
  than ``inline`` for the trainer (``auto_mode``): a GPU (any accelerator) trainer with 4 or more CPU cores (a core
  for the drawer's Python, pictures and data beside the trainer's process and loader workers; its GPU work fills
  the gaps a launch-bound trainer leaves), or a CPU trainer with 8 or more cores (the drawer's one thread takes at
  most an eighth of the cores); else ``inline``. Under ``auto`` a run a drawing process cannot load (something
  that cannot be pickled, such as a ``torch.compile``d module or a local class; classes of the script run as
  ``__main__``) draws inline; only an explicit ``background`` is an error. Fit start prints the choice in one line:
  ``drawing: background on cuda:0 (auto: ...)``.

The drawing process runs the same callbacks, in the same order, on the same weights and validation data as inline
drawing would, so on the same device its pictures are the inline ones, byte for byte. The pictures drawn at fit
start (``samples/train``, the graph) stay in the training process. ``validate`` and ``test`` draw inline.
"""

from __future__ import annotations

import copy
import io
import os
import queue as queues
import re
import signal
import sys
import time
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.multiprocessing as mp
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from .classes import ShownClasses
from .data import val_loader
from .scope import run_dir_of
from .technique import check_arg

__all__ = [
    "Background",
    "Drawing",
    "Drawer",
    "PictureLogger",
    "MODES",
    "SNAPSHOT_DIR",
    "auto_mode",
    "resolve_mode",
    "write_atomic",
    "cut_back",
]

MODES = ("auto", "inline", "background", "watch")
SNAPSHOT_DIR = "drawing"  # <run>/drawing/: spec.pt, epoch_00000.pt, ..., end.pt (watch mode)
POLL = 0.5  # s between checks that the other process is still alive
ACCELERATOR_CORES = 4  # auto: background beside an accelerator trainer from this many CPU cores
CPU_CORES = 8  # auto: background beside a CPU trainer from this many cores


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def auto_mode(device: str, cores: int, unloadable: str | None = None) -> tuple[str, str]:
    """The rule ``auto`` follows, as ``(mode, why)``: ``background`` only where the drawer gets resources of its own,
    so that it never costs the trainer more than drawing inline would; else ``inline``.

    Args:
        device: the trainer's device type (``"cpu"``, ``"cuda"``, ``"mps"``, ...).
        cores: the CPU cores this process may run on.
        unloadable: why a drawing process could not load the run (``None``: it can).
    """
    if unloadable:
        return "inline", f"a drawing process cannot load this run: {unloadable}"
    if device == "cpu":
        if cores >= CPU_CORES:
            return "background", (
                f"a CPU trainer with {cores} cores, {CPU_CORES} or more: the drawer's thread takes at most "
                f"1/{CPU_CORES} of them"
            )
        return "inline", (
            f"a CPU trainer with {cores} cores, fewer than {CPU_CORES}: a drawing process would take cores "
            "training uses"
        )
    if cores >= ACCELERATOR_CORES:
        return "background", (
            f"a {device} trainer with {cores} CPU cores, {ACCELERATOR_CORES} or more: the drawer has cores of its "
            "own and draws on the trainer's device"
        )
    return "inline", (
        f"a {device} trainer with {cores} CPU cores, fewer than {ACCELERATOR_CORES}: no core is spare for a drawer"
    )


def resolve_mode(mode: str, trainer: pl.Trainer | None = None) -> str:
    """``mode``, with ``auto`` decided by ``auto_mode`` for ``trainer``'s device (none: the CPU) and this machine."""
    if mode != "auto":
        return mode
    return auto_mode(trainer_device(trainer).type if trainer is not None else "cpu", cpu_cores())[0]


def trainer_device(trainer: pl.Trainer) -> torch.device:
    """The device the trainer (its rank zero, under DDP) trains on."""
    return trainer.strategy.root_device


def main_names(spec: bytes) -> list[str]:
    """The names a pickled spec takes from the script run as ``__main__`` (a spawned process must run that script
    again to load them)."""
    return sorted({m.decode() for m in re.findall(rb"c__main__\n(\w+)\n", spec)}) or (
        ["(something)"] if b"__main__" in spec else []
    )


def fit_start_line(mode: str, device: str | None, why: str) -> str:
    """The line fit start prints: where the pictures are drawn, and why."""
    where = f" on {device}" if mode == "background" else ""
    return f"drawing: {mode}{where} ({why})"


def write_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` (bytes: as they are) through a temporary file, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(obj) if isinstance(obj, bytes) else torch.save(obj, tmp)
    os.replace(tmp, path)


def cut_back(event: tuple[str, int] | None) -> None:
    """Cut the event file ``(path, length)`` back to that length: what a killed drawing process wrote after its
    last finished epoch goes (those epochs are drawn again). Nothing to do where the file is gone or shorter."""
    if event is not None and Path(event[0]).is_file():
        with open(event[0], "r+b") as f:
            f.truncate(min(event[1], Path(event[0]).stat().st_size))


DRAWER_SUFFIX = ".convscope-drawer"  # ends a drawing process's event file names: told apart from training's


class PictureLogger(TensorBoardLogger):
    """The drawing process's logger: pictures go into the run folder, in an event file of this process's own (its
    name ends with ``DRAWER_SUFFIX``); metrics, hyperparameters and ``hparams.yaml`` stay the training process's."""

    def __init__(self, run_dir: str | Path) -> None:
        super().__init__(
            save_dir=str(run_dir), name="", version="", default_hp_metric=False, filename_suffix=DRAWER_SUFFIX
        )

    @override
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    @override
    def log_hyperparams(self, params: Any, metrics: Any = None, step: int | None = None) -> None:
        pass

    @override
    def save(self) -> None:
        self.experiment.flush()

    @override
    def finalize(self, status: str) -> None:
        self.experiment.flush()

    def event_file(self) -> Path:
        """The event file this process writes."""
        return Path(self.experiment._get_file_writer().event_writer._file_name)


def make_spec(owner: Any, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """What a ``Drawer`` rebuilds the run's drawing from: the module (its weights come with each snapshot), the
    validation data, the owner with its techniques, the ``ShownClasses`` callbacks, and the Trainer settings that
    decide what validation sees."""
    dm = trainer.datamodule
    return {
        "module": pl_module,
        "datamodule": dm,
        "val_dataloaders": None if dm is not None else val_loader(trainer),  # (loaded here if not yet)
        "owner": owner,
        "callbacks": [cb for cb in trainer.callbacks if isinstance(cb, ShownClasses)],
        "limit_val_batches": trainer.limit_val_batches,
        "inference_mode": trainer.validate_loop.inference_mode,
        "last_epoch": trainer.max_epochs - 1 if trainer.max_epochs is not None and trainer.max_epochs > 0 else None,
    }


def spec_bytes(owner: Any, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bytes:
    buffer = io.BytesIO()
    try:
        torch.save(make_spec(owner, trainer, pl_module), buffer)
    except Exception as e:
        raise RuntimeError(
            "Drawing: another process draws from a copy of the LightningModule, its data and the techniques, and one "
            f"of them cannot be pickled ({type(e).__name__}: {e}); use drawing mode 'inline'"
        ) from e
    return buffer.getvalue()


@contextmanager
def _main_hidden(hide: bool):
    """Start a spawned process without running the script that trains in it again: a spawned child imports the
    parent's main module, and a script without an ``if __name__ == "__main__":`` guard would train again there.
    Only where nothing the child unpickles is defined in that script (``hide``)."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    if hide and main is not None:
        main.__dict__.pop("__file__", None)
        main.__spec__ = None
    try:
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)


class Drawer:
    """Draws a run's pictures in this process, from its weights at chosen epochs: a copy of the run's owner
    (``Convscope``) in a ``Trainer`` of its own, one ``validate`` per epoch on a copy of the module (the owner reads
    the validation loop's passes as in training), logged into the run folder by a ``PictureLogger``, on ``device``.
    Used by the background process and by ``convscope.watch``."""

    def __init__(self, spec: dict[str, Any], run_dir: str | Path, device: str = "cpu") -> None:
        self.module: pl.LightningModule = spec["module"]
        self.datamodule = spec["datamodule"]
        self.loaders = spec["val_dataloaders"]
        self.owner = spec["owner"]
        self.owner.fit_last = spec["last_epoch"]  # the fit's last epoch, which some schedules draw
        self.logger = PictureLogger(run_dir)
        where = torch.device(device)
        self.trainer = pl.Trainer(
            accelerator=where.type,
            devices=[where.index or 0] if where.type == "cuda" else 1,
            logger=self.logger,
            callbacks=[*spec["callbacks"], self.owner],
            default_root_dir=str(run_dir),
            limit_val_batches=spec["limit_val_batches"],
            inference_mode=spec["inference_mode"],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )

    def draw(self, epoch: int, due: list[str], weights: dict[str, torch.Tensor]) -> None:
        """Draw the pictures of ``epoch`` (0-based, the image step) of the techniques ``due`` (the owner's keys),
        from ``weights`` (the module's state dict)."""
        self.module.load_state_dict(weights)
        self.owner.job = (epoch, list(due))
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", ".*does not have many workers.*")
                self.trainer.validate(self.module, dataloaders=self.loaders, datamodule=self.datamodule, verbose=False)
        finally:
            self.owner.job = None

    def finish(self, step: int) -> None:
        """What inline drawing does at fit end: the evolution pictures, logged at ``step`` (the last epoch)."""
        if self.owner.scope is None:  # nothing drawn by this process yet (a resumed fit): set up for the owner
            self.owner.job = (step, [])
            self.draw(step, [], self.module.state_dict())
        self.owner.finish(self.trainer, self.module, step)

    def states(self) -> dict[str, Any]:
        state = self.owner.state_dict()
        state.pop("drawing", None)
        return state

    def report(self) -> tuple[dict[str, Any], tuple[str, int]]:
        """After a drawing (its pictures are flushed here): the owner's state, and this process's event file and
        its length (everything in it up to there is finished epochs; ``cut_back`` takes it)."""
        self.logger.experiment.flush()
        event = self.logger.event_file()
        return self.states(), (str(event.resolve()), event.stat().st_size)

    def load_states(self, states: dict[str, Any]) -> None:
        self.owner.load_state_dict(states)

    def close(self) -> None:
        self.logger.experiment.flush()
        self.logger.experiment.close()


def _serve(spec: bytes, run_dir: str, threads: int, device: str, memory_fraction: float, jobs, results) -> None:
    """The background process: draw each job of ``jobs`` in order, on ``device``, and report to ``results``. On a
    GPU it takes at most ``memory_fraction`` of the GPU's memory (the trainer's share stays the trainer's). Ctrl-C and
    SIGTERM reach the training process, which then waits for the epochs it submitted; this process ends on ``stop``
    or when the training process is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    try:
        where = torch.device(device)
        if where.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(memory_fraction, where)
        elif where.type == "mps":
            torch.mps.set_per_process_memory_fraction(memory_fraction)
        drawer = Drawer(torch.load(io.BytesIO(spec), map_location="cpu", weights_only=False), run_dir, device)
    except BaseException:
        results.put(("error", None, traceback.format_exc(), 0.0))
        return
    results.put(("ready", None, None, 0.0))
    parent = mp.parent_process()
    try:
        while True:
            try:
                job = jobs.get(timeout=POLL)
            except queues.Empty:
                if parent is not None and not parent.is_alive():
                    break
                continue
            if job[0] == "stop":
                break
            try:
                t0 = time.perf_counter()
                if job[0] == "draw":
                    torch.set_num_threads(job[4])
                    drawer.draw(job[1], job[2], job[3])
                    results.put(("drawn", job[1], drawer.report(), time.perf_counter() - t0))
                elif job[0] == "finish":
                    torch.set_num_threads(max(threads, cpu_cores()))  # training is over: every core is free
                    drawer.finish(job[1])
                    results.put(("finished", job[1], drawer.report(), time.perf_counter() - t0))
            except BaseException:
                results.put(("error", job[1], traceback.format_exc(), 0.0))
    finally:
        drawer.close()


class Background:
    """The drawing mode of one owner (``Convscope``): where its pictures are drawn (see the module's docstring), and
    the machinery of the background process and of the watch sidecar's snapshots. Plain object: the owner calls it
    from its hooks.

    Args:
        mode: one of ``MODES``.
        threads: the background process's threads (default: 1 when training on the CPU, else half the cores).
        queue: snapshots that may wait for the background process before training waits for it.
        device: where the background process draws (``"cpu"``, ``"cuda:1"``, ...); default: the trainer's device.
        memory_fraction: the most of a GPU's memory the background process may take there (0 to 1).
    """

    def __init__(
        self,
        mode: str = "auto",
        threads: int | None = None,
        queue: int = 2,
        device: str | None = None,
        memory_fraction: float = 0.25,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"Drawing: unknown mode {mode!r}; valid: {', '.join(MODES)}")
        check_arg(
            "Drawing",
            "threads",
            threads,
            threads is None or (isinstance(threads, int) and threads >= 1),
            "an integer >= 1",
        )
        check_arg("Drawing", "queue", queue, isinstance(queue, int) and queue >= 1, "an integer >= 1")
        if device is not None:
            try:
                torch.device(device)
            except (RuntimeError, TypeError) as e:
                raise ValueError(
                    f"Drawing: device {device!r} is not a device; valid: 'cpu', 'cuda', 'cuda:N', 'mps', or none "
                    "(the trainer's)"
                ) from e
        check_arg("Drawing", "memory_fraction", memory_fraction, 0 < memory_fraction <= 1, "in (0, 1]")
        self.mode, self.threads, self.queue = mode, threads, queue
        self.device, self.memory_fraction = device, memory_fraction
        self.resolved = "inline"  # the mode of the fit under way
        self.why = ""  # why (the line fit start prints)
        self.drawer_device: str | None = None  # where the background process draws
        self.drawn: list[int] = []  # epochs the other process has drawn (background), in order
        self.pending: list[tuple[int, list[str]]] = []  # (epoch, due techniques' keys) submitted and not yet drawn
        self.weights: dict[int, dict[str, torch.Tensor]] = {}  # the pending epochs' weights (a checkpoint keeps them)
        self._process = self._jobs = self._results = None
        self.event: tuple[str, int] | None = (
            None  # the drawing process's event file and its length after its last epoch
        )
        self._folder: Path | None = None
        self.seconds: list[float] = []  # the drawing process's time per job (an epoch's drawing; the fit's end)
        self.waited = {"snapshot": 0.0, "queue": 0.0, "checkpoint": 0.0, "end": 0.0}  # s training spent on drawing

    def detached(self) -> Background:
        """A copy to pickle with the owner (for a drawing process): its settings, no process or queues."""
        copied = copy.copy(self)
        copied._process = copied._jobs = copied._results = None
        copied.resolved, copied.pending, copied.weights = "inline", [], {}
        return copied

    def elsewhere(self, trainer: pl.Trainer) -> bool:
        """Whether this fit's validation pictures are drawn by another process (background or watch)."""
        return self.resolved != "inline" and trainer.state.fn == "fit"

    # ------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """What a resumed fit needs to lose no picture and draw none twice: the last epoch the drawer finished (the
        techniques' states in the checkpoint are those it reached then), how long its event file was then, and the
        epochs submitted since, with their weights (none for the checkpoint's own epoch: its weights are the
        checkpoint's)."""
        return {
            "pending": list(self.pending),
            "weights": dict(self.weights),
            "drawn": self.drawn[-1] if self.drawn else None,
            "event": self.event,
        }

    def load_state_dict(self, state: dict[str, Any], keys: list[str] | None = None) -> None:
        """``keys``: the owner's technique keys, for a 0.1.0 checkpoint whose pending epochs name positions."""
        self.pending = [
            (int(e), [keys[k] if isinstance(k, int) and keys else k for k in d]) for e, d in state.get("pending", [])
        ]
        self.weights = dict(state.get("weights", {}))
        self.drawn = [] if state.get("drawn") is None else [int(state["drawn"])]
        self.event = state.get("event")

    # ------------------------------------------------------------------------------------------------- hooks
    def setup(self, trainer: pl.Trainer, stage: str) -> None:
        self.drawer_device = self.device or str(trainer_device(trainer))
        if stage != "fit":
            self.resolved, self.why = "inline", stage
        elif self.mode == "auto":
            self.resolved, self.why = auto_mode(trainer_device(trainer).type, cpu_cores())
            self.why = f"auto: {self.why}"
        else:
            self.resolved, self.why = self.mode, "asked for"
        if self.resolved != "inline" and run_dir_of(trainer) is None:
            rank_zero_warn(f"Drawing: mode {self.mode!r} needs a logger with a run folder; drawing inline")
            self.resolved = "inline"

    def start(self, owner: Any, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """At fit start: hand the run to the sidecar or start the drawing process; print where pictures go."""
        if not trainer.is_global_zero:
            return
        spec = None
        if self.resolved != "inline":
            try:
                spec = spec_bytes(owner, trainer, pl_module)
                names = main_names(spec) if self.mode == "auto" and self.resolved == "background" else []
                if names:
                    raise RuntimeError(
                        f"it uses {', '.join(names)} of the script run as __main__, which a drawing process would "
                        "have to run again"
                    )
            except RuntimeError as e:
                if self.mode != "auto":
                    raise
                cause = e.__cause__ or e
                self._inline_after_all(trainer, f"{type(cause).__name__}: {cause}" if e.__cause__ is not None else e)
        if spec is not None:
            self._start(trainer, pl_module, spec)
        rank_zero_info(fit_start_line(self.resolved, self.drawer_device, self.why))

    def _inline_after_all(self, trainer: pl.Trainer, reason: Any) -> None:
        """``auto`` chose another process, which cannot load this run: draw inline, saying why."""
        _, why = auto_mode(trainer_device(trainer).type, cpu_cores(), str(reason))
        self.resolved, self.why = "inline", f"auto: {why}"

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, spec: bytes) -> None:
        """Hand ``spec`` to the sidecar (watch) or start the drawing process (background)."""
        run_dir = run_dir_of(trainer)
        if self.resolved == "watch":
            self._folder = Path(run_dir) / SNAPSHOT_DIR
            self._folder.mkdir(parents=True, exist_ok=True)
            (self._folder / "end.pt").unlink(missing_ok=True)  # a resumed fit goes on
            write_atomic(spec, self._folder / "spec.pt")
            return
        if self.event is not None and Path(self.event[0]).parent.resolve() == Path(run_dir).resolve():
            cut_back(self.event)  # resumed in the same run: a half-drawn epoch, epochs after the checkpoint
        elif self.event is None:  # no drawer of this run finished an epoch: what one wrote is drawn again
            for path in Path(run_dir).glob(f"*tfevents*{DRAWER_SUFFIX}"):
                path.unlink()
        threads = self.threads or (1 if trainer_device(trainer).type == "cpu" else max(1, cpu_cores() // 2))
        self._threads, self._trainer_last = threads, False
        ctx = mp.get_context("spawn")
        self._jobs, self._results = ctx.Queue(maxsize=self.queue), ctx.Queue()
        process = ctx.Process(
            target=_serve,
            args=(spec, run_dir, threads, self.drawer_device, self.memory_fraction, self._jobs, self._results),
            name="convscope-drawing",
        )
        with _main_hidden(b"__main__" not in spec):
            process.start()
        self._process = process
        if self.mode == "auto":  # the process must load the run before it is trusted with the pictures
            failed = self._ready()
            if failed:
                self._stop()
                self._inline_after_all(trainer, failed.strip().splitlines()[-1])
                return
        self._owner = None
        if self.pending:  # resumed from a checkpoint with epochs not drawn yet: drawn first, from their weights
            pending, self.pending = self.pending, []
            weights, self.weights = self.weights, {}
            for epoch, due in pending:
                self._submit(epoch, due, pl_module, weights.get(epoch))

    def submit(self, owner: Any, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """At a validation end: the techniques due go to the drawing process (or the sidecar) with the weights."""
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self._owner = owner
        due = [k for k, t in zip(owner.keys(), owner.techniques, strict=True) if t in owner.due(trainer)]
        if not due:
            return
        epoch = owner.step_of(trainer, pl_module)
        if self.resolved == "watch":
            snapshot = {"epoch": epoch, "due": due, "weights": cpu_weights(pl_module)}
            write_atomic(snapshot, self._folder / f"epoch_{epoch:05d}.pt")
        elif self._process is not None:
            self._trainer_last = trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs - 1
            self._submit(epoch, due, pl_module)

    def on_save_checkpoint(
        self, owner: Any, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """The techniques' states in a checkpoint are those the drawing process reached after its last drawn epoch;
        the epochs submitted since stay pending, with their weights (the checkpoint's own epoch's weights are the
        checkpoint's): a fit resumed from it draws them first. Training does not wait for the drawer here, except
        at the fit's last epoch and after Ctrl-C or an error, where every submitted epoch is drawn first."""
        if self._process is None:
            return
        self._owner = owner
        last = trainer.should_stop or (
            trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs - 1
        )
        t0 = time.perf_counter()
        while (trainer.interrupted or last) and self.pending:
            self._collect(block=True)
        self.waited["checkpoint"] += time.perf_counter() - t0
        self._collect(block=False)
        state = owner.state_dict()
        state["drawing"]["weights"].pop(owner.step_of(trainer, pl_module), None)
        checkpoint.setdefault("callbacks", {})[owner.state_key] = state

    def finish(self, owner: Any, trainer: pl.Trainer) -> None:
        """Fit end: the sidecar is told; the drawing process composes the fit's end and every epoch is drawn."""
        if self.resolved == "watch" and trainer.is_global_zero:
            write_atomic(
                {"last_step": max(0, trainer.current_epoch - 1), "interrupted": False}, self._folder / "end.pt"
            )
        if self._process is None:
            return
        self._owner = owner
        step = max(0, trainer.current_epoch - 1)  # the last trained epoch, as the evolution technique uses inline
        self._put(("finish", step, None, None))
        self.pending.append((step, []))
        t0 = time.perf_counter()
        while self.pending:
            self._collect(block=True)
        self.waited["end"] += time.perf_counter() - t0
        self._stop()

    def drain(self, trainer: pl.Trainer) -> None:
        """Ctrl-C, SIGTERM or an error: every epoch submitted so far is drawn before the fit ends."""
        if self.resolved == "watch" and self._folder is not None:
            write_atomic({"last_step": trainer.current_epoch, "interrupted": True}, self._folder / "end.pt")
        if self._process is None:
            return
        try:
            while self.pending and self._process.is_alive():
                self._collect(block=True, raise_errors=False)
        finally:
            self._stop()

    def stop(self) -> None:
        self._stop()

    # --------------------------------------------------------------------------------------------- internals
    def _submit(
        self, epoch: int, due: list[str], pl_module: pl.LightningModule, weights: dict[str, torch.Tensor] | None = None
    ) -> None:
        t0 = time.perf_counter()
        self._collect(block=False)
        weights = cpu_weights(pl_module) if weights is None else weights
        t1 = time.perf_counter()
        # the fit's last epoch: training only waits for this drawing now, so it may take every core
        last = self._trainer_last
        self._put(("draw", epoch, due, weights, max(self._threads, cpu_cores()) if last else self._threads))
        self.waited["snapshot"] += t1 - t0
        self.waited["queue"] += time.perf_counter() - t1
        self.pending.append((epoch, due))
        self.weights[epoch] = weights

    def _ready(self) -> str | None:
        """Wait until the drawing process has loaded the run; its traceback where it could not."""
        while True:
            try:
                kind, _, payload, _ = self._results.get(timeout=POLL)
                return payload if kind == "error" else None
            except queues.Empty:
                if not self._process.is_alive():
                    return f"the drawing process ended (exit code {self._process.exitcode})"

    def _put(self, job: tuple) -> None:
        """Queue ``job``; while the queue is full, training waits (and stops waiting if the process died)."""
        while True:
            try:
                self._jobs.put(job, timeout=POLL)
                return
            except queues.Full:
                self._collect(block=False)
                self._check_alive()

    def _collect(self, block: bool, raise_errors: bool = True) -> None:
        """Take the drawing process's reports: drawn epochs (with the owner's states) and errors."""
        while True:
            try:
                report = self._results.get(timeout=POLL) if block else self._results.get_nowait()
            except queues.Empty:
                if block:
                    self._check_alive()
                    continue
                return
            kind, epoch, payload, seconds = report
            if kind == "ready":  # (``auto`` waited for it at fit start)
                continue
            self.seconds.append(seconds)
            if kind == "error":
                message = f"Drawing: the drawing process failed at epoch {epoch}:\\n{payload}"
                if raise_errors:
                    self._stop()
                    raise RuntimeError(message)
                rank_zero_warn(message)
            else:  # the training process's techniques take the states the drawing reached: they go into checkpoints
                payload, self.event = payload
                if getattr(self, "_owner", None) is not None:
                    self._owner.load_drawn_state(payload)
                if kind == "drawn":
                    self.drawn.append(epoch)
            if self.pending:
                self.weights.pop(self.pending[0][0], None)
            self.pending = self.pending[1:]
            block = False  # one report was awaited; take the others that are there

    def _check_alive(self) -> None:
        if self._process is not None and not self._process.is_alive():
            code = self._process.exitcode
            self._process = None
            raise RuntimeError(f"Drawing: the drawing process ended unexpectedly (exit code {code})")

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            self._jobs.put(("stop",), timeout=5)
        except queues.Full:
            pass
        process.join(timeout=60)
        if process.is_alive():
            process.kill()
            process.join()


class Drawing(Callback):
    """Deprecated: where the pictures of the 0.1.0 callbacks are drawn; ``Convscope(drawing=...)`` now. Its settings
    (``Background``'s arguments: mode, threads, queue, device, memory_fraction) go to the owner the callbacks make."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn(
            "Drawing is deprecated and goes in the next release: Convscope([...], drawing=mode, drawing_device=...)",
            DeprecationWarning,
            stacklevel=2,
        )
        asked = Background(*args, **kwargs)  # checks the arguments now
        self.mode, self.threads, self.queue = asked.mode, asked.threads, asked.queue
        self.device, self.memory_fraction = asked.device, asked.memory_fraction

    def settings(self) -> dict[str, Any]:
        """The owner's arguments these settings are."""
        return {
            "drawing": self.mode,
            "drawing_threads": self.threads,
            "drawing_queue": self.queue,
            "drawing_device": self.device,
            "memory_fraction": self.memory_fraction,
        }

    def __getattr__(self, name: str) -> Any:
        """What the owner's drawing mode reports (``resolved``, ``waited``, ``seconds``, ...), once the callbacks'
        setup made the owner."""
        background = self.__dict__.get("background")
        if background is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(background, name)


def cpu_weights(pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
    """A CPU copy of the module's state dict: what the training process pays to have an epoch drawn elsewhere."""
    return {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}
