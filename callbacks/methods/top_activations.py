"""Top activations (Zeiler & Fergus, 2014, figure 2): the receptive-field tracing and top-k search behind
``top_activations/<layer>`` (drawn by ``callbacks.top_activations``).

    rf = receptive_field(net, "max_pool_2")            # ReceptiveField(size=16, stride=4, start=5.5) for LeNet5
    rf_box(rf, 2, 3, (28, 28))                         # (6, 10, 22, 26): rows 6..21, columns 10..25
    top = top_activations(net, images, "relu_2", [0, 5], k=9)
    tops = top_activations_of(net, images, {"relu_1": [0], "relu_2": [0, 5]}, k=9)   # one pass: {layer: top}
    top.values, top.indices, top.positions             # (2, 9), (2, 9) long, (2, 9, 2) long (row, col) or None
    crops = patches(images, top.indices, top.positions, rf, (10, 10), fill=lo)   # (2, 9, C, P, P), P = rf.size
    proj = projected_patches(net, images, "relu_2", [0, 5], top.indices, top.positions, rf)  # same shape

For each selected unit of a layer: the ``k`` images with the largest response, in descending order. A conv unit is
a channel; its response to an image is the channel's maximum over all positions, and that position is kept. A unit
of a 2-D ``(N, U)`` layer (after ``nn.Flatten``/``nn.Linear``) responds with its value and has no position.

The receptive field of a conv position is computed analytically from the layer geometry (kernel, stride, padding,
dilation of every ``nn.Conv2d``, ``nn.MaxPool2d`` and ``nn.AvgPool2d`` up to the layer), in input pixels, with
pixel ``i`` centred at coordinate ``i``: output position ``(r, c)`` of the layer is centred at
``(start + r * stride, start + c * stride)`` and sees the ``size x size`` input pixels around that centre (the
window is a superset of what can influence the value: max-pooling only routes from its maxima). ``patches`` crops
that window (padded with ``fill`` outside the image, so every patch has the same size and the activation's centre
is the patch's centre); ``projected_patches`` crops the same window from the deconvnet projection
(``methods.deconv.deconvnet_from_seed``) of that single activation, every other activation of the layer zeroed.

Pure functions on a plain ``nn.Module`` (no Lightning): forward hooks are removed also on error, the net runs in
eval mode and every module's train/eval flag is restored (``hooks.eval_mode``), and they work when called under
``torch.no_grad()`` and ``torch.inference_mode()``. Results live on the images' device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..hooks import (
    LayerError,
    LayerProbe,
    RunningTop,
    TopActivations,
    as_int,
    capture_activations,
    check_images,
    check_layers,
    check_unit_range,
    eval_mode,
)
from ..layers import NONLINEARITIES
from .deconv import deconvnet_from_seed

__all__ = [
    "ReceptiveField",
    "TopActivations",
    "receptive_field",
    "rf_box",
    "top_activations",
    "top_activations_of",
    "patches",
    "projected_patches",
]


class ReceptiveField(NamedTuple):
    """The receptive field of a layer's output positions, in input pixels (pixel ``i`` is centred at ``i``).

    Output position ``j`` (along either axis) is centred at ``start + j * stride`` and sees the ``size`` pixels
    ``start + j * stride - (size - 1) / 2 .. start + j * stride + (size - 1) / 2``. ``start`` may be fractional
    (an even ``size``) or negative (padding).
    """

    size: int
    stride: int
    start: float

    @property
    def offset(self) -> int:
        """First pixel (row or column) seen by output position 0; may be negative (padding)."""
        return int(round(self.start - (self.size - 1) / 2))


# Modules that act on each position separately (or not at all): they keep the receptive field as it is.
_POINTWISE = (
    *NONLINEARITIES,  # the nonlinearities the default layers know (``layers.NONLINEARITIES``), then the others
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)
# Modules of torchvision and timm (by class name, so neither is imported) that keep every position's field:
# stochastic depth and drop-path are the identity in eval mode; Permute moves channels last.
_KEEPS_POSITIONS = frozenset({"StochasticDepth", "DropPath", "Permute"})
_FLAT = (nn.Linear, nn.Flatten, nn.Bilinear, nn.LazyLinear)


def _square(value, what: str, name: str, module: nn.Module) -> int:
    """One number from an int or an (h, w) tuple with h == w, else ``LayerError``."""
    if isinstance(value, (tuple, list)):
        if len(set(value)) != 1:
            raise LayerError(
                f"receptive_field handles square geometry only: {name!r} ({type(module).__name__}) has {what} "
                f"{tuple(value)}"
            )
        value = value[0]
    return int(value)


def _geometry(name: str, m: nn.Module) -> tuple[int, int, float]:
    """``(effective kernel, stride, left/top padding)`` of a conv or pooling module; ``padding="same"`` pads
    ``(effective kernel - 1) // 2`` on the left/top (the rest on the right/bottom), as PyTorch does."""
    kernel = _square(m.kernel_size, "kernel_size", name, m)
    stride = _square(m.stride if m.stride is not None else m.kernel_size, "stride", name, m)
    dilation = _square(getattr(m, "dilation", 1), "dilation", name, m)
    eff = dilation * (kernel - 1) + 1
    padding = m.padding
    if isinstance(padding, str):  # nn.Conv2d(padding="valid" | "same")
        padding = 0 if padding == "valid" else (eff - 1) // 2
    else:
        padding = _square(padding, "padding", name, m)
    return eff, stride, padding


