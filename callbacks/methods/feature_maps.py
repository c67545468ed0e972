"""Feature maps of chosen layers: for given images, and averaged per class over many images.

    acts = feature_maps(net, probes, ["conv_1", "relu_1"])                   # {"conv_1": (N, 6, 28, 28), ...}
    means = class_mean_maps(net, x, y, ["conv_1", "relu_1"], num_classes=10) # {"conv_1": (10, 6, 28, 28), ...}

The class-averaged maps are the SimpleCNN source project's "class-wise representative feature maps": what a
channel responds to on average for a class, less tied to one image's quirks than a single probe's maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..hooks import capture_activations

__all__ = ["feature_maps", "class_mean_maps"]


def feature_maps(net: nn.Module, images: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
    """``{layer: activations}`` for ``images`` ``(N, C, H, W)``: ``(N, C', H', W')`` or ``(N, U)`` per layer."""
    return capture_activations(net, images, list(layers), stop_after_last=True)


@torch.no_grad()
def class_mean_maps(
    net: nn.Module, x: Tensor, y: Tensor, layers: Sequence[str], num_classes: int, batch_size: int = 500
) -> dict[str, Tensor]:
    """``{layer: (num_classes, *shape)}``: each layer's output averaged over the images of each class.

    Computed in batches (only per-class sums are kept, so memory stays small); a class without images gets zeros.
    """
    layers = list(layers)
    sums: dict[str, Tensor] = {}
    counts = torch.bincount(y.long().cpu(), minlength=num_classes).clamp(min=1).float()
    for start in range(0, len(x), batch_size):
        labels = y[start : start + batch_size].long()
        acts = capture_activations(net, x[start : start + batch_size], layers, stop_after_last=True)
        for name, a in acts.items():
            a = a.float()
            if name not in sums:
                sums[name] = torch.zeros(num_classes, *a.shape[1:], device=a.device)
            sums[name].index_add_(0, labels.to(a.device), a)
    return {name: (sums[name].cpu() / counts.view(-1, *[1] * (sums[name].dim() - 1))) for name in layers}
