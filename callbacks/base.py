"""The shared base of every visualization callback.

A subclass names its ``technique`` (the tag prefix), checks and resolves its layers in ``configure`` and draws in
``render``. The base handles the rest:

- ``every_n_epochs`` and ``enabled``; nothing is drawn during the sanity check;
- layer names and unit indices checked at ``setup``, before the first training step (``LayerError`` lists the
  valid names);
- fixed probe sets: the first validation images of each class (``probe_images``) and a class-balanced set of up
  to ``per_class`` validation samples (``fixed_set``), chosen once and kept in the callback's state, so every
  epoch, a resumed run and ``train.py validate`` show the same inputs;
- what callbacks share goes through the Trainer's ``Coordinator`` (``callbacks.coordinator``): the fixed-set layers
  a callback reads are registered at ``setup`` (``share_layers``), one pass per epoch serves them all
  (``fixed_set_activations``, ``fixed_set_class_maps``), and every logged picture is published to its listeners;
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

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor, nn
from typing_extensions import override

from .coordinator import SharedPass, Source, coordinator_of
from .data import FIXED_SET_MAX, DataFacts, choose_per_class, data_facts, default_shown, set_budget
from .figures import bounded, to_png, to_uint8
from .hooks import LayerError, NoDefaultLayer, eval_mode, layer_shapes, no_autocast, spread
from .layers import layer_roles

MAX_DEFAULT_LAYERS = 4  # default layers of a callback on a deep net: this many, spread over its depth
HISTOGRAM_VALUES = 16384  # values a histogram is made of, at most (``RenderContext.add_histogram``)
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
    callback: VisualizationCallback
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
        palette PNG where faithful), and return the PNG. The Trainer's coordinator publishes the same bytes to its
        snapshot listeners (such as the evolution callback)."""
        img = bounded(img if img.dtype == torch.uint8 else to_uint8(img))  # at most MAX_WIDTH x MAX_HEIGHT
        png = to_png(img)
        image = Summary.Image(height=img.shape[1], width=img.shape[2], colorspace=3, encoded_image_string=png)
        self.writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), self.step)
        self.logged.append(tag)
        coordinator_of(self.trainer).publish(tag, self.step, png, Source.of(self.callback))
        return png

    def add_scalar(self, tag: str, value: float) -> None:
        self.writer.add_scalar(tag, float(value), self.step)
        self.logged.append(tag)

    def add_histogram(self, tag: str, values: Tensor, max_values: int = HISTOGRAM_VALUES) -> None:
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


