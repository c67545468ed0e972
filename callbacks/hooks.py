"""Forward-hook activation capture and layer-name checks shared by every visualization.

acts = capture_activations(net, x, ["conv_1", "relu_1"])   # {"conv_1": (N, 6, 28, 28), "relu_1": ...}
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "NoDefaultLayer",
    "COMPILED_PREFIX",
    "layer_name",
    "LayerProbe",
    "ActivationStats",
    "RunningTop",
    "TopActivations",
    "FixedSetPass",
    "check_images",
    "as_int",
    "spread",
    "capture_activations",
    "forward_with_activations",
    "collect_activations",
    "activation_pass",
    "check_unit_range",
    "layer_shapes",
    "batch_within",
    "dry_pass",
    "check_layers",
    "check_units",
    "eval_mode",
    "no_autocast",
    "LayerError",
]


PASS_BYTES = 2**29  # the captured maps of one ``activation_pass`` batch, every layer together, at most about this
COMPILED_PREFIX = "_orig_mod."  # what a torch.compile'd net's named_modules() put in front of each eager name


class LayerError(ValueError):
    """A layer name or unit index that the net does not have."""


class NoDefaultLayer(LayerError):
    """No layer named, and the default-layer search found none for the technique: the callback is off for this net
    (an error only when strict), where a wrong name or unit is always an error."""


def layer_name(name: str) -> str:
    """``name`` without the ``_orig_mod.`` prefix of a ``torch.compile``d net's module names: layers are named as in
    the eager net that the pictures are drawn from (``VisualizationCallback.net_of``), however the user copied them."""
    while isinstance(name, str) and name.startswith(COMPILED_PREFIX):
        name = name[len(COMPILED_PREFIX) :]
    return name


def check_images(images: Tensor) -> None:
    """Raise ``ValueError`` unless ``images`` is a 4-D floating-point tensor ``(N, C, H, W)``."""
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a tensor shaped (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must be a 4-D tensor (N, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a floating-point tensor, got dtype {images.dtype}")


def as_int(value, name: str) -> int:
    """``value`` as an ``int`` (any integer type, not ``bool``), or ``ValueError`` naming ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _modules(net: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in net.named_modules() if name}


def check_layers(net: nn.Module, layers: Sequence[str], what: str = "layer") -> list[str]:
    """Return ``layers`` as a list of the net's names (``layer_name``: a compiled net's ``_orig_mod.`` prefix
    dropped), or raise ``LayerError`` naming the unknown ones and listing the valid names. Callbacks keep the names
    it returns, so a user's names work with and without the prefix."""
    modules = _modules(net)
    names = [layer_name(name) for name in layers]
    unknown = [given for given, name in zip(layers, names) if name not in modules]
    if unknown:
        raise LayerError(f"unknown {what} name(s) {unknown} for {type(net).__name__}; valid: {', '.join(modules)}")
    return names


