"""A technique: one kind of picture, as a plain object (no Lightning). The ``Convscope`` callback owns and runs them.

    class Filters(Technique):
        technique = "filters"                          # the tag prefix and the CLI key
        def configure(self, net, shapes): ...          # resolve default layers, check names (raise LayerError)
        def render(self, ctx: RenderContext): ...      # draw from what the owner hands over: ctx.probe_images(), ...

A technique holds its arguments, the layers ``configure`` resolved, its colour scales (``scale``) and what it keeps
between epochs (``extra_state``). Everything techniques share lives with the owner (``callbacks.scope``): the
schedule, the fixed image sets, the once-per-epoch pass over them, the writer, fault isolation and the drawing mode.
A ``RenderContext`` is the technique's one window onto it.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from .data import FIXED_SET_MAX, DataFacts
from .figures import bounded, to_png, to_uint8
from .hooks import LayerError, NoDefaultLayer, TopActivations, batch_within, layer_shapes, spread
from .layers import layer_roles

MAX_DEFAULT_LAYERS = 4  # default layers of a technique on a deep net: this many, spread over its depth
HISTOGRAM_VALUES = 16384  # values a histogram is made of, at most (``RenderContext.add_histogram``)

__all__ = [
    "Technique",
    "FixedSetTechnique",
    "RenderContext",
    "Services",
    "check_arg",
    "positive_int",
    "layer_list",
    "tag_part",
    "nice_ceil",
    "once_called_shapes",
    "LayerError",
]


def check_arg(owner: Any, name: str, value: Any, ok: bool, valid: str) -> None:
    """The one argument check: ``ValueError`` naming the class, the argument, what was given and what is valid,
    unless ``ok``. ``check_arg(self, "per_class", per_class, isinstance(per_class, int) and per_class >= 1,
    "an integer >= 1")``."""
    if not ok:
        what = owner if isinstance(owner, str) else type(owner).__name__
        raise ValueError(f"{what}: {name} must be {valid}, got {value!r}")


def int_at_least(owner: Any, name: str, value: Any, least: int) -> None:
    """``check_arg`` for a count: an integer (not a bool) >= ``least``."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= least
    check_arg(owner, name, value, ok, f"an integer >= {least}")


def positive_int(owner: Any, name: str, value: Any) -> None:
    """``check_arg`` for the commonest rule: an integer >= 1."""
    int_at_least(owner, name, value, 1)


def layer_list(owner: Any, value: Any, valid: str = "a list of layer names or None (the default)") -> None:
    """``check_arg`` for a ``layers`` argument: None, or layer names (not one bare string)."""
    ok = value is None or (not isinstance(value, str) and all(isinstance(n, str) for n in value))
    check_arg(owner, "layers", value, ok, valid)


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


