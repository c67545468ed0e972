"""Deconvnet (Zeiler & Fergus, 2014): project one channel of a layer back to pixel space.

    proj = deconvnet(net, images, "max_pool_2")                          # (N, 1, 28, 28), strongest channel
    proj, channels = deconvnet_with_channels(net, images, "conv_2", 3)    # channel 3 for every image
    ch = strongest_channels(acts)                                         # (N,) from (N, C, H, W) or (N, U)
    ch = informative_channels(acts, channel_peaks(reference_acts))        # (N,) most unusually strong for each image
    bg = background_channels(channel_peaks(flat_acts), channel_peaks(reference_acts))   # (C,) fire on plain background
    ch = informative_channels(acts, channel_peaks(reference_acts), exclude=bg)          # ... never a background one
    proj, _ = deconvnet_with_channels(net, images, "max_pool_2", ch)      # one given channel per image

For each image the chosen channel of ``layer``'s output is kept whole (its entire feature map; for a 2-D
``(N, U)`` output a "channel" is a unit), every other activation of the layer is set to zero, and this seed is
projected back down: max-unpooling with the switches recorded in the forward pass, rectification (ReLU), and
transposed convolution with the layer's own filters, without biases.

How: that reverse path is ordinary backpropagation with one change. Max-pool backward routes each value to the
location of its forward maximum (the switches), convolution backward is the transposed convolution with the same
filters, ``nn.Linear`` backward multiplies by ``W^T``, and no bias enters any backward pass. Only the ReLU differs:
backprop masks with the forward input (``g * (x > 0)``), the deconvnet rectifies the signal coming down
(``relu(g)``). So a full backward hook on every ``nn.ReLU`` module that returns ``relu(grad_output)`` turns
``torch.autograd.grad(act, x, grad_outputs=seed)`` into the deconvnet projection, exactly.

What it supports (as Captum's ``Deconvolution``, which overrides only the ReLU's backward): the linear parts of a
net are backpropagated as they are, which is their exact transpose: convolutions of any stride, groups
(depthwise) or dilation, ``nn.Linear``, average pooling (each value spread evenly back over its window),
BatchNorm in eval mode (a per-channel scale), dropout in eval mode, identity, flatten, padding, and the residual
sums and concatenations between modules (ResNet, DenseNet); max-pooling uses its switches; ``nn.ReLU`` rectifies.
The deconvnet has no rule for other nonlinearities (GELU, SiLU, Hardswish, LeakyReLU ...), normalization over
positions or channels per sample (LayerNorm, GroupNorm) or gates (squeeze-excitation's sigmoid): plain backprop
through them would be a gradient, not a deconvnet, so ``deconv_blockers`` names any such module that runs before
a layer, and the callbacks do not draw a projection from that layer.

Limits: only ``nn.ReLU`` modules are rectified; a functional ``F.relu`` (or ``F.gelu``) call inside some module's
``forward`` is invisible to hooks and would be backpropagated as usual (the nets in ``lit_modules.nets``, timm's
and torchvision's CNNs use activation modules). An in-place ``nn.ReLU`` is run out of place for the call (a full
backward hook needs that) and its flag is restored.

Pure functions on a plain ``nn.Module`` (no Lightning): they leave no hooks behind (also on error), touch no
parameter's ``.grad`` or ``requires_grad``, run the net in eval mode and restore every module's train/eval flag,
and also work when called under ``torch.inference_mode()`` (as in Lightning's validation loop).
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hooks import LayerError, capture_activations, check_images, check_layers, eval_mode, layer_shapes

__all__ = [
    "deconvnet",
    "deconvnet_with_channels",
    "deconvnet_from_seed",
    "strongest_channels",
    "channel_peaks",
    "informative_channels",
    "flat_background",
    "background_channels",
    "deconv_blockers",
    "LayerError",
]

# Modules the deconvnet passes through by plain backprop (linear in eval mode: their backward is their transpose),
# by switches (max-pool) or by its own rule (ReLU). Subclasses count too (timm's Conv2dSame, BatchNormAct2d ...).
_SUPPORTED = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.dropout._DropoutNd,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.modules.padding._ConstantPadNd,
    nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd,
    nn.ReLU,
)


def channel_peaks(acts: Tensor) -> Tensor:
    """``(N, C)``: each sample's largest activation of each channel, from ``(N, C, H, W)`` (the max over the map),
    ``(N, U)`` (a unit is a channel) or any ``(N, C, ...)``."""
    if not isinstance(acts, Tensor) or acts.dim() < 2:
        what = f"a {acts.dim()}-D tensor" if isinstance(acts, Tensor) else type(acts).__name__
        raise ValueError(f"channels need activations shaped (N, C, ...), got {what}")
    return acts.flatten(2).amax(dim=2) if acts.dim() > 2 else acts


def strongest_channels(acts: Tensor) -> Tensor:
    """Index of each sample's strongest channel: the one with the largest max activation, shape ``(N,)`` (long).

    ``acts`` is ``(N, C, H, W)`` (the max is taken over each channel's map) or ``(N, U)`` (a unit is a channel);
    any ``(N, C, ...)`` works. Ties go to the lowest index.
    """
    return channel_peaks(acts).argmax(dim=1)


def flat_background(images: Tensor) -> Tensor:
    """``(1, C, H, W)``: a plain image of the background of ``images`` ``(N, C, H, W)``, each channel at the median of
    the images' border pixels (black for Fashion-MNIST; for photographs, their usual edge colour)."""
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], dim=-1)
    level = border.movedim(1, 0).flatten(1).median(dim=1).values  # (C,)
    return level.view(1, -1, 1, 1).expand(1, -1, *images.shape[-2:]).clone()


