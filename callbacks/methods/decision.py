"""The numbers behind the decision picture (``callbacks.decision``): one forward pass of the probe images that
keeps the chosen layers' activations and the class probabilities, and each image's strongest feature maps.

    acts, probs = decision_pipeline(net, images, ["max_pool_1", "max_pool_2", "relu_3"])   # probs (N, K)
    tiles, channels = strongest_maps(acts["max_pool_2"], 3)                                 # (N, 3, h, w), (N, 3)

Plain PyTorch (no Lightning); activations are read through ``callbacks.hooks``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..hooks import forward_with_activations

__all__ = ["decision_pipeline", "strongest_maps"]


def decision_pipeline(net: nn.Module, images: Tensor, layers: list[str]) -> tuple[dict[str, Tensor], Tensor]:
    """``({layer: activations}, probabilities (N, K))`` for ``images``: one forward pass."""
    logits, acts = forward_with_activations(net, images, layers)
    return acts, torch.softmax(logits.float(), dim=1)


def strongest_maps(maps: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``(tiles (N, k, h, w), channels (N, k))``: each image's ``k`` channels of largest spatial mean, strongest
    first, from ``(N, C, h, w)`` maps (fewer when ``C < k``)."""
    m = torch.nan_to_num(maps.detach().float())
    idx = m.flatten(2).mean(2).topk(min(k, m.shape[1]), dim=1).indices  # (N, k)
    return torch.gather(m, 1, idx[:, :, None, None].expand(-1, -1, *m.shape[2:])), idx
