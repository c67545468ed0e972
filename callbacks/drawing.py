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

from .base import VisualizationCallback
from .classes import ShownClasses
from .data import val_loader
from .evolution import EvolutionCallback

__all__ = [
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


def drawn_callbacks(trainer: pl.Trainer) -> list[Callback]:
    """The callbacks a drawing process needs, in the Trainer's order: the visualizations and ``ShownClasses``."""
    return [cb for cb in trainer.callbacks if isinstance(cb, (VisualizationCallback, ShownClasses))]


def detached(cb: Callback) -> Callback:
    """A copy of ``cb`` to pickle: without the ``log``/``log_dict`` methods of the training module that Lightning
    binds to every callback (they would pickle the module's Trainer-side state)."""
    cb = copy.copy(cb)
    for name in ("log", "log_dict"):
        cb.__dict__.pop(name, None)
    return cb


def make_spec(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """What a ``Drawer`` rebuilds the run's drawing from: the module (its weights come with each snapshot), the
    validation data, the callbacks, and the Trainer settings that decide what validation sees."""
    dm = trainer.datamodule
    return {
        "module": pl_module,
        "datamodule": dm,
        "val_dataloaders": None if dm is not None else val_loader(trainer),  # (loaded here if not yet)
        "callbacks": [detached(cb) for cb in drawn_callbacks(trainer)],
        "limit_val_batches": trainer.limit_val_batches,
        "inference_mode": trainer._evaluation_loop.inference_mode,
        "last_epoch": trainer.max_epochs - 1 if trainer.max_epochs is not None and trainer.max_epochs > 0 else None,
    }


def spec_bytes(trainer: pl.Trainer, pl_module: pl.LightningModule) -> bytes:
    buffer = io.BytesIO()
    try:
        torch.save(make_spec(trainer, pl_module), buffer)
    except Exception as e:
        raise RuntimeError(
            "Drawing: another process draws from a copy of the LightningModule, its data and the visualization "
            f"callbacks, and one of them cannot be pickled ({type(e).__name__}: {e}); use drawing mode 'inline'"
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
    """Draws a run's pictures in this process, from its weights at chosen epochs: copies of the run's callbacks
    in a ``Trainer`` of their own, one ``validate`` per epoch on a copy of the module, logged into the run folder
    by a ``PictureLogger``, on ``device``. Used by the background process and by ``convscope.watch``."""

    def __init__(self, spec: dict[str, Any], run_dir: str | Path, device: str = "cpu") -> None:
        self.module: pl.LightningModule = spec["module"]
        self.datamodule = spec["datamodule"]
        self.loaders = spec["val_dataloaders"]
        self.callbacks: list[Callback] = spec["callbacks"]
        self.visuals = [cb for cb in self.callbacks if isinstance(cb, VisualizationCallback)]
        for cb in self.visuals:
            cb.deferred = False
            cb.fit_last_epoch = spec["last_epoch"]  # the fit's last epoch, which some schedules draw (units' actmax)
            if isinstance(cb, EvolutionCallback):
                cb._fit_last = spec["last_epoch"]  # as its on_fit_start does in the training process
        self.logger = PictureLogger(run_dir)
        where = torch.device(device)
        self.trainer = pl.Trainer(
            accelerator=where.type,
            devices=[where.index or 0] if where.type == "cuda" else 1,
            logger=self.logger,
            callbacks=self.callbacks,
            default_root_dir=str(run_dir),
            limit_val_batches=spec["limit_val_batches"],
            inference_mode=spec["inference_mode"],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )

    def draw(self, epoch: int, due: list[int], weights: dict[str, torch.Tensor]) -> None:
        """Draw the pictures of ``epoch`` (0-based, the image step) of the callbacks at positions ``due`` in
        ``visuals``, from ``weights`` (the module's state dict)."""
        self.module.load_state_dict(weights)
        self.module.checkpoint_epoch = epoch  # the image step of every picture (``VisualizationCallback.step_of``)
        for i, cb in enumerate(self.visuals):
            cb.drawing_due = i in due
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            self.trainer.validate(self.module, dataloaders=self.loaders, datamodule=self.datamodule, verbose=False)

    def finish(self, step: int) -> None:
        """What inline drawing does at fit end: the evolution pictures, logged at ``step`` (the last epoch)."""
        for cb in self.visuals:
            if isinstance(cb, EvolutionCallback):
                cb._fit_last = None
                if cb.enabled and cb.snapshots:
                    cb.draw(self.trainer, self.module, step=step)

    def states(self) -> list[dict[str, Any]]:
        return [cb.state_dict() for cb in self.visuals]

    def report(self) -> tuple[list[dict[str, Any]], tuple[str, int]]:
        """After a drawing (its pictures are flushed here): the callbacks' states, and this process's event file and
        its length (everything in it up to there is finished epochs; ``cut_back`` takes it)."""
        self.logger.experiment.flush()
        event = self.logger.event_file()
        return self.states(), (str(event.resolve()), event.stat().st_size)

    def load_states(self, states: list[dict[str, Any]]) -> None:
        for cb, state in zip(self.visuals, states):
            cb.load_state_dict(state)

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


class Drawing(Callback):
    """Where the pictures are drawn: ``inline``, ``background``, ``watch`` or ``auto`` (see the module's docstring).

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
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"Drawing: threads must be an integer >= 1, got {threads!r}")
        if not isinstance(queue, int) or queue < 1:
            raise ValueError(f"Drawing: queue must be an integer >= 1, got {queue!r}")
        if device is not None:
            try:
                torch.device(device)
            except (RuntimeError, TypeError) as e:
                raise ValueError(
                    f"Drawing: device {device!r} is not a device; valid: 'cpu', 'cuda', 'cuda:N', 'mps', or none "
                    "(the trainer's)"
                ) from e
        if not 0 < memory_fraction <= 1:
            raise ValueError(f"Drawing: memory_fraction must be in (0, 1], got {memory_fraction!r}")
        self.mode, self.threads, self.queue = mode, threads, queue
        self.device, self.memory_fraction = device, memory_fraction
        self.resolved = "inline"  # the mode of the fit under way
        self.why = ""  # why (the line fit start prints)
        self.drawer_device: str | None = None  # where the background process draws
        self.deferred: list[VisualizationCallback] = []
        self.drawn: list[int] = []  # epochs the other process has drawn (background), in order
        self.pending: list[tuple[int, list[int]]] = []  # (epoch, due) submitted and not yet drawn
        self.weights: dict[int, dict[str, torch.Tensor]] = {}  # the pending epochs' weights (a checkpoint keeps them)
        self._process = self._jobs = self._results = None
        self.event: tuple[str, int] | None = (
            None  # the drawing process's event file and its length after its last epoch
        )
        self._order: list[VisualizationCallback] = []  # the visualizations, in the order of the drawer's states
        self._folder: Path | None = None
        self.seconds: list[float] = []  # the drawing process's time per job (an epoch's drawing; the fit's end)
        self.waited = {"snapshot": 0.0, "queue": 0.0, "checkpoint": 0.0, "end": 0.0}  # s training spent on drawing

    # ------------------------------------------------------------------------------------------------- state
    @override
    def state_dict(self) -> dict[str, Any]:
        """What a resumed fit needs to lose no picture and draw none twice: the last epoch the drawer finished (the
        callbacks' states in the checkpoint are those it reached then), how long its event file was then, and the
        epochs submitted since, with their weights (none for the checkpoint's own epoch: its weights are the
        checkpoint's)."""
        return {
            "pending": list(self.pending),
            "weights": dict(self.weights),
            "drawn": self.drawn[-1] if self.drawn else None,
            "event": self.event,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pending = [(int(e), list(d)) for e, d in state_dict.get("pending", [])]
        self.weights = dict(state_dict.get("weights", {}))
        self.drawn = [] if state_dict.get("drawn") is None else [int(state_dict["drawn"])]
        self.event = state_dict.get("event")

    # ------------------------------------------------------------------------------------------------- hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.drawer_device = self.device or str(trainer_device(trainer))
        if stage != "fit":
            self.resolved, self.why = "inline", stage
        elif self.mode == "auto":
            self.resolved, self.why = auto_mode(trainer_device(trainer).type, cpu_cores())
            self.why = f"auto: {self.why}"
        else:
            self.resolved, self.why = self.mode, "asked for"
        if self.resolved != "inline" and VisualizationCallback.run_dir(trainer) is None:
            rank_zero_warn(f"Drawing: mode {self.mode!r} needs a logger with a run folder; drawing inline")
            self.resolved = "inline"
        self.deferred = [cb for cb in trainer.callbacks if isinstance(cb, VisualizationCallback) and cb.at_validation]
        self._defer(self.resolved != "inline")

    def _defer(self, deferred: bool) -> None:
        for cb in self.deferred:
            cb.deferred = deferred

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        spec = None
        if self.resolved != "inline":
            try:
                spec = spec_bytes(trainer, pl_module)
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
        self._defer(False)

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, spec: bytes) -> None:
        """Hand ``spec`` to the sidecar (watch) or start the drawing process (background)."""
        self._order = self._visuals(trainer)
        run_dir = VisualizationCallback.run_dir(trainer)
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
        if self.pending:  # resumed from a checkpoint with epochs not drawn yet: drawn first, from their weights
            pending, self.pending = self.pending, []
            weights, self.weights = self.weights, {}
            for epoch, due in pending:
                self._submit(epoch, due, pl_module, weights.get(epoch))

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (
            self.resolved == "inline"
            or trainer.sanity_checking
            or trainer.state.fn != "fit"
            or not trainer.is_global_zero
        ):
            return
        due = [i for i, cb in enumerate(self._visuals(trainer)) if cb in self.deferred and cb.due(trainer)]
        if not due:
            return
        epoch = VisualizationCallback.step_of(trainer, pl_module)
        if self.resolved == "watch":
            snapshot = {"epoch": epoch, "due": due, "weights": cpu_weights(pl_module)}
            write_atomic(snapshot, self._folder / f"epoch_{epoch:05d}.pt")
        else:
            self._trainer_last = trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs - 1
            self._submit(epoch, due, pl_module)

    @override
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """The callbacks' states in a checkpoint are those the drawing process reached after its last drawn epoch;
        the epochs submitted since stay pending, with their weights (the checkpoint's own epoch's weights are the
        checkpoint's): a fit resumed from it draws them first. Training does not wait for the drawer here, except
        at the fit's last epoch and after Ctrl-C or an error, where every submitted epoch is drawn first."""
        if self._process is None:
            return
        last = trainer.should_stop or (
            trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs - 1
        )
        t0 = time.perf_counter()
        while (trainer.interrupted or last) and self.pending:
            self._collect(block=True)
        self.waited["checkpoint"] += time.perf_counter() - t0
        self._collect(block=False)
        states = checkpoint.setdefault("callbacks", {})
        for cb in self.deferred:
            states[cb.state_key] = cb.state_dict()
        state = self.state_dict()
        state["weights"].pop(VisualizationCallback.step_of(trainer, pl_module), None)
        states[self.state_key] = state

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.resolved == "watch" and trainer.is_global_zero:
            write_atomic(
                {"last_step": max(0, trainer.current_epoch - 1), "interrupted": False}, self._folder / "end.pt"
            )
        if self._process is None:
            return
        step = max(0, trainer.current_epoch - 1)  # the last trained epoch, as the evolution callback uses inline
        self._put(("finish", step, None, None))
        self.pending.append((step, []))
        t0 = time.perf_counter()
        while self.pending:
            self._collect(block=True)
        self.waited["end"] += time.perf_counter() - t0
        self._stop()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
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

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._stop()
        for cb in self.deferred:
            cb.deferred = False  # a later validate or fit on this Trainer decides again

    # --------------------------------------------------------------------------------------------- internals
    @staticmethod
    def _visuals(trainer: pl.Trainer) -> list[VisualizationCallback]:
        """The visualizations in the order the ``Drawer``'s copies have them."""
        return [cb for cb in drawn_callbacks(trainer) if isinstance(cb, VisualizationCallback)]

    def _submit(
        self, epoch: int, due: list[int], pl_module: pl.LightningModule, weights: dict[str, torch.Tensor] | None = None
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
        """Take the drawing process's reports: drawn epochs (with the callbacks' states) and errors."""
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
                message = f"Drawing: the drawing process failed at epoch {epoch}:\n{payload}"
                if raise_errors:
                    self._stop()
                    raise RuntimeError(message)
                rank_zero_warn(message)
            else:  # the trainer's callbacks take the states the drawing reached: they go into checkpoints
                payload, self.event = payload
                for cb, state in zip(self._order, payload):
                    if cb in self.deferred:
                        cb.load_state_dict(state)
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


def cpu_weights(pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
    """A CPU copy of the module's state dict: what the training process pays to have an epoch drawn elsewhere."""
    return {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}