def receptive_field(net: nn.Module, layer: str, input_shape: Sequence[int] | None = None) -> ReceptiveField:
    """The receptive field of ``layer``'s output positions, computed analytically from the layer geometry.

    The leaf modules of ``net.named_modules()`` are walked in registration order up to and including ``layer``
    (a container: up to its last leaf). For an ``nn.Sequential`` net (nested ones included) that is the forward
    order; for a net with a custom ``forward`` it is the order the submodules were assigned, which must then match
    the forward pass. ``nn.Conv2d``, ``nn.MaxPool2d`` and ``nn.AvgPool2d`` change the field (kernel, stride,
    padding, dilation; ints or square tuples; ``padding="same"``/``"valid"``); activations, dropout,
    normalization and ``nn.Identity`` keep it. Starting from one pixel (size 1, stride 1, start 0), a module of
    effective kernel ``e = dilation * (kernel - 1) + 1``, stride ``s`` and left padding ``p`` gives
    ``size += (e - 1) * stride``, ``start += ((e - 1) / 2 - p) * stride``, then ``stride *= s``.

    With ``input_shape`` ``(C, H, W)`` the modules are instead followed in the order they run in a forward pass of
    such an image, along the tensors they pass on, so parallel branches (a ResNet block's strided shortcut conv,
    a squeeze-excitation side branch) do not add up as if they ran in series. A tensor made by a function between
    modules (a residual sum, a permute, ``x * gate``) gets the widest field among the module outputs of the same
    shape (a sum sees the union of its branches); ``nn.Linear`` and a one-dimensional ``nn.LayerNorm`` on a tensor
    of 3 or more dimensions act per position (channels last, as in ConvNeXt).

    Raises:
        LayerError: unknown ``layer`` (the message lists the valid names); an ``nn.Linear`` or ``nn.Flatten`` before
            or at ``layer`` ("has no spatial receptive field"); a module whose geometry is unknown or not square.
    """
    if not isinstance(layer, str):
        raise LayerError(f"layer must be a submodule name (str), got {layer!r}")
    check_layers(net, [layer])
    if input_shape is not None:
        return _traced_field(net, layer, tuple(input_shape))
    leaves = [(n, m) for n, m in net.named_modules() if n and not any(True for _ in m.children())]
    inside = [i for i, (n, _) in enumerate(leaves) if n == layer or n.startswith(layer + ".")]
    if not inside:
        raise LayerError(f"layer {layer!r} of {type(net).__name__} holds no modules, so it has no receptive field")
    size, stride, start = 1, 1, 0.0
    for name, m in leaves[: inside[-1] + 1]:
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            eff, s, p = _geometry(name, m)
            size += (eff - 1) * stride
            start += ((eff - 1) / 2 - p) * stride
            stride *= s
        elif isinstance(m, _FLAT):
            raise LayerError(
                f"layer {layer!r} has no spatial receptive field: {name!r} ({type(m).__name__}) before or at it "
                "mixes all positions"
            )
        elif not isinstance(m, _POINTWISE):
            raise LayerError(
                f"cannot compute the receptive field of {layer!r}: the geometry of {name!r} "
                f"({type(m).__name__}) is unknown (known: Conv2d, MaxPool2d, AvgPool2d and pointwise modules)"
            )
    return ReceptiveField(size=int(size), stride=int(stride), start=float(start))