def background_channels(flat: Tensor, reference: Tensor, share: float = 0.5) -> Tensor:
    """``(C,)`` bool: the channels whose peak on a plain background image (``flat``, ``(C,)`` or ``(1, C)``: the
    ``channel_peaks`` of ``flat_background``) reaches ``share`` of their mean peak over the reference images
    (``reference`` ``(M, C)``). Such a channel fires on the background about as much as on any object, so its
    response says little about the image, and its projection draws the background around the object."""
    flat = flat.detach().double().flatten()
    usual = reference.detach().double().to(flat.device).mean(0)
    return flat >= share * usual


def informative_channels(acts: Tensor, reference: Tensor, exclude: Tensor | None = None) -> Tensor:
    """Index of each sample's most unusually strong channel, shape ``(N,)`` (long): the largest z-score of the
    channel's peak (``channel_peaks`` of ``acts``) against the same channel's peaks over a reference set of images,
    ``(peak - mean) / std`` with ``reference`` ``(M, C)`` (``channel_peaks`` of the reference images' activations).

    Why: the strongest channel (``strongest_channels``) is often one that fires as strongly on every image, such as
    a detector of the dark background; relative to its usual level it says nothing about this image. A channel
    constant over the reference scores 0 where the image matches it and +-inf where it does not. Ties go to the
    lowest index. ``exclude`` ``(C,)`` bool (``background_channels``): channels never chosen, unless that leaves
    none. A background channel's peak varies very little, so a tiny difference can give it the largest z-score.
    """
    peaks = channel_peaks(acts).double()
    c = peaks.shape[1]
    if not isinstance(reference, Tensor) or reference.dim() != 2 or reference.shape[1] != c or not len(reference):
        got = tuple(reference.shape) if isinstance(reference, Tensor) else type(reference).__name__
        raise ValueError(f"reference must be the (M, {c}) channel peaks of M >= 1 images, got {got}")
    ref = reference.detach().double().to(peaks.device)
    mean, std = ref.mean(0), ref.std(0, correction=0)
    dev = peaks - mean
    tiny = 1e-9 * (mean.abs() + 1e-30)  # float rounding of a constant channel's mean
    z = torch.where(
        std > tiny,
        dev / std.clamp_min(1e-300),
        torch.where(dev.abs() > tiny, dev.sign() * torch.inf, torch.zeros_like(dev)),
    )
    if exclude is not None and not bool(exclude.all()):
        z = z.masked_fill(exclude.to(z.device).bool()[None], -torch.inf)
    return z.argmax(dim=1)


