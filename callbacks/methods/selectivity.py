"""Per-class statistics of unit activations: class means and the class selectivity index (Morcos et al. 2018)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["class_means", "selectivity_index", "shown_units"]


def class_means(acts: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``(num_classes, U)`` mean activation of each unit per class; ``acts`` is ``(N, U)`` or ``(N, C, H, W)``
    (spatially averaged). A class without samples gets zeros."""
    a = acts.flatten(2).mean(2) if acts.dim() > 2 else acts
    a = a.float()
    sums = torch.zeros(num_classes, a.shape[1], dtype=a.dtype, device=a.device).index_add_(0, labels, a)
    counts = torch.bincount(labels, minlength=num_classes).clamp(min=1).to(a.dtype)
    return sums / counts[:, None]


def selectivity_index(means: Tensor, eps: float = 1e-12) -> Tensor:
    """``(U,)`` class selectivity index from ``(num_classes, U)`` class means; 0 where a unit is silent."""
    k = means.shape[0]
    mu_max = means.max(0).values
    mu_rest = (means.sum(0) - mu_max) / (k - 1)
    denom = mu_max + mu_rest
    si = (mu_max - mu_rest) / torch.where(denom.abs() > eps, denom, torch.ones_like(denom))
    return torch.where(denom.abs() > eps, si, torch.zeros_like(si))


def shown_units(means: Tensor, max_units: int) -> Tensor:
    """Which units (columns) of class means ``(K, U)`` a chart shows: all of them, in order, when ``U <= max_units``;
    else the ``max_units`` whose means vary most across the ``K`` classes, sorted by preferred class (then index)."""
    u = means.shape[1]
    if u <= max_units:
        return torch.arange(u)
    top = means.float().var(0).topk(max_units).indices.sort().values
    preferred = means[:, top].argmax(0)
    return top[torch.argsort(preferred * u + top)]
