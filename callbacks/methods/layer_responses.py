"""Layer responses per class (the numbers behind ``callbacks.layer_responses``): each layer's mean activation for
each class, and how far each class's mean sits from the others' in units of the within-class spread (an effect
size, so layers on very different scales compare).

    resp = layer_class_responses(acts, labels, 10)    # (L, K) from {layer: (N, U) or (N, C, H, W)}
    d = class_effect_sizes(acts, labels, 10)          # (L, K) float32, Cohen's d of each class against the mean

Plain PyTorch (no Lightning).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .selectivity import class_means

__all__ = ["layer_class_responses", "class_effect_sizes"]


def layer_class_responses(acts: dict[str, Tensor], labels: Tensor, num_classes: int) -> Tensor:
    """``(L, K)``: the mean activation of each layer for each class, from ``{layer: (N, U) or (N, C, H, W)}`` (conv
    maps spatially averaged first, so every unit counts once). Layers in the order of ``acts``."""
    return torch.stack(
        [
            class_means(a.flatten(2).mean(2) if a.dim() > 2 else a.flatten(1), labels, num_classes).mean(1)
            for a in acts.values()
        ]
    )


def _layer_means(a: Tensor) -> Tensor:
    """``(N,)`` each sample's mean over the layer's units (conv units being the mean of their maps), in float64."""
    a = a.flatten(2).mean(2) if a.dim() > 2 else a.flatten(1)
    return a.double().mean(1)


def class_effect_sizes(acts: dict[str, Tensor], labels: Tensor, num_classes: int) -> Tensor:
    """``(L, K)`` float32: for each layer of ``{layer: (N, U) or (N, C, H, W)}`` and each class, the class mean of
    the per-sample layer mean minus the mean of those class means, divided by the pooled within-class standard
    deviation of the per-sample layer mean (an effect size, as Cohen's d). Scale-free, so layers compare; a layer
    whose class means differ by sampling noise only gives about ``1 / sqrt(samples per class)``. A class without
    samples gets 0 (and is left out of the mean over classes); no spread within classes (a constant layer, or each
    class constant): ``+-inf`` where the class differs, 0 where it does not; NaN where no class has two samples."""
    labels = labels.cpu().long()
    counts = torch.bincount(labels, minlength=num_classes).double()
    present = counts > 0
    rows = []
    for a in acts.values():
        s = _layer_means(a.detach().cpu())  # (N,)
        means = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, s) / counts.clamp(min=1)
        dof = len(s) - int(present.sum())
        sd = math.sqrt(float(((s - means[labels]) ** 2).sum()) / dof) if dof > 0 else math.nan
        dev = torch.where(present, means - means[present].mean(), torch.zeros_like(means))
        tiny = 1e-9 * max(float(s.abs().max()) if len(s) else 0.0, 1e-30)  # float rounding of a constant
        if sd > tiny:
            rows.append(dev / sd)
        else:  # nan (undefined) stays nan; no spread: any real difference is infinitely many SDs
            rows.append(
                torch.where(dev.abs() > tiny, dev.sign() * math.inf, torch.zeros_like(dev))
                if sd == sd
                else torch.full_like(dev, math.nan)
            )
    return torch.stack(rows).float()