def _step(name: str, m: nn.Module, rf: ReceptiveField, ndim: int) -> ReceptiveField:
    """The field after module ``m`` whose input (of ``ndim`` dimensions) has field ``rf``."""
    if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        eff, s, p = _geometry(name, m)
        return ReceptiveField(
            rf.size + (eff - 1) * rf.stride, rf.stride * s, rf.start + ((eff - 1) / 2 - p) * rf.stride
        )
    if type(m).__name__ in _KEEPS_POSITIONS:
        return rf
    per_position = isinstance(m, nn.Linear) or (isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1)
    if isinstance(m, _POINTWISE) or (per_position and ndim >= 4):
        return rf
    if isinstance(m, _FLAT):
        raise LayerError(f"{name!r} ({type(m).__name__}) mixes all positions")
    raise LayerError(
        f"the geometry of {name!r} ({type(m).__name__}) is unknown (known: Conv2d, MaxPool2d, "
        "AvgPool2d and pointwise modules)"
    )


@torch.no_grad()
def _traced_field(net: nn.Module, layer: str, input_shape: tuple[int, ...]) -> ReceptiveField:
    """``receptive_field`` along the tensors of one forward pass of a zero image (see there)."""
    fields: dict[int, ReceptiveField | str] = {}  # id(tensor) -> its field, or why it has none
    kept: list[Tensor] = []  # the tensors whose ids are in ``fields`` (kept alive, so an id is never reused)
    result: list[ReceptiveField | str] = []

    def field_of(t: Tensor) -> ReceptiveField | str:
        if id(t) in fields:
            return fields[id(t)]
        same = [fields[id(k)] for k in kept if sorted(k.shape) == sorted(t.shape)]
        if not same and t.dim() == 4:  # a concatenation along channels (DenseNet): the maps of the same size
            same = [fields[id(k)] for k in kept if k.dim() == 4 and k.shape[-2:] == t.shape[-2:]]
        known = [f for f in same if isinstance(f, ReceptiveField)]
        if known:
            return max(known, key=lambda f: f.size)
        return same[-1] if same else "it is computed by a function outside any module"

    def record(t, f) -> None:
        if isinstance(t, Tensor):
            fields[id(t)] = f
            kept.append(t)

    def hook(name: str):
        def fn(module: nn.Module, inputs, output) -> None:
            if name == layer and any(True for _ in module.children()):  # a block: the field of what it returns
                result.append(field_of(output) if isinstance(output, Tensor) else f"{layer!r} outputs no tensor")
                raise LayerProbe.Stop
            x = inputs[0] if inputs and isinstance(inputs[0], Tensor) else None
            f = field_of(x) if x is not None else f"{name!r} takes no tensor"
            if isinstance(f, ReceptiveField):
                try:
                    f = _step(name, module, f, x.dim())
                except LayerError as e:
                    f = str(e)
            record(output, f)
            if name == layer:
                result.append(f)
                raise LayerProbe.Stop

        return fn

    modules = {n: m for n, m in net.named_modules() if n}
    watched = [(n, m) for n, m in modules.items() if n == layer or not any(True for _ in m.children())]
    param = next(net.parameters(), None)
    x = torch.zeros(
        1,
        *input_shape,
        device=param.device if param is not None else None,
        dtype=param.dtype if param is not None else None,
    )
    record(x, ReceptiveField(1, 1, 0.0))
    handles = [m.register_forward_hook(hook(n)) for n, m in watched]
    try:
        with eval_mode(net):
            net(x)
    except LayerProbe.Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    if not result:
        raise LayerError(f"layer {layer!r} of {type(net).__name__} is not called in the forward pass")
    if isinstance(result[0], str):
        raise LayerError(f"cannot compute the receptive field of {layer!r}: {result[0]}")
    rf = result[0]
    return ReceptiveField(size=int(rf.size), stride=int(rf.stride), start=float(rf.start))


