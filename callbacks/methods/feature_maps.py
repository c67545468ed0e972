"""Feature maps of chosen layers: for given images, and averaged per class over many images.

    acts = feature_maps(net, probes, ["conv_1", "relu_1"])                   # {"conv_1": (N, 6, 28, 28), ...}
    means = class_mean_maps(net, x, y, ["conv_1", "relu_1"], num_classes=10) # {"conv_1": (10, 6, 28, 28), ...}

The class-averaged maps are the SimpleCNN source project's "class-wise representative feature maps": what a
channel responds to on average for a class, less tied to one image's quirks than a single probe's maps.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..hooks import activation_pass, capture_activations

__all__ = ["feature_maps", "class_mean_maps"]


def feature_maps(net: nn.Module, images: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
    """``{layer: activations}`` for ``images`` ``(N, C, H, W)``: ``(N, C', H', W')`` or ``(N, U)`` per layer."""
    return capture_activations(net, images, list(layers), stop_after_last=True)


def class_mean_maps(
    net: nn.Module, x: Tensor, y: Tensor, layers: Sequence[str], num_classes: int, batch_size: int = 500
) -> dict[str, Tensor]:
    """``{layer: (num_classes, *shape)}``: each layer's output averaged over the images of each class.

    Computed in batches (only per-class sums are kept, so memory stays small); a class without images gets zeros.
    """
    return activation_pass(net, x, map_layers=layers, labels=y, num_classes=num_classes, batch_size=batch_size)[1]
