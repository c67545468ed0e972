"""Occlusion sensitivity (Zeiler & Fergus, 2014, section 4.2): which parts of the image the classifier relies on.

    occ = occlusion_sensitivity(net, images, targets, patch=7, stride=2, fill=lo)
    occ.drop            # (N, R, C): p(target | image) - p(target | image with the patch at row r, column c)
    occ.predicted       # (N, R, C): the net's argmax class with the patch there (Z&F figure 7 (e))
    heat = sensitivity_map(occ, (28, 28), 7)   # (N, 28, 28): the mean drop of the positions covering each pixel

A ``patch x patch`` square of value ``fill`` (on every channel) is slid over each image; its top-left corners are
``0, stride, 2 * stride, ...`` up to ``size - patch`` along each axis, plus ``size - patch`` itself when the stride
does not land on it, so the last row and column of pixels are always covered. A positive drop means that hiding
that area lowers the probability of the true class (the net looks there); a negative one that it raises it.

How: every occluded copy of every image goes through the net in as few forward passes as ``batch_size`` allows
(for 10 images, a 7-pixel patch and stride 2 on 28x28: 10 x 12 x 12 = 1440 copies, one pass). A copy whose patch
only covers pixels that already equal ``fill`` is the image itself (blank background, when ``fill`` is the
background value; equal means within float rounding, ``|pixel - fill| <= 1e-6 * max(1, |fill|)``, since a
standardized background and ``pixel_range[0]`` may differ in the last bit): it is not run, its drop is exactly 0
and its prediction the image's own (running it would only add rounding noise of order 1e-8, because a
convolution's result can depend on the batch it is computed in).

Pure functions on a plain ``nn.Module`` (no Lightning): the net runs in eval mode (dropout off) and every
module's train/eval flag is restored; no gradients are taken; they work under ``torch.no_grad()`` and
``torch.inference_mode()``. Probabilities are the softmax of the net's logits, computed in at least float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..hooks import as_int, check_images, eval_mode

__all__ = ["Occlusion", "occlusion_sensitivity", "patch_positions", "sensitivity_map"]


class Occlusion(NamedTuple):
    """The result of ``occlusion_sensitivity`` for ``N`` images and ``R x C`` patch positions."""

    drop: Tensor  # (N, R, C) float: p(target | image) - p(target | occluded image)
    predicted: Tensor  # (N, R, C) long: argmax class of the occluded image
    base_prob: Tensor  # (N,) float: p(target | image)
    base_predicted: Tensor  # (N,) long: argmax class of the image
    rows: Tensor  # (R,) long: top-left row of each patch position
    cols: Tensor  # (C,) long: top-left column of each patch position
    patch: int  # side of the square patch, in pixels


_SAME = 1e-6  # pixels within this (relative) of `fill` already equal it: standardized data's background differs
# from pixel_range[0] by float32 rounding (one ulp for MNIST)


def patch_positions(size: int, patch: int, stride: int) -> list[int]:
    """Top-left corners along one axis of length ``size``: ``0, stride, ...`` up to ``size - patch``, with
    ``size - patch`` added when the stride does not land on it (the patch then sits flush with the border)."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def _cover(starts: Tensor, patch: int, size: int) -> Tensor:
    """``(len(starts), size)`` bool: does the patch starting at ``starts[i]`` cover index ``j``."""
    idx = torch.arange(size, device=starts.device)
    return (idx >= starts[:, None]) & (idx < starts[:, None] + patch)


def _masks(rows: Tensor, cols: Tensor, patch: int, h: int, w: int) -> Tensor:
    """``(R * C, H, W)`` bool: the pixels each patch position covers (row-major over positions)."""
    rm, cm = _cover(rows, patch, h), _cover(cols, patch, w)
    return (rm[:, None, :, None] & cm[None, :, None, :]).reshape(len(rows) * len(cols), h, w)


def _check_args(images, targets, patch, stride, fill, batch_size) -> tuple[Tensor, int, int, float, int]:
    check_images(images)
    n, _, h, w = images.shape
    if isinstance(targets, Tensor):
        t = targets
    else:
        try:
            t = torch.as_tensor(targets)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"targets must be class indices, one per image (N = {n}), got {targets!r}") from e
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ValueError(f"targets must be integer class indices, got dtype {t.dtype}")
    if t.dim() != 1 or len(t) != n:
        raise ValueError(f"targets must have shape ({n},), one class index per image, got shape {tuple(t.shape)}")
    patch = as_int(patch, "patch")
    if not 1 <= patch <= min(h, w):
        raise ValueError(f"patch must be in 1..{min(h, w)} (the images are {h}x{w}), got {patch}")
    stride = as_int(stride, "stride")
    if stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride}")
    batch_size = as_int(batch_size, "batch_size")
    if batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size}")
    if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not math.isfinite(fill):
        raise ValueError(f"fill must be a finite number (the occluder's value, in the images' units), got {fill!r}")
    return t.to(device=images.device, dtype=torch.long), patch, stride, float(fill), batch_size


def _probs(net: nn.Module, x: Tensor) -> Tensor:
    logits = net(x)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or len(logits) != len(x):
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"the net must return logits shaped (batch, num_classes) = ({len(x)}, K), got {got}")
    return torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1)