def deconv_blockers(
    net: nn.Module, layer: str, input_shape: tuple[int, ...], order: list[str] | None = None
) -> list[str]:
    """The modules that run up to ``layer`` (inclusive) in a forward pass of an ``input_shape`` ``(C, H, W)`` image
    and have no deconvnet rule (see the module docstring), as ``"name (Class)"``, in forward order: empty where the
    projection from ``layer`` is the Zeiler & Fergus deconvnet. Containers count only through their children.
    ``order``: every module that runs, in the order each first finishes (``list(layer_shapes(net, input_shape))``),
    when the caller has it already."""
    check_layers(net, [layer])
    modules = dict(net.named_modules())
    order = list(layer_shapes(net, input_shape)) if order is None else order
    if layer not in order:
        raise LayerError(f"layer {layer!r} of {type(net).__name__} is not called in the forward pass")
    out = []
    for name in order[: order.index(layer) + 1]:
        m = modules[name]
        if not any(True for _ in m.children()) and not isinstance(m, _SUPPORTED):
            out.append(f"{name} ({type(m).__name__})")
    return out


def _rectify_hook(module: nn.Module, grad_input, grad_output):
    """Full backward hook of an ``nn.ReLU``: the deconvnet's rectification ``relu(grad_output)``."""
    return (F.relu(grad_output[0]),)


def deconvnet_from_seed(
    net: nn.Module,
    images: Tensor,
    layer: str,
    make_seed: Callable[[Tensor], Tensor],
) -> Tensor:
    """The deconvnet projection of an arbitrary seed at ``layer``: ``(N, C, H, W)``, shaped like ``images``.

    ``make_seed(act)`` receives the layer's (detached) output for ``images`` and returns the seed, a tensor shaped
    like it. The forward pass alone fixes the switches, so the projection is positively homogeneous in the seed
    (``2 * seed`` gives twice the projection) but, through the rectifications, not linear (a sum of seeds does
    not project to the sum of their projections). Errors raised by ``make_seed`` propagate, with every hook
    removed.

    Raises:
        ValueError: ``images`` is not a 4-D floating-point tensor.
        LayerError (a ``ValueError``): ``layer`` is not a submodule name (the message lists the valid names), or it
            is not called in the forward pass.
    """
    check_images(images)
    if not isinstance(layer, str):
        raise LayerError(f"layer must be a submodule name (str), got {layer!r}")
    check_layers(net, [layer])
    modules = {name: m for name, m in net.named_modules() if name}
    target = modules[layer]
    # The target layer's own ReLU (when ``layer`` names an nn.ReLU) is left unhooked: its output is captured
    # before the module's backward-hook wrapper is attached, and there plain backprop already equals the
    # deconvnet rule (the seed is >= 0 and non-zero only where the ReLU's input is > 0).
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU) and m is not target]
    full_flags = {m: m._is_full_backward_hook for m in relus}
    inplace = {m: m.inplace for m in relus}  # an in-place ReLU cannot carry a full backward hook
    handles = []
    try:
        with torch.inference_mode(False), torch.enable_grad(), eval_mode(net):
            for m in relus:
                m.inplace = False
            for m in relus:
                handles.append(m.register_full_backward_hook(_rectify_hook))
            x = images.detach().clone().requires_grad_(True)
            act = capture_activations(net, x, [layer], detach=False, stop_after_last=True)[layer]
            if not isinstance(act, Tensor):
                raise LayerError(f"layer {layer!r} outputs {type(act).__name__}, not a tensor")
            seed = make_seed(act.detach())
            if not isinstance(seed, Tensor) or seed.shape != act.shape:
                got = tuple(seed.shape) if isinstance(seed, Tensor) else type(seed).__name__
                raise ValueError(f"the seed must be shaped like {layer!r}'s output {tuple(act.shape)}, got {got}")
            if not act.requires_grad:  # the layer does not depend on the input (nothing to project)
                return torch.zeros_like(x, requires_grad=False)
            (proj,) = torch.autograd.grad(act, x, grad_outputs=seed.to(act.dtype), allow_unused=True)
            return torch.zeros_like(x, requires_grad=False) if proj is None else proj.detach()
    finally:
        for h in handles:
            h.remove()
        for m, flag in full_flags.items():
            m.inplace = inplace[m]
            if not m._backward_hooks:
                m._is_full_backward_hook = flag


