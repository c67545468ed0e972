"""How a net's representation reacts when an input is shifted, scaled or rotated (Zeiler & Fergus 2014, figure 5).

    amounts = sweep_amounts("rotate", (28, 28))                  # (13,) degrees, -90..90
    xt = transform(x, "rotate", amounts)                          # (K, N, C, H, W), background-filled
    res = invariance_sweeps(net, x, y, ["relu_1", "max_pool_1", "relu_4"], {"rotate": (xt, amounts)})
    res["rotate"].distance["relu_1"]                              # (K, N): ||f(T x) - f(x)|| / ||f(x)||
    res["rotate"].p_true                                          # (K, N): softmax probability of the true class

Every transformed image of every sweep goes through the net in one batched forward pass (split into chunks of
``chunk_size`` images only to bound memory), together with the originals. Uncovered pixels are filled with each
image's background, estimated per image and channel as the median of its border pixels: exactly the background for
digit-like data, a sensible grey for photos, and right for normalized data too.

Conventions: translations are whole pixels (exact, no interpolation; +x right, +y down); scale > 1 enlarges the
content about the image centre; rotation is in degrees, counter-clockwise as seen; both use bilinear sampling. The
amount that leaves the image alone (shift 0, scale 1, angle 0) returns it unchanged.

Plain PyTorch (no Lightning): the net runs in eval mode with every module's train/eval flag restored, under
``torch.no_grad()``, hooks removed also on error (``callbacks.hooks``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hooks import check_images, check_layers, eval_mode, forward_with_activations

__all__ = [
    "TRANSFORMATIONS",
    "IDENTITY",
    "Sweep",
    "background",
    "sweep_amounts",
    "transform",
    "invariance_sweeps",
    "default_layers",
]

TRANSFORMATIONS = ("translate_x", "translate_y", "scale", "rotate")
IDENTITY = {"translate_x": 0.0, "translate_y": 0.0, "scale": 1.0, "rotate": 0.0}  # the amount that changes nothing


class Sweep(NamedTuple):
    """The result of one transformation swept over ``K`` amounts for ``N`` images."""

    amounts: Tensor  # (K,) the transformation amounts, ascending
    distance: dict[str, Tensor]  # {layer: (K, N)} ||f(T x) - f(x)|| / ||f(x)|| (NaN where ||f(x)|| = 0)
    p_true: Tensor  # (K, N) probability of the true class for the transformed image
    p_original: Tensor  # (N,) probability of the true class for the original image


def background(x: Tensor) -> Tensor:
    """``(N, C, 1, 1)``: the median of each image's border pixels, per channel (the value uncovered pixels get)."""
    check_images(x)
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], dim=-1)  # (N, C, 2H+2W-4)
    return border.median(dim=-1).values[..., None, None]


def sweep_amounts(
    name: str,
    size: Sequence[int],
    max_shift: float = 0.3,
    scale_range: Sequence[float] = (0.6, 1.4),
    max_angle: float = 90.0,
) -> Tensor:
    """The default amounts of one transformation for images of ``size`` ``(H, W)``, ascending, with the identity.

    Shifts: whole pixels up to ``max_shift`` of the side (8 px at 28 px), at most 17 steps; scale: 9 factors over
    ``scale_range`` (steps of 0.1 by default); rotation: 13 angles over ``-max_angle..max_angle`` (15 degrees).
    """
    if name in ("translate_x", "translate_y"):
        side = int(size[-1] if name == "translate_x" else size[-2])
        s = max(1, round(max_shift * side))
        amounts = torch.linspace(-s, s, 2 * min(s, 8) + 1).round()
    elif name == "scale":
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= 1 <= hi:
            raise ValueError(f"scale_range must satisfy 0 < low <= 1 <= high, got {tuple(scale_range)}")
        amounts = torch.linspace(lo, hi, 9)
    elif name == "rotate":
        amounts = torch.linspace(-float(max_angle), float(max_angle), 13)
    else:
        raise ValueError(f"unknown transformation {name!r}; valid: {', '.join(TRANSFORMATIONS)}")
    amounts = torch.cat([amounts, torch.tensor([IDENTITY[name]])]).double()
    return torch.unique(amounts.round(decimals=6)).float()  # sorted, no duplicate, the identity included


def _shift(x: Tensor, bg: Tensor, dx: int, dy: int) -> Tensor:
    """``x`` moved ``dx`` px right and ``dy`` px down, uncovered pixels set to ``bg`` (exact, no interpolation)."""
    h, w = x.shape[-2:]
    out = bg.expand_as(x).clone()
    src_r, dst_r = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
    src_c, dst_c = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
    if src_r.start < src_r.stop and src_c.start < src_c.stop:
        out[..., dst_r, dst_c] = x[..., src_r, src_c]
    return out


