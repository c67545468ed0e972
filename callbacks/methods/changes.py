"""What changed in a layer's units between two moments of training.

    then = unit_snapshot(net, "relu_4", acts_then, y, num_classes=10)     # at epoch 2: weights, class means, alive
    now = unit_snapshot(net, "relu_4", acts_now, y, num_classes=10)       # at epoch 3, same fixed set
    ch = compare_snapshots(then, now)
    ch.weight_change      # (U,) ||W_now - W_then|| / ||W_then|| of each unit's incoming weights
    ch.profile_change     # (U,) 1 - Pearson correlation of the unit's class means, then vs now
    ch.dead, ch.came_alive, ch.died, ch.switched                         # (U,) bool

A unit's incoming weights are its row of the layer's own weight for an ``nn.Linear`` / conv layer (a conv unit is
an output channel: its whole ``(C_in, k, k)`` kernel), and those of the conv / linear layer that feeds it for any
other layer (a ReLU, a pooling layer): the last one before it, in module order, with as many outputs as the layer
has units. Activations are ``(N, U)`` over a fixed set (conv channels spatially averaged, as
``callbacks.hooks.collect_activations`` gives them). A unit is *dead* when it is zero on every sample of the set
(for a ReLU: zero at every position of every image), which also leaves its class profile undefined (NaN).

Plain PyTorch (no Lightning); snapshots hold only CPU tensors, so they can go into a checkpoint as they are.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..hooks import check_layers
from .selectivity import class_means

__all__ = [
    "UnitChanges",
    "weight_layer",
    "incoming_weights",
    "unit_snapshot",
    "compare_snapshots",
    "weight_change",
    "profile_change",
]


class UnitChanges(NamedTuple):
    """Per-unit changes of one layer between two snapshots ``then`` and ``now`` (``U`` units)."""

    weight_change: Tensor  # (U,) float: ||dW|| / ||W_then|| of the incoming weights (NaN: no weights known)
    profile_change: Tensor  # (U,) float: 1 - corr(class means then, now) in [0, 2] (NaN: a flat profile)
    dead: Tensor  # (U,) bool: silent on the whole fixed set now
    came_alive: Tensor  # (U,) bool: dead then, not now
    died: Tensor  # (U,) bool: alive then, dead now
    preferred_then: Tensor  # (U,) long: class with the largest mean then
    preferred_now: Tensor  # (U,) long
    switched: Tensor  # (U,) bool: alive both times and the preferred class changed


def _has_weight(m: nn.Module) -> bool:
    return isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and isinstance(getattr(m, "weight", None), Tensor)


def weight_layer(net: nn.Module, layer: str, units: int) -> str | None:
    """The name of the layer whose weights feed ``layer``'s ``units`` units: ``layer`` itself if it is a Linear /
    conv layer, else the last Linear / conv layer before it (module order) with ``units`` outputs; None if none."""
    check_layers(net, [layer])
    names = [name for name, _ in net.named_modules() if name]
    modules = dict(net.named_modules())
    for name in reversed(names[: names.index(layer) + 1]):
        m = modules[name]
        if _has_weight(m):
            return name if m.weight.shape[0] == units else None
    return None


def incoming_weights(net: nn.Module, layer: str, units: int) -> Tensor | None:
    """``(U, fan_in)`` float32 CPU copy of the incoming weights of ``layer``'s units, or None (see ``weight_layer``)."""
    name = weight_layer(net, layer, units)
    if name is None:
        return None
    return dict(net.named_modules())[name].weight.detach().flatten(1).float().cpu().clone()


def unit_snapshot(net: nn.Module, layer: str, acts: Tensor, labels: Tensor, num_classes: int) -> dict[str, Tensor]:
    """What ``compare_snapshots`` needs of ``layer`` now: ``weights`` (U, fan_in) (absent if unknown), class
    ``means`` (K, U) and ``alive`` (U,) bool, from its activations ``acts`` (N, U) over a fixed set."""
    a = acts.flatten(2).mean(2) if acts.dim() > 2 else acts
    snap = {
        "means": class_means(a, labels.to(a.device).long(), num_classes).cpu(),
        "alive": (a != 0).any(0).cpu(),
    }
    w = incoming_weights(net, layer, a.shape[1])
    if w is not None:
        snap["weights"] = w
    return snap


def weight_change(w_then: Tensor, w_now: Tensor) -> Tensor:
    """``(U,)``: ``||w_now[u] - w_then[u]|| / ||w_then[u]||`` per row (NaN for a row that was all zero)."""
    if w_then.shape != w_now.shape:
        raise ValueError(f"weights changed shape: {tuple(w_then.shape)} then, {tuple(w_now.shape)} now")
    w_then, w_now = w_then.flatten(1).double(), w_now.flatten(1).double()
    size = w_then.norm(dim=1)
    change = (w_now - w_then).norm(dim=1) / torch.where(size > 0, size, torch.ones_like(size))
    return torch.where(size > 0, change, torch.full_like(change, float("nan"))).float()


def profile_change(means_then: Tensor, means_now: Tensor) -> Tensor:
    """``(U,)``: 1 - Pearson correlation over classes of each unit's class means ``(K, U)`` then and now; 0 for an
    unchanged profile (or one only scaled or shifted), 2 for a reversed one, NaN where either profile is flat."""
    if means_then.shape != means_now.shape:
        raise ValueError(f"class means changed shape: {tuple(means_then.shape)} then, {tuple(means_now.shape)} now")
    then, now = means_then.double(), means_now.double()
    a, b = then - then.mean(0), now - now.mean(0)
    na, nb = a.norm(dim=0), b.norm(dim=0)
    flat = (na <= 1e-9 * then.abs().amax(0)) | (nb <= 1e-9 * now.abs().amax(0))  # equal class means (or all zero)
    r = (a * b).sum(0) / torch.where(flat, torch.ones_like(na), na * nb)
    change = 1 - r.clamp(-1, 1)
    change = change.masked_fill(change < 1e-9, 0.0)  # rounding (1e-16 for an unchanged profile) is no change
    return torch.where(flat, torch.full_like(r, float("nan")), change).float()


def compare_snapshots(then: dict[str, Tensor], now: dict[str, Tensor]) -> UnitChanges:
    """Per-unit changes between two ``unit_snapshot`` results of the same layer."""
    if then["means"].shape != now["means"].shape:
        raise ValueError(f"the layer changed shape: {tuple(then['means'].shape)} then, {tuple(now['means'].shape)} now")
    u = now["means"].shape[1]
    if "weights" in then and "weights" in now:
        wc = weight_change(then["weights"], now["weights"])
    else:
        wc = torch.full((u,), float("nan"))
    alive_then, alive_now = then["alive"].bool(), now["alive"].bool()
    pref_then, pref_now = then["means"].argmax(0), now["means"].argmax(0)
    return UnitChanges(
        weight_change=wc,
        profile_change=profile_change(then["means"], now["means"]),
        dead=~alive_now,
        came_alive=~alive_then & alive_now,
        died=alive_then & ~alive_now,
        preferred_then=pref_then,
        preferred_now=pref_now,
        switched=alive_then & alive_now & (pref_then != pref_now),
    )