def _as_channel(channel) -> int | Tensor | None:
    if channel is None:
        return None
    if isinstance(channel, Tensor) and channel.dim() == 1:  # one channel per image
        if channel.dtype == torch.bool or channel.is_floating_point() or channel.is_complex():
            raise ValueError(f"channel must hold integer indices, got dtype {channel.dtype}")
        return channel.long()
    if isinstance(channel, bool):
        raise ValueError(f"channel must be an integer index or None, got {channel!r}")
    try:
        return operator.index(channel)
    except TypeError as e:
        raise ValueError(f"channel must be an integer index or None, got {channel!r}") from e


def deconvnet_with_channels(
    net: nn.Module, images: Tensor, layer: str, channel: int | Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Deconvnet projections of one channel of ``layer`` per image, and which channel was used.

    Returns ``(projections, channels)``: ``projections`` is shaped like ``images`` ``(N, C, H, W)``; ``channels`` is
    ``(N,)`` (long) on the images' device: ``channel`` for every image, the ``(N,)`` tensor ``channel``'s entry for
    each image, or with ``channel=None`` each image's strongest channel (``strongest_channels`` of the layer's
    output). For a 2-D ``(N, U)`` output a channel is a
    unit. The chosen channel is kept whole, all other activations of the layer are zeroed.

    Raises:
        ValueError: ``images`` is not a 4-D floating-point tensor; ``channel`` is not an integer, a 1-D integer
            tensor of one channel per image, or None.
        LayerError (a ``ValueError``): unknown ``layer`` (the message lists the valid names); ``channel`` out of
            range (the message names the layer and the valid range).
    """
    ch = _as_channel(channel)
    chosen: list[Tensor] = []

    def make_seed(act: Tensor) -> Tensor:
        if act.dim() < 2:
            raise LayerError(f"layer {layer!r} outputs a {act.dim()}-D tensor; the deconvnet needs (N, C, ...)")
        n, c = act.shape[0], act.shape[1]
        if ch is None:
            idx = strongest_channels(act)
        elif isinstance(ch, Tensor):
            if len(ch) != n:
                raise ValueError(f"channel holds {len(ch)} channels for {n} images; give one per image")
            bad = ch[(ch < 0) | (ch >= c)]
            if len(bad):
                raise LayerError(
                    f"channel {bad.tolist()} out of range for layer {layer!r}: it has {c} channels, valid 0..{c - 1}"
                )
            idx = ch.to(act.device)
        else:
            if not 0 <= ch < c:
                raise LayerError(
                    f"channel {ch} out of range for layer {layer!r}: it has {c} channels, valid 0..{c - 1}"
                )
            idx = torch.full((n,), ch, dtype=torch.long, device=act.device)
        chosen.append(idx)
        keep = torch.zeros(n, c, dtype=torch.bool, device=act.device)
        keep[torch.arange(n, device=act.device), idx] = True
        keep = keep.reshape(n, c, *([1] * (act.dim() - 2)))
        return torch.where(keep, act, torch.zeros((), dtype=act.dtype, device=act.device))  # no NaN * 0 leaks

    proj = deconvnet_from_seed(net, images, layer, make_seed)
    return proj, chosen[0].to(images.device)


def deconvnet(net: nn.Module, images: Tensor, layer: str, channel: int | None = None) -> Tensor:
    """Deconvnet projection of one channel of ``layer`` per image, shaped like ``images`` ``(N, C, H, W)``.

    Same as ``deconvnet_with_channels(...)[0]``; see there for ``channel`` and the errors raised.
    """
    return deconvnet_with_channels(net, images, layer, channel)[0]
