"""The shared base of every visualization callback.

A subclass names its ``technique`` (the tag prefix), checks and resolves its layers in ``configure`` and draws in
``render``. The base handles the rest:

- ``every_n_epochs`` and ``enabled``; nothing is drawn during the sanity check;
- layer names and unit indices checked at ``setup``, before the first training step (``LayerError`` lists the
  valid names);
- fixed probe sets: the first validation images of each class (``probe_images``) and a class-balanced set of up
  to ``per_class`` validation samples (``fixed_set``), chosen once and kept in the callback's state, so every
  epoch, a resumed run and ``train.py validate`` show the same inputs;
- rank-zero logging to the run's TensorBoard, image step = epoch number;
- the model's train/eval mode restored and hooks removed (by the helpers used); pictures are drawn as tensors;
- modern training settings: pictures are drawn from the eager module behind a ``torch.compile``d net (``net_of``)
  with autocast off (under ``bf16-mixed``, the pictures of the same weights without it); layer names may carry a
  compiled net's ``_orig_mod.`` prefix or not (``hooks.check_layers``);
- fault isolation: an error inside one visualization becomes a warning naming the callback, tag and epoch,
  and training goes on (``strict=True`` makes it fatal).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from typing_extensions import override

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor, nn
from torch.utils.data import DataLoader, SequentialSampler

from .data import FIXED_SET_MAX, DataFacts, choose_per_class, data_facts, default_shown, set_budget, val_loader
from .hooks import ActivationStats, LayerError, LayerProbe, activation_pass, eval_mode, layer_shapes, no_autocast, spread
from .figures import bounded, to_png, to_uint8

MAX_DEFAULT_LAYERS = 4  # default layers of a callback on a deep net: this many, spread over its depth
DEFAULT_INPUT_SHAPE = (1, 28, 28)  # only for direct calls without a Trainer; with one, the data's shape

__all__ = ["VisualizationCallback", "FixedSetCallback", "RenderContext", "tag_part", "nice_ceil", "LayerError"]


def nice_ceil(value: float) -> float:
    """The smallest of 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 (times a power of ten) that is >= ``value`` > 0."""
    exp = math.floor(math.log10(value))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * 10**exp >= value * (1 - 1e-9):
            return float(f"{m * 10**exp:.3g}")
    return 10.0 ** (exp + 1)


def tag_part(text: str) -> str:
    """A class name made safe as one part of a TensorBoard tag (no slashes or spaces)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


