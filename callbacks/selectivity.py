"""Class selectivity of units: ``selectivity/<layer>`` (Morcos et al. 2018).

For a fixed, class-balanced set of validation samples: each unit's mean activation per class (conv units: the
mean of the channel's map), drawn as a units x classes heatmap with units sorted by preferred class (each row
scaled to its own maximum), and each unit's class selectivity index

    SI = (mu_max - mu_rest) / (mu_max + mu_rest)

with ``mu_max`` the largest class mean and ``mu_rest`` the mean over the other classes: 0 for a unit that responds
equally to all classes, 1 for one that responds to a single class only. Logged as scalar
``selectivity/<layer>/mean_index`` and a histogram ``selectivity/<layer>/index``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from callbacks.base import FixedSetCallback, RenderContext
from callbacks.hooks import check_layers, collect_activations
from callbacks.render import hstack, label, sequential, vstack

__all__ = ["class_means", "selectivity_index", "collect_activations", "selectivity_heatmap", "SelectivityCallback"]


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


def selectivity_heatmap(means: Tensor, classes: tuple[str, ...], cell: tuple[int, int] = (3, 14)) -> Tensor:
    """Units sorted by preferred class (then by selectivity), each row scaled to its max; ``(3, H, W)``."""
    m = means.float().cpu().T  # (U, K)
    pref = m.argmax(1)
    si = selectivity_index(m.T)
    order = sorted(range(len(m)), key=lambda u: (int(pref[u]), -float(si[u])))
    m = m[order]
    row_max = m.abs().max(1, keepdim=True).values
    norm = m / torch.where(row_max > 0, row_max, torch.ones_like(row_max))
    rgb = sequential(norm, 0.0, 1.0)  # (3, U, K)
    h, w = cell
    rgb = rgb.repeat_interleave(h, 1).repeat_interleave(w, 2)
    header = hstack([label(torch.ones(3, 1, w), str(i)) for i in range(len(classes))], gap=0)
    return vstack([header, rgb], gap=0)


class SelectivityCallback(FixedSetCallback):
    """Log units x classes heatmaps and class selectivity indices of the chosen layers.

    Args:
        layers: layers to analyse (default: every ReLU, i.e. post-ReLU activations).
        per_class: samples per class in the fixed validation set (the source project used 500).
    """

    technique = "selectivity"

    def configure(self, net, shapes):
        if self.layers is None:
            self.layers = [n for n, m in net.named_modules() if isinstance(m, nn.ReLU)]
        check_layers(net, self.layers)
        self.share_layers(self.layers, self.per_class)

    def render(self, ctx: RenderContext) -> None:
        acts, y = self.fixed_set_activations(ctx, self.layers, self.per_class)
        for layer in self.layers:
            means = class_means(acts[layer], y, len(ctx.classes))
            si = selectivity_index(means)
            img = selectivity_heatmap(means, ctx.classes)
            img = label(img, f"{layer}: units x classes, mean SI {float(si.mean()):.3f}, epoch {ctx.step}")
            ctx.add_image(f"{self.technique}/{layer}", img)
            ctx.add_scalar(f"{self.technique}/{layer}/mean_index", float(si.mean()))
            ctx.add_histogram(f"{self.technique}/{layer}/index", si)
