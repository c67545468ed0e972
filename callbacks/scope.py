"""The one owner: ``Convscope``, the Lightning callback that runs every technique, and ``Scope``, what they share.

    trainer = Trainer(callbacks=[Convscope([Filters(), ActMax(layers=["conv_1"]), GradCAM()], drawing="auto")])
    trainer = Trainer(callbacks=[Convscope()])      # every technique at its defaults

``Convscope`` schedules (``Technique.due``), checks every technique's layers at ``setup`` against shapes found in
one dry pass, draws on rank zero with fault isolation, keeps everything in one checkpoint entry, and decides where
the pictures are drawn (``callbacks.drawing``: inline, a background process, or the ``convscope.watch`` sidecar).
``Scope`` (no Lightning) is what a render reaches through its ``RenderContext``:

- the fixed image sets (``FixedSet`` keys: the probe images of each shown class, or a class-balanced set of a
  given size), chosen once and kept in the checkpoint, so every epoch and a resumed fit show the same images;
- the shared pass: per fixed set and drawing, the per-sample unit activations and per-class mean maps of every
  layer a technique declared (``Technique.share_layers``), gathered from the validation loop's own forward passes
  where it can (``EpochCapture``), else by one ``activation_pass``;
- the validation loop's predictions, gathered once for the techniques that read them (the confusion matrix);
- measurements one technique posts for another (importance for the unit browser), and every picture handed to
  the evolution technique;
- the writer: one wrapper over TensorBoard's SummaryWriter for encoded PNGs.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor, nn
from typing_extensions import override

from .capture import EpochCapture, Source, sequential_batch_size
from .data import FIXED_SET_MAX, DataFacts, choose_per_class, data_facts, set_budget, train_samples
from .hooks import ActivationStats, TopActivations, activation_pass, eval_mode, no_autocast
from .technique import RenderContext, Technique, check_arg, once_called_shapes

__all__ = ["Convscope", "Scope", "FixedSet", "add_png", "net_of", "legacy_key"]


def add_png(writer: Any, tag: str, png: bytes, height: int, width: int, step: int) -> None:
    """Log an encoded PNG as an image summary. ``SummaryWriter.add_image`` takes pixels and encodes them itself; the
    pictures are encoded once, by ``figures.to_png`` (palette PNGs), so this goes through its file writer, the one
    place that reaches past TensorBoard's public API."""
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=png)
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def net_of(pl_module: nn.Module) -> nn.Module:
    """The net the pictures are drawn from: ``pl_module.net`` (or the module itself), and behind a
    ``torch.compile``d net its eager module (``_orig_mod``): hooks on a compiled net's submodules may not fire, and
    a compiled net cannot be traced."""
    net = getattr(pl_module, "net", pl_module)
    while isinstance(getattr(net, "_orig_mod", None), nn.Module):
        net = net._orig_mod
    return net


@dataclass(frozen=True)
class FixedSet:
    """Which fixed images: ``kind`` ``"probe"`` (the first ``per_class`` validation images of each shown class) or
    ``"set"`` (the first ``per_class`` of every class, ``per_class`` already capped by ``data.set_budget``)."""

    kind: str
    per_class: int

    def choose(self, facts: DataFacts) -> Tensor:
        if self.kind == "probe":
            return choose_per_class(facts.labels(), self.per_class, facts.shown_classes())
        return choose_per_class(facts.labels(), self.per_class, facts.num_classes)

    def name(self) -> str:
        return f"{self.kind}:{self.per_class}"


@dataclass
class SharedPass:
    """One fixed set's statistics at one drawing: ``{layer: (N, U)}`` unit activations, ``{layer: (len(shown),
    *shape)}`` class-mean maps and each unit's top samples, filled as techniques ask; ``capture``: the validation
    loop's."""

    drawing: int
    step: int | None = None  # the image step it was computed at (None: a capture not read yet)
    acts: dict[str, Tensor] = field(default_factory=dict)
    maps: dict[str, Tensor] = field(default_factory=dict)
    tops: dict[str, TopActivations] = field(default_factory=dict)  # the top ``top_k`` samples of each unit
    top_k: int = 0
    capture: EpochCapture | None = None
    y: Tensor | None = None  # the set's labels