def _warp(x: Tensor, bg: Tensor, angles: Tensor, scales: Tensor) -> Tensor:
    """``(K, N, C, H, W)``: ``x`` rotated by ``angles[k]`` degrees (counter-clockwise as seen) and scaled by
    ``scales[k]`` about the image centre, bilinear, in one ``grid_sample`` call; uncovered pixels get ``bg``."""
    k, (n, c, h, w) = len(angles), x.shape
    a = torch.deg2rad(angles.double())
    cos, sin, s = torch.cos(a), torch.sin(a), scales.double()
    # Output pixel p (x right, y down, in pixels from the centre) samples the input at A p, A = R(a)^-1 / s with R
    # the visual counter-clockwise rotation; in grid_sample's normalized coordinates (x scaled by 2/W, y by 2/H):
    theta = torch.zeros(k, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos / s, -sin / s * h / w
    theta[:, 1, 0], theta[:, 1, 1] = sin / s * w / h, cos / s
    grid = F.affine_grid(theta.to(x.device, x.dtype), [k, 1, h, w], align_corners=False)  # (K, H, W, 2)
    # One grid per amount serves every image and channel: the images go in as channels, (K, N*C, H, W).
    centred = (x - bg).reshape(1, n * c, h, w).expand(k, -1, -1, -1)  # outside the image: 0, the background
    out = F.grid_sample(centred, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.view(k, n, c, h, w) + bg


def transform(x: Tensor, name: str, amounts: Tensor | Sequence[float], fill: Tensor | None = None) -> Tensor:
    """``(K, N, C, H, W)``: the images ``x`` ``(N, C, H, W)`` under transformation ``name`` at each of ``amounts``.

    ``fill`` (broadcastable to ``(N, C, 1, 1)``) is the value of uncovered pixels, by default ``background(x)``.
    The identity amount returns ``x`` itself (copied); shifts must be whole pixels.
    """
    check_images(x)
    if name not in TRANSFORMATIONS:
        raise ValueError(f"unknown transformation {name!r}; valid: {', '.join(TRANSFORMATIONS)}")
    amounts = torch.as_tensor(amounts, dtype=torch.float64).flatten().cpu()
    bg = (background(x) if fill is None else torch.as_tensor(fill, dtype=x.dtype, device=x.device)).expand(
        len(x), x.shape[1], 1, 1
    )
    out = torch.empty(len(amounts), *x.shape, dtype=x.dtype, device=x.device)
    identity = amounts == IDENTITY[name]
    out[identity] = x
    todo = torch.nonzero(~identity).flatten()
    if name.startswith("translate"):
        for i in todo.tolist():
            a = float(amounts[i])
            if a != round(a):
                raise ValueError(f"{name} shifts must be whole pixels, got {a}")
            out[i] = _shift(x, bg, int(a), 0) if name == "translate_x" else _shift(x, bg, 0, int(a))
    elif len(todo):
        sel = amounts[todo]
        angles, scales = (sel, torch.ones_like(sel)) if name == "rotate" else (torch.zeros_like(sel), sel)
        if (scales <= 0).any():
            raise ValueError(f"scale factors must be > 0, got {sel.tolist()}")
        out[todo.to(x.device)] = _warp(x, bg, angles, scales)
    return out


@torch.no_grad()
def invariance_sweeps(
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    layers: Sequence[str],
    sweeps: dict[str, tuple[Tensor, Tensor]],
    chunk_size: int = 1024,
) -> dict[str, Sweep]:
    """For each sweep ``name: (images (K, N, C, H, W), amounts (K,))`` of the originals ``x`` ``(N, C, H, W)``
    with true classes ``y`` ``(N,)``: the normalized distance of each layer's output to the original's, and the
    probability of the true class. All images (originals first) go through ``net`` in one batched pass, in chunks
    of at most ``chunk_size`` images. ``net`` must return logits ``(batch, classes)``."""
    check_images(x)
    layers = check_layers(net, list(layers))
    if not layers:
        raise ValueError("invariance_sweeps needs at least one layer")
    y = torch.as_tensor(y, device=x.device).long().flatten()
    n = len(x)
    if len(y) != n:
        raise ValueError(f"y must hold one class per image: {n} images, {len(y)} labels")
    for name, (images, amounts) in sweeps.items():
        if images.dim() != 5 or tuple(images.shape[1:]) != tuple(x.shape) or len(images) != len(amounts):
            raise ValueError(
                f"sweep {name!r}: images must be (K, {', '.join(map(str, x.shape))}) with one amount "
                f"per k, got {tuple(images.shape)} and {len(amounts)} amounts"
            )
    batch = torch.cat([x] + [images.flatten(0, 1) for images, _ in sweeps.values()])  # (N + sum K*N, C, H, W)
    chunk_size = max(int(chunk_size), n)  # the originals are in the first chunk
    dist = {layer: [] for layer in layers}
    probs, ref, ref_norm = [], {}, {}
    with eval_mode(net):
        for start in range(0, len(batch), chunk_size):
            logits, acts = forward_with_activations(net, batch[start : start + chunk_size], layers)
            if logits.dim() != 2:
                raise ValueError(f"the net must return logits (batch, classes), got shape {tuple(logits.shape)}")
            probe = torch.arange(start, start + len(logits), device=x.device) % n  # which original each row is
            probs.append(logits.float().softmax(1).gather(1, y[probe, None]).squeeze(1))
            for layer in layers:
                f = acts[layer].flatten(1).float()
                if start == 0:
                    ref[layer] = f[:n]
                    norm = ref[layer].norm(dim=1)
                    ref_norm[layer] = torch.where(norm > 0, norm, torch.full_like(norm, math.nan))
                dist[layer].append((f - ref[layer][probe]).norm(dim=1) / ref_norm[layer][probe])
    p_all = torch.cat(probs)
    d_all = {layer: torch.cat(v) for layer, v in dist.items()}
    out, at = {}, n
    for name, (images, amounts) in sweeps.items():
        k = len(images)
        rows = slice(at, at + k * n)
        out[name] = Sweep(
            amounts=torch.as_tensor(amounts).float().cpu(),
            distance={layer: d_all[layer][rows].view(k, n).cpu() for layer in layers},
            p_true=p_all[rows].view(k, n).cpu(),
            p_original=p_all[:n].cpu(),
        )
        at += k * n
    return out


def _is_activation(m: nn.Module) -> bool:
    return type(m).__module__ == "torch.nn.modules.activation" and not isinstance(
        m, (nn.Softmax, nn.LogSoftmax, nn.MultiheadAttention)
    )


def _is_pool(m: nn.Module) -> bool:
    return type(m).__module__ == "torch.nn.modules.pooling"


@torch.no_grad()
def default_layers(net: nn.Module, x: Tensor) -> list[str]:
    """The layers the invariance curves follow by default, found from one forward pass of ``x`` (any net):

    - early: the activation (ReLU ...) right after the first ``Conv2d`` (the conv itself if none follows);
    - its pooled output: the first pooling layer run after that, before any other conv / linear layer;
    - penultimate: the layer whose output enters the last ``nn.Linear`` (reshapes such as ``Flatten`` and
      ``Dropout`` in eval mode skipped back to the layer that computed the values).
    """
    leaves = [(name, m) for name, m in net.named_modules() if name and not any(True for _ in m.children())]
    order: list[str] = []  # leaf modules in the order they ran (a module run twice appears twice)
    outputs: list[Tensor] = []  # their outputs, copied (an in-place op later must not change them)
    linear_in: dict[str, Tensor] = {}
    handles = []
    for name, m in leaves:

        def record(mod, inputs, output, name=name):
            if isinstance(output, Tensor):
                order.append(name)
                outputs.append(output.detach().clone())

        handles.append(m.register_forward_hook(record))
        if isinstance(m, nn.Linear):
            handles.append(
                m.register_forward_pre_hook(
                    lambda mod, inputs, name=name: linear_in.__setitem__(name, inputs[0].detach())
                )
            )
    try:
        with eval_mode(net):
            net(x)
    finally:
        for h in handles:
            h.remove()
    modules = dict(leaves)
    picked: list[str] = []
    first_conv = next((i for i, name in enumerate(order) if isinstance(modules[name], nn.Conv2d)), None)
    if first_conv is not None:
        rest = order[first_conv + 1 :]
        early = next((name for name in rest if _is_activation(modules[name])), order[first_conv])
        picked.append(early)
        for name in order[order.index(early) + 1 :]:  # a pooling layer before the next conv / linear layer
            if _is_pool(modules[name]):
                picked.append(name)
                break
            if isinstance(modules[name], (nn.Conv2d, nn.Linear)):
                break
    at = next((i for i in reversed(range(len(order))) if isinstance(modules[order[i]], nn.Linear)), None)
    if at is not None:  # the last Linear run
        target = linear_in[order[at]].flatten(1)
        i, penultimate = at - 1, None
        while i >= 0:  # walk back while the output is still the same values (Flatten, Dropout, Identity ...)
            out = outputs[i]
            if (
                out.shape[0] != target.shape[0]
                or out[0].numel() != target.shape[1]
                or not torch.equal(out.flatten(1), target)
            ):
                break
            penultimate, i = order[i], i - 1
        if penultimate is None and at > 0:  # its input was computed by a function, not a module
            penultimate = order[at - 1]
        if penultimate is not None:
            picked.append(penultimate)
    picked = list(dict.fromkeys(picked))
    if not picked:
        raise ValueError(f"{type(net).__name__} has neither a Conv2d nor a Linear layer: name the layers to follow")
    return picked