def once_called_shapes(net: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """``{name: output shape}`` of the modules called once per forward pass, in the order they finished: what
    defaults and unit checks see (a reused module, such as torchvision ResNet's ``relu``, has no single output)."""
    calls: dict[str, int] = {}
    shapes = layer_shapes(net, tuple(input_shape), calls)
    return {name: shape for name, shape in shapes.items() if calls[name] == 1}


class Services(Protocol):
    """What the owner (``callbacks.scope.Scope``) hands a render: the fixed sets, the shared pass, measurements of
    other techniques, and the writer."""

    facts: DataFacts

    def fixed(self, technique: Technique, kind: str, per_class: int, total: int) -> tuple[Tensor, Tensor]: ...

    def shared_pass(
        self, technique: Technique, per_class: int, units: Sequence[str], maps: Sequence[str], ctx: RenderContext
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]: ...

    def write_image(self, ctx: RenderContext, tag: str, img: Tensor) -> bytes: ...


@dataclass
class RenderContext:
    """What ``render`` gets: the net in eval mode, the writer, the epoch (``step``), the data's facts and the owner's
    services (``scope``): the fixed images, the shared pass, what other techniques measured."""

    net: nn.Module
    writer: Any  # torch.utils.tensorboard.SummaryWriter
    step: int
    technique: Technique
    scope: Any  # callbacks.scope.Scope (``Services``)
    run_dir: str | None = None  # the run folder (files beside the event file), None without one
    fit_last_epoch: int | None = None  # the last epoch of the fit being drawn; None outside a fit
    logged: list[str] = field(default_factory=list)

    @property
    def facts(self) -> DataFacts:
        return self.scope.facts

    @property
    def classes(self) -> tuple[str, ...]:
        return self.scope.facts.classes

    @property
    def pixel_range(self) -> tuple[float, float]:
        return self.scope.facts.pixel_range

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.scope.facts.input_shape

    @property
    def shown(self) -> tuple[int, ...]:
        return self.scope.facts.shown_classes()

    # ------------------------------------------------------------------------------------------- the data
    def probe_images(self, per_class: int = 1) -> tuple[Tensor, Tensor]:
        """``(images, labels)``: the first ``per_class`` validation images of each shown class, fixed for the run."""
        return self.scope.fixed(self.technique, "probe", per_class, FIXED_SET_MAX)

    def fixed_set(self, per_class: int, total: int = FIXED_SET_MAX) -> tuple[Tensor, Tensor]:
        """``(x, y)``: up to ``per_class`` validation samples of each class (at most ``total`` in all), fixed for the
        run and shared by every technique that asks for the same set."""
        return self.scope.fixed(self.technique, "set", per_class, total)

    def fixed_set_activations(self, layers: list[str], per_class: int) -> tuple[dict[str, Tensor], Tensor]:
        """``({layer: (N, U)}, labels)`` over the fixed set of ``per_class``, from the owner's one pass per epoch."""
        shared = self.scope.shared_pass(self.technique, per_class, layers, [], self)
        return {name: shared.acts[name] for name in layers}, shared.y

    def fixed_set_tops(self, layers: list[str], per_class: int, k: int) -> dict[str, TopActivations]:
        """``{layer: TopActivations}``: the ``k`` samples of the fixed set of ``per_class`` that activate each unit of
        each layer most (``hooks.RunningTop``; ``indices`` index the set), from the same pass."""
        tops = self.scope.shared_pass(self.technique, per_class, [], [], self, tops=(layers, k)).tops
        return {name: TopActivations(*(t[:, :k] if t is not None else None for t in tops[name])) for name in layers}

    def fixed_set_class_maps(self, layers: list[str], per_class: int) -> dict[str, Tensor]:
        """``{layer: (len(shown), *shape)}``: each layer's output averaged over the fixed set's samples of each shown
        class, from the same pass as ``fixed_set_activations``."""
        maps = self.scope.shared_pass(self.technique, per_class, [], layers, self).maps
        return {name: maps[name] for name in layers}

    def train_samples(self, per_class: int) -> tuple[Tensor, Tensor]:
        """The first ``per_class`` training samples of each shown class."""
        return self.scope.train_samples(per_class, self.shown)

    def val_predictions(self) -> tuple[Tensor, Tensor] | None:
        """``(predictions, labels)`` of the whole validation split from this epoch's validation loop, gathered once by
        the owner for the techniques that ask (``Technique.wants_predictions``); None where it has none."""
        return self.scope.val_predictions()

    def post(self, key: str, value: Any) -> None:
        """Keep what this technique measured of ``key`` (a layer) at this step, for another technique to reuse."""
        self.scope.post(self.technique.technique, key, self.step, value)

    def result(self, technique: str, key: str) -> Any:
        """What ``technique`` posted of ``key`` at this step, or None."""
        return self.scope.result(technique, key, self.step)

    # ------------------------------------------------------------------------------------------- the labels
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

    # ------------------------------------------------------------------------------------------- logging
    def add_image(self, tag: str, img: Tensor) -> bytes:
        """Log a ``(3, H, W)`` image, uint8 or float in [0, 1] (NaN-safe), encoded once by ``figures.to_png`` (a
        palette PNG where faithful), and return the PNG; the owner hands the same bytes to the evolution technique."""
        img = bounded(img if img.dtype == torch.uint8 else to_uint8(img))  # at most MAX_WIDTH x MAX_HEIGHT
        png = to_png(img)
        self.scope.write_image(self, tag, img, png)
        self.logged.append(tag)
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
        values = values[values.isfinite()]
        if values.numel():
            self.writer.add_histogram(tag, values, self.step)
            self.logged.append(tag)


class Technique:
    """Base class: subclasses set ``technique`` and implement ``configure`` and ``render``.

    Args:
        enabled: turn this technique off without removing it from the config.
        every_n_epochs: draw after every n epochs: at 0-based epochs n - 1, 2n - 1, ... (as Lightning's
            ``check_val_every_n_epoch``; n = 1: every epoch), and always at the last epoch of a fit.
        strict: re-raise errors from the technique instead of warning and going on.
    """

    technique: str = "visualization"  # the tag prefix and the key on the command line
    class_tags: bool = False  # tags are <technique>/<class>, one picture per class (no layer part)
    evolves: bool = True  # drawn at several epochs, so the evolution technique may stack its snapshots
    max_default_layers: int = MAX_DEFAULT_LAYERS  # default layers (``layers.layer_roles``) beyond this many are thinned
    capture_bytes: int = 2**29  # the captured maps of one pass, every layer together, at most about this many bytes
    when: str = "validation"  # drawn at validation ends; "fit_start": once when fit starts; "fit_end": once at its end
    wants_predictions: bool = False  # reads the validation loop's predictions (``RenderContext.val_predictions``)
    layer_args: tuple[str, ...] = ("layers",)  # the arguments that name layers; all None: the defaults are used
    layer_example: str = "'[{}]'"  # how the first of them is written on the command line, for one layer

    def __init__(self, enabled: bool = True, every_n_epochs: int = 1, strict: bool = False) -> None:
        positive_int(self, "every_n_epochs", every_n_epochs)
        self.enabled = enabled
        self.every_n_epochs = every_n_epochs
        self.strict = strict
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.input_shape: tuple[int, ...] | None = None  # (C, H, W) of the data, set by ``configure_for``
        self.probe_idx: Tensor | None = None  # the validation indices of the probe images it drew last (for reading)
        self.fixed_idx: Tensor | None = None  # and of the fixed set
        self.seconds: list[float] = []  # time spent per rendered epoch (for benchmarks)
        self.scales: dict[str, float] = {}  # colour-scale limits kept across epochs (see ``scale``)
        self.shared_layers: tuple[list[str], int] | None = None  # declared by ``configure`` (``share_layers``)
        self.shared_maps: list[str] = []
        self.shared_top_k = 0  # top samples per unit of the declared layers
        self._charts: dict = {}  # matplotlib charts kept between epochs (LiveFigure), rebuilt where they are drawn
        self.off_reason: str | None = None  # why no default layer fits this net: then nothing is drawn this fit
        self.unsuited: str | None = None  # set by ``configure``: why no default layer suits the technique

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_charts": {}}  # matplotlib figures do not pickle; they are rebuilt where used

    # ----------------------------------------------------------------------------------------- for subclasses
    def configure(self, net: nn.Module, shapes: dict[str, tuple[int, ...]]) -> None:
        """Resolve default layers and check names and unit indices (raise ``LayerError``)."""

    def render(self, ctx: RenderContext) -> None:
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def config(self) -> dict[str, Any]:
        """The arguments that tell two techniques of one kind apart in a checkpoint (its layers)."""
        return {}

    def shared_per_class(self, num_classes: int) -> int:
        """The per-class size of the fixed set the declared layers are read on (``share_layers``' ``per_class``)."""
        return self.shared_layers[1]

    def ready(self) -> bool:
        """Whether a ``fit_end`` technique has something to draw."""
        return True

    def share_layers(
        self, layers: list[str], per_class: int, class_maps: list[str] | None = None, top_k: int = 0
    ) -> None:
        """Declare (at ``configure``) the layers this technique reads from the fixed set of ``per_class``: per-sample
        unit activations of ``layers``, per-class mean maps of ``class_maps`` and, with ``top_k``, the ``top_k``
        samples of each unit of ``layers``. The owner gathers every declared layer in one pass per epoch, from the
        validation loop's own forward passes where it can."""
        self.shared_layers = (list(layers), per_class)
        self.shared_maps = list(class_maps or [])
        self.shared_top_k = top_k

    # -------------------------------------------------------------------------------------------------- state
    def get_state(self) -> dict[str, Any]:
        """What a checkpoint keeps of this technique: its colour scales and its ``extra_state``."""
        return {"scales": dict(self.scales), **self.extra_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.scales = dict(state.get("scales") or {})
        self.load_extra_state(state)

    # -------------------------------------------------------------------------------------------------- helpers
    def drawn_layers(self) -> list[str] | None:
        """The layers this technique draws, as ``configure`` resolved them (``layer_names``, or ``layer_name``); None
        for a technique that draws the net as a whole (occlusion, the confusion matrix)."""
        if "layer_names" in self.__dict__:
            return list(self.layer_names)
        if "layer_name" in self.__dict__:
            return [self.layer_name] if self.layer_name else []
        return None

    def uses_default_layers(self) -> bool:
        """Whether no layer was named (every argument of ``layer_args`` is None), so ``configure`` chose them."""
        return bool(self.layer_args) and all(getattr(self, a, None) is None for a in self.layer_args)

    def due(self, epoch: int, last_epoch: int | None) -> bool:
        """Whether 0-based ``epoch`` of a fit is one to draw: every ``every_n_epochs``-th, and the last."""
        if not self.enabled or self.off_reason is not None or self.when != "validation":
            return False
        return (epoch + 1) % self.every_n_epochs == 0 or epoch == last_epoch

    def capture_batch(self, x: Tensor, layers: list[str], most: int) -> int:
        """Images like ``x`` per pass that keeps every map of ``layers``: ``hooks.batch_within`` ``capture_bytes``
        (a 224 px ResNet-50's first stages hold megabytes per image)."""
        scale = math.prod(x.shape[-2:]) / math.prod((self.input_shape or x.shape[1:])[-2:])  # shapes: input_shape's
        return batch_within(self.shapes, layers, x.element_size(), most, self.capture_bytes, scale)

    def backward_batch(self, x: Tensor, most: int) -> int:
        """Images like ``x`` per pass through the net and back (actmax, deconvnet projections), which keeps every
        layer's map for the backward pass: ``capture_batch`` of every layer."""
        return self.capture_batch(x, list(self.shapes), most)

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

    def configure_for(
        self, net: nn.Module, input_shape: tuple[int, ...], shapes: dict[str, tuple[int, ...]] | None = None
    ) -> None:
        """Find every layer's output shape for inputs of ``input_shape`` (C, H, W) and ``configure`` (``shapes``:
        ``once_called_shapes(net, input_shape)`` when already known). A default-layer search that gave up turns the
        technique off (``off_reason``; an error if ``strict``); a wrong name is an error."""
        self.input_shape = tuple(input_shape)
        self.shapes = once_called_shapes(net, self.input_shape) if shapes is None else dict(shapes)
        self.shared_layers, self.shared_maps, self.shared_top_k = None, [], 0  # ``configure`` declares them again
        if getattr(self, "layers", None) is not None and len(self.layers) == 0:
            raise LayerError(
                f"{type(self).__name__}: empty layer list; leave `layers` unset for the defaults, or name some of: "
                f"{', '.join(self.shapes)}"
            )
        self.off_reason = self.unsuited = None
        try:
            self.configure(net, self.shapes)
        except LayerError as e:  # the default-layer search gave up (NoDefaultLayer): off (an error if strict)
            if not (self.uses_default_layers() and isinstance(e, NoDefaultLayer)):
                raise LayerError(f"{type(self).__name__}: {e}") from None
            reason = f"{e}. {self._no_default_help(net)}"
            if self.strict:
                raise LayerError(f"{type(self).__name__}: {reason}") from None
            self._turn_off(reason)
            return
        if self.uses_default_layers() and self.drawn_layers() == []:  # the technique does not apply to this net
            self._turn_off(f"{self.unsuited or 'no layer of this net suits it'}. {self._no_default_help(net)}")

    def _turn_off(self, reason: str) -> None:
        """No default layer fits: this technique draws nothing this fit, with one warning (not one per setup)."""
        if reason != getattr(self, "_off_warned", None):
            self._off_warned = reason
            warnings.warn(f"{type(self).__name__} is off for this net: {reason}", UserWarning, stacklevel=3)
        self.off_reason = reason

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


class FixedSetTechnique(Technique):
    """Base of the techniques computed over the fixed, class-balanced validation set.

    Args:
        layers: layers to analyse (each subclass has its default).
        per_class: samples per class in the fixed validation set (the source project used 500).
    """

    def __init__(self, layers: list[str] | None = None, per_class: int = 500, **kwargs) -> None:
        super().__init__(**kwargs)
        positive_int(self, "per_class", per_class)
        self.layers = layers
        self.per_class = per_class

    def config(self):
        return {"layers": self.layers}