def once_called_shapes(net: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """``{name: output shape}`` of the modules called once per forward pass, in the order they finished: what
    defaults and unit checks see (a reused module, such as torchvision ResNet's ``relu``, has no single output)."""
    calls: dict[str, int] = {}
    shapes = layer_shapes(net, tuple(input_shape), calls)
    return {name: shape for name, shape in shapes.items() if calls[name] == 1}


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
    capture_bytes: int = 2**29  # the captured maps of one pass, every layer together, at most about this many bytes
    at_validation: bool = True  # draws at validation ends (so a ``Drawing`` process may draw it); False: at fit start
    layer_args: tuple[str, ...] = ("layers",)  # the arguments that name layers; all None: the defaults are used
    layer_example: str = "'[{}]'"  # how the first of them is written on the command line, for one layer

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
        self.shared_layers: tuple[list[str], int] | None = None  # declared by ``configure`` (``share_layers``)
        self.shared_maps: list[str] = []
        self._fetched: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        self._charts: dict = {}  # matplotlib charts kept between epochs (LiveFigure), rebuilt where they are drawn
        self._warned_no_writer = False
        self._state_key: str | None = None
        self.deferred = False  # set by ``Drawing`` in the training process: another process draws these pictures
        self.off_reason: str | None = None  # why no default layer fits this net: then nothing is drawn this fit
        self.unsuited: str | None = None  # set by ``configure``: why no default layer suits the technique
        self.drawing_due: bool | None = None  # set by ``Drawer`` in the drawing process: draw at this validation

    def __getstate__(self) -> dict[str, Any]:
        # matplotlib figures and hooks do not pickle; they are rebuilt where used
        return {**self.__dict__, "_charts": {}, "_fetched": {}}  # (images are fetched again)

    # ----------------------------------------------------------------------------------------- for subclasses
    def configure(self, net: nn.Module, shapes: dict[str, tuple[int, ...]]) -> None:
        """Resolve default layers and check names and unit indices (raise ``LayerError``)."""

    def render(self, ctx: RenderContext) -> None:
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def drawn_layers(self) -> list[str] | None:
        """The layers this callback draws, as ``configure`` resolved them (``layer_names``, or ``layer_name``); None
        for a callback that draws the net as a whole (occlusion, the confusion matrix)."""
        if "layer_names" in self.__dict__:
            return list(self.layer_names)
        if "layer_name" in self.__dict__:
            return [self.layer_name] if self.layer_name else []
        return None

    def uses_default_layers(self) -> bool:
        """Whether no layer was named (every argument of ``layer_args`` is None), so ``configure`` chose them."""
        return bool(self.layer_args) and all(getattr(self, a, None) is None for a in self.layer_args)

    # -------------------------------------------------------------------------------------------------- helpers
    def capture_batch(self, x: Tensor, layers: list[str], most: int) -> int:
        """Images per pass where a pass keeps every map of ``layers``: at most ``most``, fewer where those maps of
        one batch would pass ``capture_bytes`` (a 224 px ResNet-50's first stages hold megabytes per image)."""
        per_image = sum(math.prod(self.shapes.get(n, (1,))) for n in layers) * x.element_size()
        scale = math.prod(x.shape[-2:]) / math.prod(self.input_shape[-2:])  # shapes are for input_shape's size
        return max(1, min(most, int(self.capture_bytes // max(1.0, per_image * scale))))

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

    def _fixed(
        self, trainer: pl.Trainer, attr: str, per_class: int, total: int = FIXED_SET_MAX
    ) -> tuple[Tensor, Tensor]:
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
        activations of ``layers`` and per-class mean maps of ``class_maps``. ``setup`` registers them with the
        Trainer's coordinator, so that one pass per epoch serves every callback that uses the same fixed set."""
        self.shared_layers = (list(layers), per_class)
        self.shared_maps = list(class_maps or [])

    def register_with(self, trainer: pl.Trainer) -> None:
        """Register this callback's technique and declared fixed-set layers with ``trainer``'s coordinator,
        replacing what it registered before; a disabled callback withdraws instead (``setup`` calls this)."""
        hub = coordinator_of(trainer)
        if not self.enabled:
            hub.unregister(self)
            return
        layers, per_class = self.shared_layers or ([], None)
        hub.register(self, self.technique, per_class, layers, self.shared_maps)

    def _shared_pass(
        self, ctx: RenderContext, per_class: int, layers: list[str], maps: list[str]
    ) -> tuple[SharedPass, Tensor]:
        """This epoch's statistics of the fixed set of ``per_class`` (a ``coordinator.SharedPass``) holding
        ``layers`` and ``maps``, and the set's labels."""
        x, y = self.fixed_set(ctx.trainer, per_class)
        hub = coordinator_of(ctx.trainer)
        shared = hub.fixed_set_pass(
            ctx.trainer, ctx.net, ctx.step, per_class, x, y, layers, maps, len(ctx.classes), ctx.shown
        )
        return shared, y

    def fixed_set_activations(
        self, ctx: RenderContext, layers: list[str], per_class: int
    ) -> tuple[dict[str, Tensor], Tensor]:
        """``({layer: (N, U)}, labels)`` over the fixed set, computed once per epoch for all callbacks (by the
        Trainer's coordinator)."""
        shared, y = self._shared_pass(ctx, per_class, layers, [])
        return {name: shared.acts[name] for name in layers}, y

    def fixed_set_class_maps(self, ctx: RenderContext, layers: list[str], per_class: int) -> dict[str, Tensor]:
        """``{layer: (len(ctx.shown), *shape)}``: each layer's output averaged over the fixed set's samples of each
        shown class, from the same once-per-epoch pass as ``fixed_set_activations``."""
        shared, _ = self._shared_pass(ctx, per_class, [], layers)
        return {name: shared.maps[name] for name in layers}

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
        return {
            "probe_idx": self.probe_idx,
            "fixed_idx": self.fixed_idx,
            "scales": dict(self.scales),
            **self.extra_state(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.probe_idx = state_dict.get("probe_idx")
        self.fixed_idx = state_dict.get("fixed_idx")
        self.scales = dict(state_dict.get("scales") or {})
        self.load_extra_state(state_dict)

    @override
    def setup(self, trainer: pl.Trainer | None, pl_module: pl.LightningModule, stage: str) -> None:
        """Check layer names and units against the net, with the input shape of the Trainer's validation data
        (without a Trainer, as in a direct call, ``input_shape`` as set: 1x28x28 by default), and register with
        the Trainer's coordinator (again at each setup: each fit or validate)."""
        self._state_key = None  # the configuration may have been changed since the Trainer was built
        if trainer is not None:
            coordinator_of(trainer).unregister(self)  # until configured again: a layer error leaves nothing behind
        if not self.enabled:
            return
        if trainer is not None:
            self.input_shape = self.facts(trainer).input_shape
        self.configure_for(self.net_of(pl_module), self.input_shape)
        if trainer is not None and self.off_reason is None:
            self.register_with(trainer)
        if stage == "fit" and self.uses_default_layers() and self.off_reason is None and self.drawn_layers():
            rank_zero_info(
                f"convscope: {self.technique} draws {', '.join(self.drawn_layers())} (chosen by default; name others "
                f"with --{self.technique}.{self.layer_args[0]})"
            )

    def configure_for(
        self, net: nn.Module, input_shape: tuple[int, ...], shapes: dict[str, tuple[int, ...]] | None = None
    ) -> None:
        """Find every layer's output shape for inputs of ``input_shape`` (C, H, W) and ``configure`` (``shapes``:
        ``once_called_shapes(net, input_shape)`` when already known)."""
        self.input_shape = tuple(input_shape)
        self.shapes = once_called_shapes(net, self.input_shape) if shapes is None else dict(shapes)
        self.shared_layers, self.shared_maps = None, []  # ``configure`` declares them again
        if getattr(self, "layers", None) is not None and len(self.layers) == 0:
            raise LayerError(
                f"{type(self).__name__}: empty layer list; leave `layers` unset for the defaults, or name some of: "
                f"{', '.join(self.shapes)}"
            )
        self.off_reason = self.unsuited = None
        try:
            self.configure(net, self.shapes)
        except LayerError as e:  # the default-layer search gave up (NoDefaultLayer): a warning (an error if strict)
            if not (self.uses_default_layers() and isinstance(e, NoDefaultLayer)):
                raise LayerError(f"{type(self).__name__}: {e}") from None
            reason = f"{e}. {self._no_default_help(net)}"
            if self.strict:
                raise LayerError(f"{type(self).__name__}: {reason}") from None
            self._turn_off(reason)
            return
        if self.uses_default_layers() and self.drawn_layers() == []:  # the technique does not apply to this net
            self._turn_off(f"{self.unsuited or 'no layer of this net suits it'}. {self._no_default_help(net)}")

    def _no_default_help(self, net: nn.Module) -> str:
        """What the default-layer search saw (``layers.layer_roles``), and the option that names layers instead."""
        roles = layer_roles(net, self.shapes)
        saw = f"stages {', '.join(roles.stages)}" if roles.stages else "no conv stage"
        saw += f"; hidden fully-connected layers {', '.join(roles.hidden)}" if roles.hidden else ""
        spatial = ", ".join(roles.body[:12]) + (" ..." if len(roles.body) > 12 else "")
        arg = self.layer_args[0] if self.layer_args else "layers"
        others = [n for n in roles.order if n != roles.logits]
        example = roles.features[-1:] or roles.body[-1:] or roles.hidden[-1:] or others[-1:] or ["<layer>"]
        return (
            f"The default-layer search saw {saw}"
            + (f" (spatial layers: {spatial})" if roles.body else "")
            + f". Name layers with --{self.technique}.{arg} {self.layer_example.format(example[0])}"
        )

    def _turn_off(self, reason: str) -> None:
        """No default layer fits: this callback draws nothing this fit, with one warning (not one per setup)."""
        if reason != getattr(self, "_off_warned", None):
            self._off_warned = reason
            rank_zero_warn(f"{type(self).__name__} is off for this net: {reason}")
        self.off_reason = reason

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
        if not self.enabled or self.off_reason is not None or trainer.sanity_checking or self.deferred:
            return False
        if trainer.state.fn != "fit":
            # a drawing process (``Drawer``) says which epochs; `train.py validate --ckpt_path ...`: the user asked
            return True if self.drawing_due is None else self.drawing_due
        return self.due(trainer)

    def due(self, trainer: pl.Trainer) -> bool:
        """Whether the fit's current epoch is one to draw: every ``every_n_epochs``-th, and the last."""
        if not self.enabled or self.off_reason is not None:
            return False
        epoch = trainer.current_epoch
        last = trainer.state.fn == "fit" and trainer.max_epochs is not None and epoch == trainer.max_epochs - 1
        return (epoch + 1) % self.every_n_epochs == 0 or last

    def _start_capture(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Have the coordinator gather this epoch's fixed-set statistics from the validation loop's passes (once
        for all callbacks that share the set)."""
        net = self.net_of(pl_module)
        if net is not getattr(pl_module, "net", pl_module):
            return  # torch.compile'd: hooks on the eager module do not fire in the compiled validation pass
        per_class = self.shared_layers[1]
        _, y = self.fixed_set(trainer, per_class)
        coordinator_of(trainer).start_capture(
            self, trainer, net, self.step_of(trainer, pl_module), per_class, self.fixed_idx, y
        )

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.shared_layers and self.should_render(trainer) and trainer.is_global_zero:
            self._start_capture(trainer, pl_module)

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
        coordinator_of(trainer).feed(self, batch, batch_idx, dataloader_idx)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        try:
            if self.should_render(trainer):
                self.draw(trainer, pl_module)
        finally:
            coordinator_of(trainer).stop_capture(self)

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        coordinator_of(trainer).stop_capture(self)

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