class Scope:
    """What the techniques of one owner share (see the module's docstring). Plain PyTorch: ``facts`` (the data),
    a ``writer``, the ``device`` the fixed images go to where the data is not already there."""

    def __init__(self, facts: DataFacts, writer: Any = None, device: torch.device | None = None) -> None:
        self.facts, self.writer, self.device = facts, writer, device
        self.techniques: list[Technique] = []
        self.sets: dict[FixedSet, Tensor] = {}  # chosen once, kept in the checkpoint
        self._fetched: dict[FixedSet, tuple[Tensor, Tensor, Tensor]] = {}
        self.passes: dict[int, SharedPass] = {}  # fixed set size -> this drawing's statistics
        self.drawing = 0  # counts drawings: what one pass serves
        self.results: dict[tuple[str, str], tuple[int, Any]] = {}
        self.predictions: tuple[Tensor, Tensor] | None = None  # this epoch's validation loop's, when gathered
        self.train_source: Callable[[int, Sequence[int]], tuple[Tensor, Tensor]] | None = None
        self.listeners: list[Callable[[str, int, bytes, Source, int | None], None]] = []  # get every picture

    # ------------------------------------------------------------------------------------------ fixed sets
    def set_of(self, kind: str, per_class: int, total: int = FIXED_SET_MAX) -> FixedSet:
        if kind == "probe":
            return FixedSet("probe", per_class)
        return FixedSet("set", set_budget(per_class, self.facts.num_classes, total))

    def fixed(
        self, technique: Technique, kind: str, per_class: int, total: int = FIXED_SET_MAX
    ) -> tuple[Tensor, Tensor]:
        """``(x, y)`` of a fixed set, chosen on first use and fetched once; the probe images are chosen again if the
        shown classes were changed."""
        which = self.set_of(kind, per_class, total)
        idx = self.sets.get(which)
        if kind == "probe":
            labels = self.facts.labels()
            if idx is None or not set(labels[idx.to(labels.device)].tolist()) <= set(self.facts.shown_classes()):
                idx = which.choose(self.facts)
            technique.probe_idx = idx
        else:
            idx = which.choose(self.facts) if idx is None else idx
            technique.fixed_idx = idx
        self.sets[which] = idx
        cached = self._fetched.get(which)
        if cached is None or not torch.equal(cached[0], idx):
            x, y = self.facts.images(idx)
            if self.device is not None and self.facts.tensors is None:
                x, y = x.to(self.device), y.to(self.device)
            self._fetched[which] = cached = (idx, x, y)
        return cached[1], cached[2]

    # ------------------------------------------------------------------------------------------ shared pass
    def shared_size(self, technique: Technique) -> int | None:
        """The size (per class) of the fixed set whose layers ``technique`` declared, or None."""
        if not technique.shared_layers:
            return None
        per_class = technique.shared_per_class(self.facts.num_classes)
        return self.set_of("set", per_class).per_class

    def shared_layers(self, size: int) -> tuple[list[str], list[str], list[str], int]:
        """``(unit layers, map layers, top layers, top k)`` declared on the fixed set of ``size`` by the enabled
        techniques, each layer once, the largest ``k``."""
        units, maps, tops, k = [], [], [], 0
        for t in self.techniques:
            if t.enabled and t.off_reason is None and self.shared_size(t) == size:
                units += t.shared_layers[0]
                maps += t.shared_maps
                if t.shared_top_k:
                    tops += t.shared_layers[0]
                    k = max(k, t.shared_top_k)
        return list(dict.fromkeys(units)), list(dict.fromkeys(maps)), list(dict.fromkeys(tops)), k

    def begin(self) -> None:
        """A new drawing: new weights, so the shared statistics are computed again."""
        self.drawing += 1
        self.stop_capture()

    def start_capture(self, net: nn.Module, size: int, batch_size: int, technique: Technique) -> None:
        """Gather this drawing's statistics of the fixed set of ``size`` from the validation loop's batches (in
        order, ``batch_size`` each) instead of a pass of their own."""
        if size in self.passes and self.passes[size].drawing == self.drawing:
            return
        _, y = self.fixed(technique, "set", size, size * self.facts.num_classes)
        units, maps, tops, k = self.shared_layers(size)
        stats = ActivationStats(units, maps, len(y), self.facts.num_classes, self.facts.shown_classes(), tops, k)
        idx = self.sets[FixedSet("set", size)]
        capture = EpochCapture(net, stats, idx, y, len(self.facts.labels()), batch_size, self.drawing)
        self.passes[size] = SharedPass(self.drawing, capture=capture)

    def feed(self, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        for shared in self.passes.values():
            if shared.capture is not None:
                shared.capture.add(batch, batch_idx) if dataloader_idx == 0 else shared.capture.close(failed=True)

    def stop_capture(self) -> None:
        for shared in self.passes.values():
            if shared.capture is not None:
                shared.capture.close()

    def shared_pass(
        self,
        technique: Technique,
        per_class: int,
        units: Sequence[str],
        maps: Sequence[str],
        ctx: RenderContext,
        tops: tuple[Sequence[str], int] = ((), 0),
    ) -> SharedPass:
        """This drawing's statistics of the fixed set of ``per_class`` holding ``units``, ``maps`` and the top
        ``k`` samples of ``tops = (layers, k)`` (and every layer declared on that set), computed in one
        ``activation_pass`` where the validation loop's capture did not see the whole set."""
        x, y = self.fixed(technique, "set", per_class)
        size = self.set_of("set", per_class).per_class
        shared = self.passes.get(size)
        if shared is None or shared.drawing != self.drawing or shared.capture is not None:
            capture = shared.capture if shared is not None else None
            shared = self.passes[size] = SharedPass(self.drawing, ctx.step)
            if capture is not None:  # gathered during this epoch's validation loop
                capture.close()
                if capture.key == self.drawing and capture.complete():
                    shared.acts.update(capture.stats.units)
                    shared.maps.update(capture.stats.class_means())
                    shared.tops.update(capture.stats.tops())
                    shared.top_k = capture.stats.top_k
        shared.y = y
        declared_units, declared_maps, declared_tops, declared_k = self.shared_layers(size)
        units = [n for n in dict.fromkeys([*units, *declared_units]) if n not in shared.acts]
        maps = [n for n in dict.fromkeys([*maps, *declared_maps]) if n not in shared.maps]
        k = max(tops[1], declared_k)
        wanted = list(dict.fromkeys([*tops[0], *declared_tops])) if k else []
        top_layers = wanted if shared.top_k < k or any(n not in shared.tops for n in wanted) else []  # all, at one k
        if units or maps or top_layers:
            found = activation_pass(
                ctx.net,
                x,
                units,
                maps,
                labels=y,
                num_classes=self.facts.num_classes,
                map_classes=ctx.shown,
                top_layers=top_layers,
                top_k=k if top_layers else 0,
            )
            shared.acts.update(found.units)
            shared.maps.update(found.means)
            if top_layers:
                shared.tops.update(found.tops)
                shared.top_k = k
        return shared

    # ------------------------------------------------------------------------------------------- the rest
    def train_samples(self, per_class: int, classes: Sequence[int]) -> tuple[Tensor, Tensor]:
        if self.train_source is None:
            raise RuntimeError("no training data to draw samples from")
        return self.train_source(per_class, classes)

    def val_predictions(self) -> tuple[Tensor, Tensor] | None:
        return self.predictions

    def post(self, technique: str, key: str, step: int, value: Any) -> None:
        self.results[(technique, key)] = (step, value)

    def result(self, technique: str, key: str, step: int) -> Any:
        found = self.results.get((technique, key))
        return found[1] if found is not None and found[0] == step else None

    def write_image(self, ctx: RenderContext, tag: str, img: Tensor, png: bytes) -> None:
        """Log ``png`` (of the uint8 ``img``) and hand it to the techniques that stack snapshots (evolution)."""
        add_png(ctx.writer, tag, png, img.shape[1], img.shape[2], ctx.step)
        source = Source.of(ctx.technique)
        for listener in self.listeners:
            listener(tag, ctx.step, png, source, ctx.fit_last_epoch)

    def draw(
        self,
        technique: Technique,
        net: nn.Module,
        step: int,
        run_dir: str | None = None,
        fit_last_epoch: int | None = None,
    ) -> RenderContext:
        """Call ``technique.render`` with fault isolation and timing: an error becomes a warning naming the
        technique, its tags and the epoch, and training goes on (``strict`` re-raises)."""
        ctx = RenderContext(net, self.writer, step, technique, self, run_dir, fit_last_epoch)
        t0 = time.perf_counter()
        try:
            with eval_mode(net), torch.no_grad(), no_autocast(net):  # float32 pictures under mixed precision too
                technique.render(ctx)
        except Exception as e:  # fault isolation: one broken picture must not end a training run
            if technique.strict:
                raise
            warnings.warn(
                f"{type(technique).__name__} ({technique.technique}/...) failed at epoch {step} after logging "
                f"{ctx.logged or 'nothing'}: {type(e).__name__}: {e}. Training goes on; pass strict=True to stop.",
                stacklevel=2,
            )
        finally:
            technique.seconds.append(time.perf_counter() - t0)
        return ctx

    # ------------------------------------------------------------------------------------------- state
    def get_state(self) -> dict[str, Any]:
        return {which.name(): idx for which, idx in self.sets.items()}

    def set_state(self, state: dict[str, Any]) -> None:
        for name, idx in state.items():
            kind, n = name.split(":")
            self.sets[FixedSet(kind, int(n))] = idx


def legacy_key(technique: Technique) -> str:
    """The checkpoint key the technique's own callback had before ``Convscope`` owned it (convscope 0.1.0)."""
    config = getattr(technique, "config", lambda: {})()
    return f"{technique.legacy_name}{ {'technique': technique.technique, 'config': repr(config)}!r}"


class Convscope(Callback):
    """Draw every technique into the run's TensorBoard at validation ends (see the module's docstring).

    Args:
        techniques: the techniques, drawn in this order (default: every one at its defaults, ``TECHNIQUES``).
        drawing: where pictures are drawn: ``auto``, ``inline``, ``background`` or ``watch`` (``callbacks.drawing``).
        drawing_device: where a background process draws (``cpu``, ``cuda:N``; default: the trainer's device).
        drawing_threads: the background process's threads (default: 1 on a CPU trainer, else half the cores).
        drawing_queue: snapshots that may wait for the background process before training waits.
        memory_fraction: the most of a GPU's memory a background process may take there (0 to 1).
    """

    def __init__(
        self,
        techniques: Sequence[Technique] | None = None,
        drawing: str = "auto",
        drawing_device: str | None = None,
        drawing_threads: int | None = None,
        drawing_queue: int = 2,
        memory_fraction: float = 0.25,
    ) -> None:
        from . import TECHNIQUES
        from .drawing import Background

        if techniques is None:
            techniques = [cls() for cls in TECHNIQUES.values()]
        for t in techniques:
            check_arg(self, "techniques", t, isinstance(t, Technique), "a list of techniques (convscope.Filters, ...)")
        self.techniques = list(techniques)
        self.background = Background(drawing, drawing_threads, drawing_queue, drawing_device, memory_fraction)
        self.scope: Scope | None = None
        self.job: tuple[int, list[str]] | None = None  # in a drawing process: the epoch and the techniques it draws
        self.fit_last: int | None = None  # the last epoch of the fit under way (None outside fit)
        self._sets_state: dict[str, Any] = {}
        self._warned: set[str] = set()
        self._predicting: tuple[Any, list[Tensor], list[tuple[Tensor, Tensor]] | None] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in ("log", "log_dict"):  # the training module's, bound by Lightning: not the owner's to pickle
            state.pop(name, None)
        return {**state, "scope": None, "_predicting": None, "background": self.background.detached()}

    def keys(self) -> list[str]:
        """Each technique's key in the checkpoint and the drawing process's jobs: its name, numbered if repeated."""
        names = [t.technique for t in self.techniques]
        return [n if names.count(n) == 1 else f"{n}#{names[:i].count(n)}" for i, n in enumerate(names)]

    def enabled(self) -> list[Technique]:
        return [t for t in self.techniques if t.enabled and t.off_reason is None]

    # -------------------------------------------------------------------------------------------------- setup
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check every technique's layers and units against the net, with the input shape of the Trainer's
        validation data (one dry pass for all), before the first training step."""
        facts = data_facts(trainer, pl_module)
        if self.scope is None:
            self.scope = Scope(facts)
            self.scope.set_state(self._sets_state)
        scope = self.scope
        scope.facts, scope.techniques = facts, self.techniques
        scope.device = getattr(pl_module, "device", None)
        scope.train_source = lambda n, classes: train_samples(trainer, facts, n, classes)
        net = net_of(pl_module)
        shapes = once_called_shapes(net, facts.input_shape) if any(t.enabled for t in self.techniques) else {}
        for t in self.techniques:
            t.off_reason = None
            if t.enabled:
                t.configure_for(net, facts.input_shape, shapes)  # (a technique that finds no layer says so)
                if stage == "fit" and t.off_reason is None and t.uses_default_layers() and t.drawn_layers():
                    rank_zero_info(
                        f"convscope: {t.technique} draws {', '.join(t.drawn_layers())} (chosen by default; name "
                        f"others with --{t.technique}.{t.layer_args[0]})"
                    )
        scope.listeners = [t.record_snapshot for t in self.enabled() if hasattr(t, "record_snapshot")]
        for t in self.enabled():
            check = getattr(t, "check_techniques", None)
            if check is not None:
                check([u.technique for u in self.enabled() if u is not t])
        self.background.setup(trainer, stage)

    # ----------------------------------------------------------------------------------------------- schedule
    def step_of(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> int:
        """The image step: the epoch being trained; in a drawing process, the job's; when validating a checkpoint,
        the epoch it was saved at."""
        if self.job is not None:
            return self.job[0]
        if trainer.state.fn != "fit" and getattr(pl_module, "checkpoint_epoch", None) is not None:
            return int(pl_module.checkpoint_epoch)
        return trainer.current_epoch

    def due(self, trainer: pl.Trainer) -> list[Technique]:
        """The techniques this validation draws here: none in the sanity check or where another process draws; in
        a drawing process, the job's; at ``validate``, every one; in a fit, those whose epoch it is."""
        if trainer.sanity_checking:
            return []
        if self.job is not None:
            keys = dict(zip(self.keys(), self.techniques, strict=True))
            return [keys[k] for k in self.job[1] if keys[k].enabled and keys[k].off_reason is None]
        if trainer.state.fn != "fit":
            return [t for t in self.enabled() if t.when == "validation"]
        return [t for t in self.techniques if t.due(trainer.current_epoch, self.fit_last)]

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, techniques: list[Technique], step: int):
        writer = self._writer(trainer)
        if writer is None or not techniques:
            return
        self.scope.writer = writer
        run_dir = run_dir_of(trainer)
        for t in techniques:
            self.scope.draw(t, net_of(pl_module), step, run_dir, self.fit_last)

    def _writer(self, trainer: pl.Trainer):
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        if "writer" not in self._warned:
            self._warned.add("writer")
            rank_zero_warn("Convscope: no TensorBoardLogger in the Trainer, so nothing is drawn")
        return None

    # ----------------------------------------------------------------------------------------- Lightning hooks
    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.fit_last = trainer.max_epochs - 1 if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
        if trainer.is_global_zero and not trainer.ckpt_path:  # a resumed fit already has them
            self.scope.begin()
            self._draw(trainer, pl_module, [t for t in self.enabled() if t.when == "fit_start"], trainer.current_epoch)
        self.background.start(self, trainer, pl_module)

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.scope is not None:
            self.scope.predictions = None  # this epoch's, if gathered
        if not trainer.is_global_zero or self.background.elsewhere(trainer):
            return
        due = self.due(trainer)
        if not due:
            return
        self.scope.begin()
        net = net_of(pl_module)
        if net is not getattr(pl_module, "net", pl_module):
            return  # torch.compile'd: hooks on the eager module do not fire in the compiled validation pass
        size = sequential_batch_size(trainer, self.scope.facts)
        if size is not None:
            for t in due:
                shared = self.scope.shared_size(t)
                if shared is not None:
                    self.scope.start_capture(net, shared, size, t)
        if trainer.world_size == 1 and any(t.wants_predictions for t in due):
            hooked: list[Tensor] = []

            def keep(module, inputs, output) -> None:
                if isinstance(output, Tensor) and output.dim() == 2:
                    hooked.append(output.detach().argmax(1))

            self._predicting = (net.register_forward_hook(keep), hooked, [])

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.scope is None:
            return
        self.scope.feed(batch, batch_idx, dataloader_idx)
        if self._predicting is None or self._predicting[2] is None:
            return
        hook, hooked, seen = self._predicting
        taken = list(hooked)
        hooked.clear()
        if not (isinstance(batch, (tuple, list)) and len(batch) > 1):
            self._predicting = (hook, hooked, None)
        elif isinstance(outputs, dict) and "preds" in outputs:
            seen.append((outputs["preds"], batch[1]))
        elif len(taken) == 1 and taken[0].shape == batch[1].shape:
            seen.append((taken[0], batch[1]))  # the net ran once on this batch: its predictions
        else:
            self._predicting = (hook, hooked, None)  # not once per batch: the technique computes its own

    def _stop_gathering(self) -> None:
        if self.scope is not None:
            self.scope.stop_capture()
        if self._predicting is not None:
            hook, _, seen = self._predicting
            hook.remove()
            self._predicting = None
            if seen and self.scope is not None:
                self.scope.predictions = (torch.cat([p for p, _ in seen]), torch.cat([t for _, t in seen]))

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        try:
            self._stop_gathering()
            if self.background.elsewhere(trainer):
                self.background.submit(self, trainer, pl_module)
            elif trainer.is_global_zero:
                self._draw(trainer, pl_module, self.due(trainer), self.step_of(trainer, pl_module))
        finally:
            if self.scope is not None:
                self.scope.stop_capture()

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.fit_last = None
        if self.background.elsewhere(trainer):
            self.background.finish(self, trainer)
        elif trainer.is_global_zero:
            self.finish(trainer, pl_module, max(0, trainer.current_epoch - 1))  # the last trained epoch

    def finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        """What is drawn once a fit is over (the evolution strips), at ``step``."""
        self.fit_last = None
        self.scope.begin()
        self._draw(trainer, pl_module, [t for t in self.enabled() if t.when == "fit_end" and t.ready()], step)

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._stop_gathering()
        self.fit_last = None  # the snapshots so far are in the last checkpoint; a resumed fit composes them
        self.background.drain(trainer)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._stop_gathering()
        self.background.stop()

    # -------------------------------------------------------------------------------------------------- state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "techniques": {k: t.get_state() for k, t in zip(self.keys(), self.techniques, strict=True)},
            "sets": self.scope.get_state() if self.scope is not None else dict(self._sets_state),
            "drawing": self.background.state_dict(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.load_drawn_state(state_dict)
        self.background.load_state_dict(state_dict.get("drawing", {}), self.keys())

    def load_drawn_state(self, state: dict[str, Any]) -> None:
        """The techniques' states and fixed sets a drawing process reached (they go into checkpoints)."""
        states = state.get("techniques", {})
        for k, t in zip(self.keys(), self.techniques, strict=True):
            if k in states:
                t.set_state(states[k])
        self._load_sets(state.get("sets", {}))

    def _load_sets(self, sets: dict[str, Any]) -> None:
        self._sets_state = {**self._sets_state, **sets}
        if self.scope is not None:
            self.scope.set_state(sets)

    @override
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.background.on_save_checkpoint(self, trainer, pl_module, checkpoint)

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """A checkpoint of convscope 0.1.0 has one entry per technique's callback (and the ``Drawing``
        callback's): read into the techniques and the fixed sets."""
        states = checkpoint.get("callbacks", {})
        if self.state_key in states:
            return
        sets: dict[str, Any] = {}
        for t in self.techniques:
            old = states.get(legacy_key(t))
            if old is None:
                continue
            t.set_state(old)
            for attr, kind in (("probe_idx", "probe"), ("fixed_idx", "set")):
                idx = old.get(attr)
                if idx is not None and self.scope is not None and len(idx):
                    per_class = int(self.scope.facts.labels()[idx.cpu()].bincount().max())
                    sets[FixedSet(kind, per_class).name()] = idx
        self._load_sets(sets)
        if "Drawing" in states:
            self.background.load_state_dict(states["Drawing"], self.keys())


def run_dir_of(trainer: pl.Trainer) -> str | None:
    """The run folder, read from the logger on this rank only. ``trainer.log_dir`` broadcasts from rank zero under
    DDP, so calling it on one rank alone (as rank-zero-only code does) would leave that rank waiting."""
    logger = trainer.logger
    return getattr(logger, "log_dir", None) if logger is not None else None
