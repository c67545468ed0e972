"""First-layer weights as tiles (the numbers behind ``callbacks.filters``).

    first_layer(net)                      # "conv_1": the first Conv2d or Linear
    tiles = filter_tiles(net, "conv_1")   # (out * in, kh, kw); an MLP's Linear(784, H): (H, 28, 28)

Plain PyTorch (no Lightning).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from ..hooks import LayerError, check_layers

__all__ = ["first_layer", "filter_tiles"]


def first_layer(net: nn.Module) -> str:
    """Name of the first ``Conv2d`` or ``Linear`` in the net."""
    for name, m in net.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            return name
    raise LayerError(f"{type(net).__name__} has no Conv2d or Linear layer")


def filter_tiles(net: nn.Module, layer: str) -> Tensor:
    """Weights of ``layer`` as ``(N, kh, kw)`` tiles: conv filters per (unit, input channel), or Linear rows
    reshaped to square images (784 inputs -> 28x28)."""
    check_layers(net, [layer])  # an unknown name lists the valid ones
    m = dict(net.named_modules())[layer]
    if isinstance(m, nn.Conv2d):
        w = m.weight.detach()
        return w.reshape(-1, *w.shape[-2:])
    if isinstance(m, nn.Linear):
        side = math.isqrt(m.in_features)
        if side * side != m.in_features:
            raise LayerError(f"Linear layer {layer!r} has {m.in_features} inputs, not a square image")
        return m.weight.detach().reshape(-1, side, side)
    raise LayerError(f"layer {layer!r} is {type(m).__name__}, not a Conv2d or Linear layer")