def occlusion_sensitivity(
    net: nn.Module,
    images: Tensor,
    targets: Tensor | Sequence[int],
    patch: int = 7,
    stride: int = 2,
    fill: float = 0.0,
    batch_size: int = 4096,
) -> Occlusion:
    """Slide a ``patch x patch`` square of value ``fill`` over each image and record the drop in the probability
    of its target class, and the class the net predicts, at every patch position.

    Args:
        net: a classifier returning logits ``(B, K)``.
        images: ``(N, C, H, W)`` floating-point inputs, as the net sees them (e.g. standardized).
        targets: ``(N,)`` class index per image (the true class).
        patch: side of the square occluder, in pixels, ``1..min(H, W)``.
        stride: step between patch positions, ``>= 1`` (the last position is flush with the border).
        fill: the occluder's value in the images' units (for standardized data, the standardized value: the
            black background is ``pixel_range[0]``); it replaces every channel under the patch.
        batch_size: most images per forward pass (the occluded copies of all images are batched together).

    Returns:
        ``Occlusion(drop, predicted, base_prob, base_predicted, rows, cols, patch)``: ``drop`` and ``predicted``
        are ``(N, R, C)`` over the positions whose top-left corners are ``rows`` (R,) x ``cols`` (C,).

    Raises:
        ValueError: ``images`` not a 4-D float tensor; ``targets`` not ``N`` integer indices, or out of range of the
            net's classes; ``patch``, ``stride``, ``batch_size`` or ``fill`` invalid (the message names the value
            and the valid range); the net does not return ``(B, K)`` logits.
    """
    targets, patch, stride, fill, batch_size = _check_args(images, targets, patch, stride, fill, batch_size)
    n, _, h, w = images.shape
    device = images.device
    rows = torch.tensor(patch_positions(h, patch, stride), dtype=torch.long, device=device)
    cols = torch.tensor(patch_positions(w, patch, stride), dtype=torch.long, device=device)
    r, c = len(rows), len(cols)
    with torch.no_grad(), eval_mode(net):
        x = images.detach()
        masks = _masks(rows, cols, patch, h, w)  # (P, H, W)
        base = torch.cat([_probs(net, x[s : s + batch_size]) for s in range(0, n, batch_size)]) if n else None
        if base is None:
            empty = torch.zeros(0, r, c, device=device)
            return Occlusion(
                empty,
                empty.long(),
                torch.zeros(0, device=device),
                torch.zeros(0, dtype=torch.long, device=device),
                rows,
                cols,
                patch,
            )
        k = base.shape[1]
        bad = targets[(targets < 0) | (targets >= k)]
        if len(bad):
            raise ValueError(
                f"targets must be class indices in 0..{k - 1} (the net has {k} classes), got {bad.tolist()}"
            )
        base_prob = base[torch.arange(n, device=device), targets]
        base_pred = base.argmax(dim=1)
        # copies whose patch covers only pixels already equal to `fill` are the image itself: not run
        differs = ~((x - fill).abs() <= _SAME * max(1.0, abs(fill))).all(dim=1)  # (N, H, W); NaN differs
        changed = (differs.flatten(1).to(base.dtype) @ masks.flatten(1).to(base.dtype).T) > 0  # (N, P)
        drop = torch.zeros(n, r * c, dtype=base.dtype, device=device)
        predicted = base_pred[:, None].expand(n, r * c).clone()
        todo = torch.nonzero(changed)  # (M, 2): (image, position), image-major
        fill_t = torch.tensor(fill, dtype=x.dtype, device=device)
        for s in range(0, len(todo), batch_size):
            ni, pi = todo[s : s + batch_size].unbind(1)
            probs = _probs(net, torch.where(masks[pi].unsqueeze(1), fill_t, x[ni]))
            drop[ni, pi] = base_prob[ni] - probs[torch.arange(len(ni), device=device), targets[ni]]
            predicted[ni, pi] = probs.argmax(dim=1)
    return Occlusion(drop.view(n, r, c), predicted.view(n, r, c), base_prob, base_pred, rows, cols, patch)


def sensitivity_map(occ: Occlusion, image_hw: Sequence[int] | None = None, patch: int | None = None) -> Tensor:
    """``(N, H, W)``: for each pixel, the mean ``drop`` over every patch position whose patch covers it (so the map
    lines up with the image). Pixels no position covers (only when ``stride > patch``) are NaN.

    ``image_hw`` is ``(H, W)`` of the images and ``patch`` the patch side; by default the smallest image that
    holds every position and ``occ.patch``.
    """
    patch = occ.patch if patch is None else as_int(patch, "patch")
    rows, cols = occ.rows.long(), occ.cols.long()
    need = (int(rows.max()) + patch, int(cols.max()) + patch) if len(rows) and len(cols) else (0, 0)
    h, w = need if image_hw is None else (as_int(image_hw[0], "image_hw[0]"), as_int(image_hw[1], "image_hw[1]"))
    if patch < 1 or h < need[0] or w < need[1]:
        raise ValueError(
            f"patch {patch} at rows {rows.tolist()} and columns {cols.tolist()} does not fit an image of {h}x{w} "
            f"(needs patch >= 1 and at least {need[0]}x{need[1]})"
        )
    if occ.drop.shape[1:] != (len(rows), len(cols)):
        raise ValueError(f"occ.drop must be (N, {len(rows)}, {len(cols)}), got {tuple(occ.drop.shape)}")
    drop = occ.drop.detach()
    dtype = drop.dtype if drop.is_floating_point() else torch.float32
    cover = _masks(rows.to(drop.device), cols.to(drop.device), patch, h, w).flatten(1).to(dtype)  # (P, H*W)
    total = drop.reshape(len(drop), -1).to(dtype) @ cover  # (N, H*W)
    count = cover.sum(0)
    out = torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))
    return out.view(len(drop), h, w)