@dataclass
class RenderContext:
    """What ``render`` gets: the net in eval mode, the writer, the epoch and the data facts."""

    trainer: pl.Trainer
    net: nn.Module
    writer: Any  # torch.utils.tensorboard.SummaryWriter
    step: int
    classes: tuple[str, ...]
    pixel_range: tuple[float, float]
    callback: "VisualizationCallback"
    input_shape: tuple[int, ...] = (1, 28, 28)  # (C, H, W) of the validation images
    shown: tuple[int, ...] | None = None  # the classes per-class pictures show (``ShownClasses``; default spread)
    logged: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.shown = default_shown(len(self.classes)) if self.shown is None else tuple(self.shown)

    def shown_note(self) -> str:
        """``" (10 of 100 classes)"`` when the pictures show a subset of the classes, else ``""``: for titles."""
        return f" ({len(self.shown)} of {len(self.classes)} classes)" if len(self.shown) < len(self.classes) else ""

    def sample_counts(self, labels: Tensor) -> str:
        """How many of the fixed set's ``labels`` each shown class has, for a title: ``"500"``, or ``"465-500"``."""
        n = labels.cpu().bincount(minlength=len(self.classes))[list(self.shown)]
        lo, hi = int(n.min()), int(n.max())
        return f"{lo}" if lo == hi else f"{lo}-{hi}"

    def class_axis(self) -> str:
        """The label of a chart's class axis: ``"class"``, or ``"class (10 of 100)"`` for a subset."""
        return f"class ({len(self.shown)} of {len(self.classes)})" if len(self.shown) < len(self.classes) else "class"

    def add_image(self, tag: str, img: Tensor) -> bytes:
        """Log a ``(3, H, W)`` image, uint8 or float in [0, 1] (NaN-safe), encoded once by ``figures.to_png`` (a
        palette PNG where faithful), and return the PNG. Callbacks that keep snapshots
        (``record_snapshot(tag, step, png, source)``, such as the evolution callback) get the same bytes."""
        img = bounded(img if img.dtype == torch.uint8 else to_uint8(img))  # at most MAX_WIDTH x MAX_HEIGHT
        png = to_png(img)
        image = Summary.Image(height=img.shape[1], width=img.shape[2], colorspace=3, encoded_image_string=png)
        self.writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), self.step)
        self.logged.append(tag)
        for cb in self.trainer.callbacks:
            record = getattr(cb, "record_snapshot", None)
            if record is not None:
                record(tag, self.step, png, self.callback)
        return png

    def add_scalar(self, tag: str, value: float) -> None:
        self.writer.add_scalar(tag, float(value), self.step)
        self.logged.append(tag)

    def add_histogram(self, tag: str, values: Tensor, max_values: int = 16384) -> None:
        """Log a histogram of the finite ``values``; more than ``max_values`` are thinned to an evenly spaced
        subset first (the shape of the distribution is kept, and binning millions of values costs seconds)."""
        values = values.detach().flatten()
        if values.numel() > max_values:
            values = values[:: -(-values.numel() // max_values)]
        values = values.float().cpu()
        values = values[torch.isfinite(values)]
        if values.numel():
            self.writer.add_histogram(tag, values, self.step)
            self.logged.append(tag)


def sequential_batch_size(trainer: pl.Trainer, facts: DataFacts) -> int | None:
    """The validation loader's batch size when its batch ``b`` holds the validation samples ``b * size, ...`` in
    order, in one process (so a batch's samples are known by position); else None."""
    if trainer.world_size != 1:
        return None
    if facts.tensors is not None:  # the fast path: MNISTDataModule's TensorBatches over the same tensors
        loader = trainer.val_dataloaders
        ordered = getattr(loader, "shuffle", True) is False and getattr(loader, "x", None) is facts.tensors[0]
        return int(loader.batch_size) if ordered else None
    loader = val_loader(trainer)
    if isinstance(loader, DataLoader) and isinstance(loader.sampler, SequentialSampler) and loader.batch_size:
        return int(loader.batch_size)
    return None


class EpochCapture:
    """The fixed-set statistics of one epoch, gathered from the validation loop's own forward passes instead of a
    pass of their own: a ``LayerProbe`` on the shared layers keeps each validation batch's activations, and the
    samples of the fixed set among them go into an ``ActivationStats``. It gives up (and the callbacks make their own
    pass) unless every fixed-set sample was seen exactly once, with the label expected at its position, in the net's
    own dtype: under autocast (``bf16-mixed``) the loop's activations are bf16, and the pictures are float32."""

    def __init__(self, net: nn.Module, stats: ActivationStats, fixed_idx: Tensor, labels: Tensor, n: int,
                 batch_size: int, key: tuple) -> None:
        self.stats, self.batch_size, self.key = stats, batch_size, key
        param = next(net.parameters(), None)
        self.dtype = param.dtype if param is not None else torch.get_default_dtype()
        self.where = torch.full((n,), -1, dtype=torch.long)  # validation index -> position in the fixed set
        self.where[fixed_idx.cpu()] = torch.arange(len(fixed_idx))
        self.labels = labels.cpu()  # of the fixed set, in its order
        self.probe: LayerProbe | None = LayerProbe(net, stats.layers)
        self.failed = False

    def add(self, batch: Any, batch_idx: int) -> None:
        if self.failed or self.probe is None:
            return
        acts, calls = self.probe.take()
        y = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        start = batch_idx * self.batch_size
        if not isinstance(y, Tensor) or any(c != 1 for c in calls.values()) or start + len(y) > len(self.where):
            return self.close(failed=True)  # not (x, y) batches, or the net did not run once per batch
        if any(a.dtype != self.dtype for a in acts.values() if isinstance(a, Tensor) and a.is_floating_point()):
            return self.close(failed=True)  # autocast: the callbacks' own pass gives the net's own dtype
        pos = self.where[start : start + len(y)]
        mask = pos >= 0
        pos = pos[mask]
        if not pos.numel():
            return
        y = y.detach().cpu().long()[mask]
        if not torch.equal(y, self.labels[pos]) or self.stats.seen[pos].any():
            return self.close(failed=True)  # the batches are not the samples we take them for
        self.stats.add({name: a[mask.to(a.device)] for name, a in acts.items()}, y, pos)

    def complete(self) -> bool:
        return not self.failed and bool(self.stats.seen.all())

    def close(self, failed: bool = False) -> None:
        self.failed = self.failed or failed
        if self.probe is not None:
            self.probe.remove()
            self.probe = None


class VisualizationCallback(Callback):
    """Base class: subclasses set ``technique`` and implement ``configure`` and ``render``.

    Args:
        enabled: turn this visualization off without removing it from the config.
        every_n_epochs: draw after every n epochs: at 0-based epochs n - 1, 2n - 1, ... (as Lightning's
            ``check_val_every_n_epoch``; n = 1: every epoch), and always at the last epoch of a fit.
        strict: re-raise errors from the visualization instead of warning and going on.
    """

    technique: str = "visualization"
    class_tags: bool = False  # tags are <technique>/<class>, one picture per class (no layer part)
    evolves: bool = True  # drawn at several epochs, so the evolution callback may stack its snapshots
    max_default_layers: int = MAX_DEFAULT_LAYERS  # default layers (``layers.layer_roles``) beyond this many are thinned
    at_validation: bool = True  # draws at validation ends (so a ``Drawing`` process may draw it); False: at fit start

    def __init__(self, enabled: bool = True, every_n_epochs: int = 1, strict: bool = False) -> None:
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"{type(self).__name__}: every_n_epochs must be an integer >= 1, got {every_n_epochs!r}")
        self.enabled = enabled
        self.every_n_epochs = every_n_epochs
        self.strict = strict
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.probe_idx: Tensor | None = None  # indices into the validation split, one or more per class
        self.fixed_idx: Tensor | None = None
        self.seconds: list[float] = []  # time spent per rendered epoch (for benchmarks)
        self.scales: dict[str, float] = {}  # colour-scale limits kept across epochs (see ``scale``)
        self.input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE
        self.shared_layers: tuple[list[str], int] | None = None  # see ``share_layers``
        self.shared_maps: list[str] = []
        self._fetched: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        self._charts: dict = {}  # matplotlib charts kept between epochs (LiveFigure), rebuilt where they are drawn
        self._warned_no_writer = False
        self._state_key: str | None = None
        self._capture: EpochCapture | None = None  # this epoch's fixed-set capture, on the callback that set it up
        self.deferred = False  # set by ``Drawing`` in the training process: another process draws these pictures
        self.drawing_due: bool | None = None  # set by ``Drawer`` in the drawing process: draw at this validation

    def __getstate__(self) -> dict[str, Any]:
        # matplotlib figures and hooks do not pickle; they are rebuilt where used
        return {**self.__dict__, "_charts": {}, "_capture": None, "_fetched": {}}  # (images are fetched again)

    # ----------------------------------------------------------------------------------------- for subclasses
    def configure(self, net: nn.Module, shapes: dict[str, tuple[int, ...]]) -> None:
        """Resolve default layers and check names and unit indices (raise ``LayerError``)."""

    def render(self, ctx: RenderContext) -> None:
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # -------------------------------------------------------------------------------------------------- helpers
    def thin(self, names: list[str]) -> list[str]:
        """Default layers: all of ``names`` on a small net, ``max_default_layers`` spread over a deep net's depth
        (the first and the last included), not every layer of a ResNet."""
        return spread(names, self.max_default_layers)

    def scale(self, key: str, value: float) -> float:
        """The colour-scale limit of picture ``key``: ``value`` rounded up to a round number at the first picture,
        kept while later values fit under it and raised (never lowered) when one does not. Pictures of one tag
        then share a scale across epochs, so the step slider compares like with like; kept in the checkpoint."""
        value = float(value) if value == value and value > 0 else 1.0
        kept = self.scales.get(key)
        if kept is None or value > kept:
            self.scales[key] = kept = nice_ceil(value)
        return kept

    @staticmethod
    def net_of(pl_module: pl.LightningModule) -> nn.Module:
        """The net the pictures are drawn from: ``pl_module.net`` (or the module itself), and behind a
        ``torch.compile``d net its eager module (``_orig_mod``): hooks on a compiled net's submodules may not fire,
        and a compiled net cannot be traced (``torch.fx``, the graph)."""
        net = getattr(pl_module, "net", pl_module)
        while isinstance(getattr(net, "_orig_mod", None), nn.Module):
            net = net._orig_mod
        return net

    def facts(self, trainer: pl.Trainer) -> DataFacts:
        """The validation data's classes, input shape, pixel range and samples (``callbacks.data``)."""
        return data_facts(trainer, getattr(trainer, "lightning_module", None))

    def _fixed(self, trainer: pl.Trainer, attr: str, per_class: int, total: int = FIXED_SET_MAX) -> tuple[Tensor, Tensor]:
        """``(x, y)`` of the validation indices kept in ``self.<attr>``, chosen on first use and fetched once:
        for ``probe_idx`` the first ``per_class`` of each shown class; else a class-balanced set of every class,
        the first ``per_class`` of each, capped so that the set holds at most ``total`` images."""
        facts = self.facts(trainer)
        idx = getattr(self, attr)
        if attr == "probe_idx":
            labels, shown = facts.labels(), facts.shown_classes()
            if idx is None or not set(labels[idx.to(labels.device)].tolist()) <= set(shown):
                idx = choose_per_class(labels, per_class, shown)  # (again, if the shown classes were changed)
        elif idx is None:
            idx = choose_per_class(facts.labels(), set_budget(per_class, facts.num_classes, total), facts.num_classes)
        setattr(self, attr, idx)
        cached = self._fetched.get(attr)
        if cached is None or not torch.equal(cached[0], idx):
            x, y = facts.images(idx)
            device = getattr(trainer, "lightning_module", None)
            device = getattr(device, "device", None)
            if device is not None and facts.tensors is None:
                x, y = x.to(device), y.to(device)
            self._fetched[attr] = cached = (idx, x, y)
        return cached[1], cached[2]

    def probe_images(self, trainer: pl.Trainer, per_class: int = 1) -> tuple[Tensor, Tensor]:
        """``(images, labels)``: the first validation image(s) of each shown class, fixed for the whole run."""
        return self._fixed(trainer, "probe_idx", per_class)

    def fixed_set(self, trainer: pl.Trainer, per_class: int, total: int = FIXED_SET_MAX) -> tuple[Tensor, Tensor]:
        """``(x, y)``: up to ``per_class`` validation samples of each class (at most ``total`` in all, 5,000 by
        default; less where a drawing's cost grows with every sample), fixed for the whole run."""
        return self._fixed(trainer, "fixed_idx", per_class, total)

    def share_layers(self, layers: list[str], per_class: int, class_maps: list[str] | None = None) -> None:
        """Declare (at ``configure``) the layers this callback reads from the fixed set: per-sample unit
        activations of ``layers`` and per-class mean maps of ``class_maps``, so that one pass per epoch serves
        every callback that uses the same fixed set."""
        self.shared_layers = (list(layers), per_class)
        self.shared_maps = list(class_maps or [])

    def _shared_pass(self, ctx: RenderContext, per_class: int, layers: list[str], maps: list[str]) -> tuple[dict, Tensor]:
        """The cache of this epoch's fixed-set pass, after computing in one ``activation_pass`` whatever ``layers``
        and ``maps`` (and every other enabled callback's declared ones on the same set) it lacks."""
        x, y = self.fixed_set(ctx.trainer, per_class)
        cache = self.facts(ctx.trainer).cache.setdefault(("fixed_set_activations", per_class), {})
        key = self._pass_key(ctx.trainer, ctx.step, ctx.net, len(x))
        if cache.get("key") != key:
            capture = cache.get("capture")
            cache.clear()
            cache.update(key=key, acts={}, maps={})
            if capture is not None:  # gathered during this epoch's validation loop, if it saw the whole set
                capture.close()
                if capture.key == key and capture.complete():
                    cache["acts"].update(capture.stats.units)
                    cache["maps"].update(capture.stats.class_means())
        shared_units, shared_maps = self._shared_users(ctx.trainer, per_class)
        units = [n for n in dict.fromkeys([*layers, *shared_units]) if n not in cache["acts"]]
        class_maps = [n for n in dict.fromkeys([*maps, *shared_maps]) if n not in cache["maps"]]
        if units or class_maps:
            acts, means = activation_pass(ctx.net, x, units, class_maps, labels=y, num_classes=len(ctx.classes),
                                          map_classes=ctx.shown)
            cache["acts"].update(acts)
            cache["maps"].update(means)
        return cache, y

    @staticmethod
    def _shared_users(trainer: pl.Trainer, per_class: int) -> tuple[list[str], list[str]]:
        """``(unit layers, map layers)`` that the enabled callbacks declared on the fixed set of ``per_class``
        (``share_layers``), each once: what one pass (or one ``EpochCapture``) gathers for all of them."""
        units, maps = [], []
        for cb in trainer.callbacks:
            shared = getattr(cb, "shared_layers", None)
            if isinstance(cb, VisualizationCallback) and cb.enabled and shared and shared[1] == per_class:
                units += shared[0]
                maps += getattr(cb, "shared_maps", [])
        return list(dict.fromkeys(units)), list(dict.fromkeys(maps))

    @staticmethod
    def _pass_key(trainer: pl.Trainer, step: int, net: nn.Module, n: int) -> tuple:
        """What identifies one epoch's fixed-set statistics: the image step, the net, the set's size, the weights'
        version (the global step)."""
        return step, id(net), n, getattr(trainer, "global_step", 0)

    def fixed_set_activations(self, ctx: RenderContext, layers: list[str], per_class: int) -> tuple[dict[str, Tensor], Tensor]:
        """``({layer: (N, U)}, labels)`` over the fixed set, computed once per epoch for all callbacks (the cache
        lives with the data facts that every callback shares)."""
        cache, y = self._shared_pass(ctx, per_class, layers, [])
        return {name: cache["acts"][name] for name in layers}, y

    def fixed_set_class_maps(self, ctx: RenderContext, layers: list[str], per_class: int) -> dict[str, Tensor]:
        """``{layer: (len(ctx.shown), *shape)}``: each layer's output averaged over the fixed set's samples of each
        shown class, from the same once-per-epoch pass as ``fixed_set_activations``."""
        cache, _ = self._shared_pass(ctx, per_class, [], layers)
        return {name: cache["maps"][name] for name in layers}

    # -------------------------------------------------------------------------------------------- Lightning hooks
    @property
    def state_key(self) -> str:
        # Lightning reads it for every hook of every step (to name the profiler's section): built once per fit.
        if getattr(self, "_state_key", None) is None:
            self._state_key = self._generate_state_key(technique=self.technique, config=repr(self._state_config()))
        return self._state_key

    def _state_config(self) -> dict[str, Any]:
        return {}

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"probe_idx": self.probe_idx, "fixed_idx": self.fixed_idx, "scales": dict(self.scales), **self.extra_state()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.probe_idx = state_dict.get("probe_idx")
        self.fixed_idx = state_dict.get("fixed_idx")
        self.scales = dict(state_dict.get("scales") or {})
        self.load_extra_state(state_dict)

    @override
    def setup(self, trainer: pl.Trainer | None, pl_module: pl.LightningModule, stage: str) -> None:
        """Check layer names and units against the net, with the input shape of the Trainer's validation data
        (without a Trainer, as in a direct call, ``input_shape`` as set: 1x28x28 by default)."""
        self._state_key = None  # the configuration may have been changed since the Trainer was built
        if not self.enabled:
            return
        if trainer is not None:
            self.input_shape = self.facts(trainer).input_shape
        self.configure_for(self.net_of(pl_module), self.input_shape)

    def configure_for(self, net: nn.Module, input_shape: tuple[int, ...]) -> None:
        """Find every layer's output shape for inputs of ``input_shape`` (C, H, W) and ``configure``."""
        self.input_shape = tuple(input_shape)
        calls: dict[str, int] = {}
        shapes = layer_shapes(net, self.input_shape, calls)
        # Defaults and unit checks see only modules called once per forward pass: a reused module has no single output.
        self.shapes = {name: shape for name, shape in shapes.items() if calls[name] == 1}
        if getattr(self, "layers", None) is not None and len(self.layers) == 0:
            raise LayerError(
                f"{type(self).__name__}: empty layer list; leave `layers` unset for the defaults, or name some of: "
                f"{', '.join(self.shapes)}"
            )
        try:
            self.configure(net, self.shapes)
        except LayerError as e:
            raise LayerError(f"{type(self).__name__}: {e}") from None

    def _writer(self, trainer: pl.Trainer):
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        if not self._warned_no_writer:
            self._warned_no_writer = True
            rank_zero_warn(f"{type(self).__name__}: no TensorBoardLogger in the Trainer, so nothing is drawn")
        return None

    @staticmethod
    def run_dir(trainer: pl.Trainer) -> str | None:
        """The run folder, read from the logger on this rank only. ``trainer.log_dir`` broadcasts from rank zero
        under DDP, so calling it on one rank alone (as rank-zero-only code does) would leave that rank waiting."""
        logger = trainer.logger
        return getattr(logger, "log_dir", None) if logger is not None else None

    @staticmethod
    def step_of(trainer: pl.Trainer, pl_module: pl.LightningModule) -> int:
        """The image step: the epoch being trained, or, when validating a checkpoint, the epoch it was saved at."""
        if trainer.state.fn != "fit" and getattr(pl_module, "checkpoint_epoch", None) is not None:
            return int(pl_module.checkpoint_epoch)
        return trainer.current_epoch

    def should_render(self, trainer: pl.Trainer) -> bool:
        """Whether this validation draws: never in the sanity check, nor where another process draws
        (``deferred``); in the drawing process when the training process said so (``drawing_due``); else
        ``due``."""
        if not self.enabled or trainer.sanity_checking or self.deferred:
            return False
        if trainer.state.fn != "fit":
            # a drawing process (``Drawer``) says which epochs; `train.py validate --ckpt_path ...`: the user asked
            return True if self.drawing_due is None else self.drawing_due
        return self.due(trainer)

    def due(self, trainer: pl.Trainer) -> bool:
        """Whether the fit's current epoch is one to draw: every ``every_n_epochs``-th, and the last."""
        if not self.enabled:
            return False
        epoch = trainer.current_epoch
        last = trainer.state.fn == "fit" and trainer.max_epochs is not None and epoch == trainer.max_epochs - 1
        return (epoch + 1) % self.every_n_epochs == 0 or last

    def _start_capture(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Set up this epoch's ``EpochCapture`` of the fixed set (once for all callbacks that share it), where the
        validation batches are the validation samples in order."""
        per_class = self.shared_layers[1]
        facts = self.facts(trainer)
        size = sequential_batch_size(trainer, facts)
        cache = facts.cache.setdefault(("fixed_set_activations", per_class), {})
        net = self.net_of(pl_module)
        if net is not getattr(pl_module, "net", pl_module):
            return  # torch.compile'd: hooks on the eager module do not fire in the compiled validation pass
        x, y = self.fixed_set(trainer, per_class)
        key = self._pass_key(trainer, self.step_of(trainer, pl_module), net, len(x))
        if size is None or cache.get("key") == key or (cache.get("capture") and cache["capture"].key == key):
            return
        stats = ActivationStats(*self._shared_users(trainer, per_class), len(x), len(facts.classes), facts.shown_classes())
        cache["capture"] = self._capture = EpochCapture(net, stats, self.fixed_idx, y, len(facts.labels()), size, key)

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.shared_layers and self.should_render(trainer) and trainer.is_global_zero:
            self._start_capture(trainer, pl_module)

    @override
    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._capture is not None:
            if dataloader_idx == 0:
                self._capture.add(batch, batch_idx)
            else:
                self._capture.close(failed=True)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        try:
            if self.should_render(trainer):
                self.draw(trainer, pl_module)
        finally:
            self._stop_capture()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._stop_capture()

    def _stop_capture(self) -> None:
        if self._capture is not None:
            self._capture.close()
            self._capture = None

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int | None = None) -> None:
        """Build the render context and call ``render`` on rank zero, with fault isolation and timing (``step``:
        the image step, default ``step_of``)."""
        if not trainer.is_global_zero:
            return
        writer = self._writer(trainer)
        if writer is None:
            return
        net = self.net_of(pl_module)
        facts = self.facts(trainer)
        ctx = RenderContext(
            trainer=trainer,
            net=net,
            writer=writer,
            step=self.step_of(trainer, pl_module) if step is None else step,
            classes=facts.classes,
            pixel_range=facts.pixel_range,
            callback=self,
            input_shape=facts.input_shape,
            shown=facts.shown_classes(),
        )
        t0 = time.perf_counter()
        try:
            with eval_mode(net), torch.no_grad(), no_autocast(net):  # float32 pictures under mixed precision too
                self.render(ctx)
        except Exception as e:  # fault isolation: one broken picture must not end a training run
            if self.strict:
                raise
            rank_zero_warn(
                f"{type(self).__name__} ({self.technique}/...) failed at epoch {ctx.step} after logging "
                f"{ctx.logged or 'nothing'}: {type(e).__name__}: {e}. Training goes on; pass strict=True to stop."
            )
        finally:
            self.seconds.append(time.perf_counter() - t0)


class FixedSetCallback(VisualizationCallback):
    """Base of the visualizations computed over the fixed, class-balanced validation set.

    Args:
        layers: layers to analyse (each subclass has its default).
        per_class: samples per class in the fixed validation set (the source project used 500).
    """

    def __init__(self, layers: list[str] | None = None, per_class: int = 500, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(per_class, int) or per_class < 1:
            raise ValueError(f"{type(self).__name__}: per_class must be an integer >= 1, got {per_class!r}")
        self.layers = layers
        self.per_class = per_class

    def _state_config(self):
        return {"layers": self.layers}