class LayerProbe:
    """Forward hooks on named layers that keep each one's latest output (``outputs``; tensors detached unless
    ``detach=False``) and count its calls, until ``remove()`` (or the end of a ``with`` block). The one hook
    mechanism of convscope: a single forward pass (``capture_activations``), the dry pass that finds every layer's
    shape (``layer_shapes``) and a whole validation epoch (``base``'s fixed-set statistics) all use it.

    ``stop_after_last``: raise ``LayerProbe.Stop`` once every layer has run, so the forward pass ends at the deepest
    requested layer (the net's output is then not computed). ``keep_first``: keep each layer's first output of
    the pass instead of its latest (a module that runs several times per pass)."""

    class Stop(Exception):
        """Raised from the last requested layer's hook when the forward pass may end there."""

    def __init__(
        self,
        net: nn.Module,
        layers: Sequence[str],
        detach: bool = True,
        stop_after_last: bool = False,
        keep_first: bool = False,
    ) -> None:
        names = dict(zip(layers, check_layers(net, layers)))  # as given -> the net's own name
        modules = _modules(net)
        self.outputs: dict[str, Tensor] = {}
        self.calls = {name: 0 for name in layers}
        self._detach, self._stop, self._first = detach, stop_after_last, keep_first
        self._net = net
        self._handles = [modules[own].register_forward_hook(self._hook(name)) for name, own in names.items()]

    def _hook(self, name: str):
        def fn(module: nn.Module, inputs, output: Tensor) -> None:
            if not (self._first and name in self.outputs):
                self.outputs[name] = output.detach() if self._detach and isinstance(output, Tensor) else output
            self.calls[name] += 1
            if self._stop and len(self.outputs) == len(self.calls):
                raise LayerProbe.Stop

        return fn

    def run(self, x: Tensor) -> dict[str, Tensor]:
        """``net(x)`` (ended at the deepest layer with ``stop_after_last``): ``{name: output}`` of every layer, the
        probe emptied for the next pass. Hooks stay set, so a loop of passes pays for them once."""
        try:
            self._net(x)
        except LayerProbe.Stop:
            pass
        outputs, _ = self.take()
        missing = [name for name in self.calls if name not in outputs]
        if missing:
            raise LayerError(f"layer(s) {missing} of {type(self._net).__name__} are not called in the forward pass")
        return {name: outputs[name] for name in self.calls}

    def take(self) -> tuple[dict[str, Tensor], dict[str, int]]:
        """``(outputs, calls)`` since the last ``take`` (or since the hooks were set), and start afresh."""
        outputs, calls = self.outputs, self.calls
        self.outputs, self.calls = {}, dict.fromkeys(calls, 0)
        return outputs, calls

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> LayerProbe:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def capture_activations(
    net: nn.Module, x: Tensor, layers: Sequence[str], detach: bool = True, stop_after_last: bool = False
) -> dict[str, Tensor]:
    """Run ``net(x)`` and return the output of each named layer, ``{name: Tensor}``.

    Hooks are removed when the call returns or raises. With ``stop_after_last`` the forward pass ends at the
    deepest requested layer (the net's output is then not computed), which saves work for early layers.
    """
    with LayerProbe(net, layers, detach, stop_after_last) as probe:
        return probe.run(x)


def forward_with_activations(
    net: nn.Module, x: Tensor, layers: Sequence[str], detach: bool = True
) -> tuple[Tensor, dict[str, Tensor]]:
    """``(net(x), {name: output of that layer})`` from one forward pass, the outputs detached unless ``detach=False``
    (a gradient of the output with respect to a layer, as Grad-CAM takes); hooks removed afterwards."""
    with LayerProbe(net, layers, detach) as probe:
        out = net(x)
    return out, {name: probe.outputs[name] for name in layers}