def rf_box(rf: ReceptiveField, row: int, col: int, image_hw: Sequence[int]) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` (bottom/right exclusive) of output position ``(row, col)``'s receptive field,
    clipped to an image of size ``image_hw = (H, W)``."""
    h, w = int(image_hw[0]), int(image_hw[1])
    top = rf.offset + int(row) * rf.stride
    left = rf.offset + int(col) * rf.stride
    return max(top, 0), max(left, 0), min(top + rf.size, h), min(left + rf.size, w)


def _unit_list(units) -> list[int]:
    if isinstance(units, Tensor):
        units = units.flatten().tolist()
    if isinstance(units, int) and not isinstance(units, bool):
        return [units]
    return list(units)


def top_activations(
    net: nn.Module, images: Tensor, layer: str, units: Sequence[int], k: int, batch_size: int = 1000
) -> TopActivations:
    """The ``k`` images of ``images`` that activate each of ``units`` of ``layer`` most, in descending order.

    A unit of a ``(N, C, H, W)`` layer is a channel, scored by its maximum over the map (``positions`` gives that
    maximum's ``(row, col)``, the first one in row-major order on ties); a unit of a ``(N, U)`` layer is scored by
    its value (``positions`` is None). Equal scores keep the lower image index first. NaN activations never win
    (they rank as ``-inf``). The images go through the net ``batch_size`` at a time, each pass stopping at
    ``layer``; only a running top ``k`` per unit is kept, so memory does not grow with ``N``.

    Returns:
        ``TopActivations(values (U, k), indices (U, k) long, positions (U, k, 2) long or None)``.

    Raises:
        ValueError: ``images`` not a 4-D float tensor; ``k`` not an integer in ``1..N``; bad ``batch_size``.
        LayerError (a ``ValueError``): unknown ``layer``; a unit index out of range (the message gives the
            valid range); a layer output that is neither 2-D nor 4-D.
    """
    if not isinstance(layer, str):
        raise LayerError(f"layer must be a submodule name (str), got {layer!r}")
    return top_activations_of(net, images, {layer: units}, k, batch_size)[layer]


def top_activations_of(
    net: nn.Module, images: Tensor, layer_units: dict[str, Sequence[int]], k: int, batch_size: int = 1000
) -> dict[str, TopActivations]:
    """``top_activations`` of several layers, ``{layer: units}``, from one pass over ``images``: each batch runs the
    net once, up to the deepest of the layers (one search per layer would run the early layers once per layer)."""
    check_images(images)
    layers = list(layer_units)
    if not layers or not all(isinstance(name, str) for name in layers):
        raise LayerError(f"layers must be submodule names (str), got {layers!r}")
    check_layers(net, layers)
    k = as_int(k, "k")
    n = len(images)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (the number of images), got k={k}")
    batch_size = as_int(batch_size, "batch_size")
    if batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size}")
    device = images.device
    running: dict[str, RunningTop] = {}
    sel: dict[str, Tensor | None] = {}
    with torch.no_grad(), eval_mode(net):
        for start in range(0, n, batch_size):
            acts = capture_activations(net, images[start : start + batch_size], layers, stop_after_last=True)
            for layer in layers:
                a = acts.pop(layer)
                if layer not in running:
                    if a.dim() not in (2, 4):
                        raise LayerError(
                            f"layer {layer!r} outputs a {a.dim()}-D tensor {tuple(a.shape)}; top activations need "
                            "(N, C, H, W) or (N, U)"
                        )
                    units = _unit_list(layer_units[layer])
                    check_unit_range(layer, units, a.shape[1])
                    every = units == list(range(a.shape[1]))
                    sel[layer] = None if every else torch.tensor(units, dtype=torch.long, device=a.device)
                    running[layer] = RunningTop(k)
                if sel[layer] is not None:
                    a = a.index_select(1, sel[layer])  # (B, U, ...)
                running[layer].add(a, torch.arange(start, start + len(a)))
    out = {}
    for layer, top in running.items():
        v, i, p = top.result()
        out[layer] = TopActivations(v.to(device), i.to(device), p.to(device) if p is not None else None)
    return out


def patches(
    images: Tensor, indices: Tensor, positions: Tensor, rf: ReceptiveField, layer_hw: Sequence[int], fill: float = 0.0
) -> Tensor:
    """The receptive-field window of each ``(image, position)``: ``(U, k, C, P, P)`` with ``P = rf.size``.

    ``indices`` ``(U, k)`` picks the images, ``positions`` ``(U, k, 2)`` the ``(row, col)`` in the layer's
    ``layer_hw = (h, w)`` map; the window around that position's centre is cropped, pixels outside the image are
    ``fill``. So every patch has the same size and the activation's centre is the patch's centre (pixel
    ``(P - 1) / 2``, between two pixels when ``P`` is even).

    Raises:
        ValueError: bad shapes, or a position outside ``layer_hw``.
    """
    check_images(images)
    if positions is None:
        raise ValueError("patches need positions (U, k, 2); a (N, U) layer has none: its field is the whole image")
    indices, positions = torch.as_tensor(indices), torch.as_tensor(positions)
    if indices.dim() != 2 or positions.shape != (*indices.shape, 2):
        raise ValueError(
            f"indices must be (U, k) and positions (U, k, 2), got {tuple(indices.shape)} and {tuple(positions.shape)}"
        )
    lh, lw = int(layer_hw[0]), int(layer_hw[1])
    rows, cols = positions[..., 0].long(), positions[..., 1].long()
    if rows.numel() and (rows.min() < 0 or rows.max() >= lh or cols.min() < 0 or cols.max() >= lw):
        raise ValueError(
            f"positions must lie in the layer's {lh}x{lw} map, got rows {rows.tolist()} cols {cols.tolist()}"
        )
    u, k = indices.shape
    _, c, h, w = images.shape
    size = rf.size
    dev = images.device
    offs = torch.arange(size, device=dev)
    rr = (rf.offset + rows.to(dev).reshape(-1, 1) * rf.stride) + offs  # (M, P) pixel rows
    cc = (rf.offset + cols.to(dev).reshape(-1, 1) * rf.stride) + offs
    sel = images[indices.reshape(-1).to(dev)]  # (M, C, H, W)
    m = torch.arange(len(sel), device=dev)
    crop = sel[m[:, None, None], :, rr.clamp(0, h - 1)[:, :, None], cc.clamp(0, w - 1)[:, None, :]]  # (M, P, P, C)
    inside = ((rr >= 0) & (rr < h))[:, :, None] & ((cc >= 0) & (cc < w))[:, None, :]  # (M, P, P)
    crop = torch.where(inside[..., None], crop, torch.full((), float(fill), dtype=crop.dtype, device=dev))
    return crop.permute(0, 3, 1, 2).reshape(u, k, c, size, size)


def projected_patches(
    net: nn.Module,
    images: Tensor,
    layer: str,
    units: Sequence[int],
    indices: Tensor,
    positions: Tensor | None,
    rf: ReceptiveField | None,
    whole: bool = False,
    batch_size: int | None = None,
) -> Tensor:
    """Deconvnet projections of single activations, cropped like ``patches``: ``(U, k, C, P, P)`` (``whole``:
    not cropped, ``(U, k, C, H, W)``, for a field that covers the image anyway).

    For entry ``(u, j)``: image ``indices[u, j]`` is run up to ``layer``, every activation of the layer is zeroed
    except unit ``units[u]`` at ``positions[u, j]`` (its strongest position, as ``top_activations`` found), and that
    seed is projected to pixel space (``methods.deconv.deconvnet_from_seed``); the receptive-field window is
    cropped (zero outside the image). The projection is zero outside that window, so nothing is lost. With
    ``positions`` None (a ``(N, U)`` layer: the seed is the unit's value) the whole projections are returned,
    ``(U, k, C, H, W)``, and ``rf`` is not used. The ``U * k`` projections run ``batch_size`` at a time (None: all
    as one batch; a 224 px ResNet-50's backward pass holds hundreds of megabytes per image).
    """
    check_images(images)
    units = _unit_list(units)
    indices = torch.as_tensor(indices)
    if indices.dim() != 2 or indices.shape[0] != len(units):
        raise ValueError(f"indices must be (U, k) with U = {len(units)} units, got {tuple(indices.shape)}")
    u, k = indices.shape
    dev = images.device
    sel = images[indices.reshape(-1).to(dev)]  # (M, C, H, W)
    unit_of = torch.tensor(units, dtype=torch.long, device=dev).repeat_interleave(k)  # (M,)
    if positions is not None:
        positions = torch.as_tensor(positions).to(dev).reshape(-1, 2)
    layer_hw: list[tuple[int, int]] = []

    def seed_of(rows: slice):
        def make_seed(act: Tensor) -> Tensor:
            m = torch.arange(len(act), device=act.device)
            uu = unit_of[rows].to(act.device)
            if positions is None:
                if act.dim() != 2:
                    raise LayerError(f"layer {layer!r} outputs {tuple(act.shape)}: give positions for a spatial layer")
                keep = (m, uu)
            else:
                if act.dim() != 4:
                    raise LayerError(f"layer {layer!r} outputs {tuple(act.shape)}: positions need (N, C, H, W)")
                layer_hw.append(tuple(act.shape[-2:]))
                p = positions[rows].to(act.device)
                keep = (m, uu, p[:, 0], p[:, 1])
            check_unit_range(layer, units, act.shape[1])
            seed = torch.zeros_like(act)
            seed[keep] = act[keep]
            return seed

        return make_seed

    step = len(sel) if batch_size is None else max(1, int(batch_size))
    proj = torch.cat(
        [
            deconvnet_from_seed(net, sel[start : start + step], layer, seed_of(slice(start, start + step)))
            for start in range(0, len(sel), step)
        ]
    )  # (M, C, H, W)
    if positions is None or whole:
        return proj.reshape(u, k, *proj.shape[1:])
    if rf is None:
        raise ValueError("projected_patches needs the receptive field rf to crop a spatial layer's projections")
    own = torch.arange(u * k, device=dev).reshape(u, k)
    return patches(proj, own, positions.reshape(u, k, 2), rf, layer_hw[0], fill=0.0)