@torch.no_grad()
def layer_shapes(
    net: nn.Module, input_shape: Sequence[int] = (1, 28, 28), calls: dict[str, int] | None = None
) -> dict[str, tuple[int, ...]]:
    """Output shape (without the batch dimension) of every named submodule, from one dry forward pass of a zero
    image; modules not called are left out. ``calls``, when given, is filled with how often each module ran (a
    module reused within one forward pass, like torchvision ResNet's ``relu``, has no single output)."""
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    with LayerProbe(net, list(_modules(net)), keep_first=True) as probe, eval_mode(net), dry_pass(input_shape):
        net(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    if calls is not None:
        calls.update(probe.calls)
    return {name: tuple(out.shape[1:]) for name, out in probe.outputs.items() if isinstance(out, Tensor)}


@contextmanager
def dry_pass(input_shape: Sequence[int]):
    """Around a dry forward pass of a zero image of ``input_shape``: a net that cannot take it (3 channels where the
    default is 1) gets a ``ValueError`` that says which shape was tried and how to give another."""
    try:
        yield
    except RuntimeError as e:
        raise ValueError(
            f"a forward pass of one zero image of input_shape {tuple(input_shape)} failed: {e}. Pass "
            "input_shape=(C, H, W) of the images the net takes"
        ) from e


def batch_within(
    shapes: dict[str, tuple[int, ...]],
    layers: Sequence[str],
    element_size: int,
    most: int,
    max_bytes: int,
    scale: float = 1.0,
) -> int:
    """Images per pass that keeps the maps of ``layers``: at most ``most``, fewer where one batch of those maps and
    the net's largest activations in flight (three of them while the net runs), from ``shapes`` (every layer's
    output per image, times ``scale`` for images of another size), would pass ``max_bytes``."""
    largest = max((math.prod(shape) for shape in shapes.values()), default=0)
    kept = sum(math.prod(shapes.get(name, (1,))) for name in layers)
    per_image = (kept + 3 * largest) * element_size * scale
    return max(1, min(most, int(max_bytes // max(1.0, per_image))))


def spread(names: Sequence, k: int) -> list:
    """At most ``k`` of ``names``, evenly spaced, the first and the last included (a deep net's default layers:
    a few across its depth instead of every one of them; the units a wide layer's ablation samples)."""
    names = list(names)
    if len(names) <= k:
        return names
    if k <= 1:
        return names[:k]
    return [names[round(i * (len(names) - 1) / (k - 1))] for i in range(k)]


def check_units(
    net: nn.Module, layer: str, units: Sequence[int], shapes: dict[str, tuple[int, ...]] | None = None
) -> list[int]:
    """Return ``units`` as a list, or raise ``LayerError`` naming the layer and its valid unit range."""
    layer = check_layers(net, [layer])[0]
    shapes = shapes or layer_shapes(net)
    if layer not in shapes:
        raise LayerError(
            f"layer {layer!r} has no single output: it is not called, or called several times, in one forward pass "
            f"(a reused module, like torchvision ResNet's relu); name a module called once, e.g. one of: "
            f"{', '.join(list(shapes)[:12])}"
        )
    check_unit_range(layer, list(units), shapes[layer][0])
    return list(units)


def check_unit_range(layer: str, units: list[int], n: int) -> None:
    """Raise ``LayerError`` for an empty ``units`` list or an index outside ``0..n-1`` of ``layer``."""
    if not units:
        raise LayerError(f"empty unit list for layer {layer!r}; give indices in 0..{n - 1}")
    bad = [u for u in units if not isinstance(u, int) or not 0 <= u < n]
    if bad:
        raise LayerError(f"unit index(es) {bad} out of range for layer {layer!r}: it has {n} units, valid 0..{n - 1}")


class eval_mode:
    """Context manager: put ``net`` in eval mode and restore each module's own train/eval flag afterwards."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def __enter__(self) -> nn.Module:
        self.modes = {m: m.training for m in self.net.modules()}
        self.net.eval()
        return self.net

    def __exit__(self, *exc) -> None:
        for m, mode in self.modes.items():
            m.training = mode


def no_autocast(net: nn.Module):
    """Autocast off on the net's device: pictures are computed in the net's own dtype (float32 under
    ``precision="bf16-mixed"``, whose weights stay float32), so they are those of the same weights without mixed
    precision, and no bf16 tensor reaches numpy or matplotlib."""
    param = next(net.parameters(), None)
    device = param.device.type if param is not None else "cpu"
    return torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device) else nullcontext()


class TopActivations(NamedTuple):
    """The ``k`` samples that activate each of ``U`` units most, in descending order."""

    values: Tensor  # (U, k) float: the unit's response (conv: the channel's max over positions)
    indices: Tensor  # (U, k) long: index of the sample
    positions: Tensor | None  # (U, k, 2) long (row, col) of that max in the layer's map; None for (N, U) layers


class RunningTop:
    """The top ``k`` samples of every unit, kept over batches in any order (``add``), only ``(U, k)`` held.

    A unit of a ``(B, C, H, W)`` output is a channel scored by its maximum over the map (the first maximum in row-major
    order on ties); a unit of a ``(B, U)`` output by its value. NaN never wins (it ranks as ``-inf``); equal scores
    keep the lower sample index first, so the result does not depend on how the samples were batched."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.best: tuple[Tensor, Tensor, Tensor] | None = None  # (U, <=k) values, indices, flat positions
        self.width: int | None = None  # the map's width (conv), to turn a flat position into (row, col)
        self.last = -1  # the highest sample index held

    def add(self, a: Tensor, index: Tensor) -> None:
        """``a``: ``(B, U)`` or ``(B, U, H, W)`` outputs of samples ``index`` ``(B,)``."""
        if a.dim() == 4:
            self.width = a.shape[-1]
            v, p = a.flatten(2).max(dim=2)  # (B, U); NaN anywhere in a map gives NaN
            if bool(v.isnan().any()):
                v, p = torch.nan_to_num(a, nan=-math.inf).flatten(2).max(dim=2)
        else:
            v = torch.nan_to_num(a, nan=-math.inf)
            p = torch.zeros_like(v, dtype=torch.long)
        v, p = v.T, p.T  # (U, B)
        index = index.to(v.device)
        i = index.expand_as(p)
        in_order = bool((index[1:] > index[:-1]).all()) and int(index[0]) > self.last
        self.last = max(self.last, int(index.max()))
        if self.best is not None:  # held before new: on ties a stable sort keeps the held first
            bv, bi, bp = self.best
            v, i, p = torch.cat([bv, v], 1), torch.cat([bi, i], 1), torch.cat([bp, p], 1)
        if not in_order:  # lower index first among equals, whatever order the samples came in
            order = torch.sort(i, dim=1, stable=True).indices
            v, i, p = v.gather(1, order), i.gather(1, order), p.gather(1, order)
        order = torch.sort(v, dim=1, descending=True, stable=True).indices[:, : self.k]
        self.best = v.gather(1, order), i.gather(1, order), p.gather(1, order)

    def result(self) -> TopActivations:
        v, i, p = self.best
        w = self.width
        return TopActivations(v, i, torch.stack([p // w, p % w], dim=-1) if w is not None else None)


class ActivationStats:
    """Fixed-set statistics gathered batch by batch (``add``), from wherever the batches' activations come:

    - ``units``: ``{layer: (N, U)}`` per-sample unit activations of ``unit_layers`` (a conv unit: the mean of its
      map), sample ``i`` of the set in row ``i``;
    - ``class_means()``: ``{layer: (len(map_classes), *shape)}`` the output of ``map_layers`` averaged over the
      samples of each class of ``map_classes`` (default: every class), on the CPU (a class without samples gets
      zeros). Only the classes a picture shows are summed, so a 1,000-class net does not hold 1,000 maps per layer;
    - ``tops()``: ``{layer: TopActivations}`` the ``top_k`` samples of every unit of ``top_layers`` (``RunningTop``).

    Only per-batch reductions are kept, so memory stays small."""

    def __init__(
        self,
        unit_layers: Sequence[str],
        map_layers: Sequence[str],
        n: int,
        num_classes: int,
        map_classes: Sequence[int] | None = None,
        top_layers: Sequence[str] = (),
        top_k: int = 0,
    ) -> None:
        self.unit_layers, self.map_layers = list(unit_layers), list(map_layers)
        self.top_layers, self.top_k = list(top_layers) if top_k > 0 else [], top_k
        self.layers = list(dict.fromkeys(self.unit_layers + self.map_layers + self.top_layers))
        self.running: dict[str, RunningTop] = {name: RunningTop(top_k) for name in self.top_layers}
        self.n, self.num_classes = n, num_classes
        self.map_classes = list(range(num_classes) if map_classes is None else map_classes)
        self.row = torch.full((max(num_classes, 1),), -1, dtype=torch.long)  # class -> row of the sums (-1: none)
        self.row[torch.as_tensor(self.map_classes, dtype=torch.long)] = torch.arange(len(self.map_classes))
        self.units: dict[str, Tensor] = {}
        self.sums: dict[str, Tensor] = {}
        self.counts = torch.zeros(len(self.map_classes))
        self.seen = torch.zeros(n, dtype=torch.bool)

    def add(self, acts: dict[str, Tensor], labels: Tensor, positions: Tensor) -> None:
        """Activations ``{layer: (B, ...)}`` of the set's samples at ``positions`` ``(B,)``, of classes ``labels``."""
        for name in self.unit_layers:
            a = acts[name]
            a = a.flatten(2).mean(2) if a.dim() > 2 else a.flatten(1)
            if name not in self.units:
                self.units[name] = torch.zeros(self.n, *a.shape[1:], dtype=a.dtype, device=a.device)
            self.units[name][positions.to(a.device)] = a
        for name in self.top_layers:
            self.running[name].add(acts[name], positions)
        if not self.map_layers:
            self.seen[positions.cpu()] = True
            return
        rows = self.row[labels.long().cpu()]
        keep = rows >= 0
        every = bool(keep.all())  # every sample's class has a mean: no copy of the maps
        for name in self.map_layers:
            a = acts[name].float()
            if name not in self.sums:
                self.sums[name] = torch.zeros(len(self.map_classes), *a.shape[1:], device=a.device)
            self.sums[name].index_add_(0, rows[keep].to(a.device), a if every else a[keep.to(a.device)])
        self.counts += torch.bincount(rows[keep], minlength=len(self.map_classes)).float()
        self.seen[positions.cpu()] = True

    def class_means(self) -> dict[str, Tensor]:
        counts = self.counts.clamp(min=1)
        return {
            name: self.sums[name].cpu() / counts.view(-1, *[1] * (self.sums[name].dim() - 1))
            for name in self.map_layers
        }

    def tops(self) -> dict[str, TopActivations]:
        return {name: self.running[name].result() for name in self.top_layers if self.running[name].best is not None}


class FixedSetPass(NamedTuple):
    """What ``activation_pass`` computed (``ActivationStats``)."""

    units: dict[str, Tensor]  # {layer: (N, U)} on the net's device
    means: dict[str, Tensor]  # {layer: (len(map_classes), *shape)} on the CPU
    tops: dict[str, TopActivations]  # {layer: the top ``top_k`` samples of each unit}


@torch.no_grad()
def activation_pass(
    net: nn.Module,
    x: Tensor,
    unit_layers: Sequence[str] = (),
    map_layers: Sequence[str] = (),
    labels: Tensor | None = None,
    num_classes: int = 0,
    batch_size: int = 1000,
    map_classes: Sequence[int] | None = None,
    max_bytes: int = PASS_BYTES,
    top_layers: Sequence[str] = (),
    top_k: int = 0,
) -> FixedSetPass:
    """One batched pass over ``x`` that serves every kind of fixed-set statistics (``ActivationStats``), so that
    one forward pass per epoch feeds every callback: ``FixedSetPass(units, means, tops)``, the per-sample unit
    activations of ``unit_layers``, the class means of ``map_layers`` (``map_classes`` default: all ``num_classes``)
    and the top ``top_k`` samples of each unit of ``top_layers``. A batch holds at most ``batch_size`` images, fewer
    where one batch's captured maps and the net's largest activations in flight would pass ``max_bytes`` (a 224 px
    ResNet-50's early stages hold megabytes per image)."""
    if map_layers and labels is None:
        raise ValueError("activation_pass: map_layers need the samples' labels")
    labels = labels if labels is not None else torch.zeros(len(x), dtype=torch.long)
    k = num_classes if map_layers else 1
    stats = ActivationStats(unit_layers, map_layers, len(x), k, map_classes if map_layers else None, top_layers, top_k)
    if len(x) > 1 and stats.layers:
        shapes = layer_shapes(net, tuple(x.shape[1:]))
        batch_size = batch_within(shapes, stats.layers, x.element_size(), batch_size, max_bytes)
    for start in range(0, len(x) if stats.layers else 0, batch_size):
        acts = capture_activations(net, x[start : start + batch_size], stats.layers, stop_after_last=True)
        stop = min(start + batch_size, len(x))
        stats.add(acts, labels[start:stop], torch.arange(start, stop))
    units = {name: stats.units.get(name, x.new_zeros(0, 0)) for name in stats.unit_layers}
    return FixedSetPass(units, stats.class_means(), stats.tops())


def collect_activations(net: nn.Module, x: Tensor, layers: list[str], batch_size: int = 1000) -> dict[str, Tensor]:
    """Per-sample unit activations ``{layer: (N, U)}`` over ``x`` in batches, one pass for every layer; conv
    units are reduced to the mean of their map batch by batch, so memory stays small (``activation_pass``)."""
    return activation_pass(net, x, unit_layers=layers, batch_size=batch_size)[0]
