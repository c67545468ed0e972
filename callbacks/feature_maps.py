"""Feature maps of each class's probe image: ``feature_maps/<layer>/<class>``.

For every class, the first validation image of that class (fixed for the run) and every channel of each chosen
layer, on a symmetric diverging scale shared by the channels of that picture (blue negative, white zero, red
positive: pre-ReLU conv outputs show both signs, post-ReLU and pooled maps only red). Fully-connected layers are
drawn as a grid of units. Defaults: every conv (pre-ReLU) and ReLU (post-ReLU) layer with a spatial output; add ``max_pool_i`` to see
the pooled maps (for a net without
one, its hidden fully-connected layers).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from callbacks.base import RenderContext, VisualizationCallback, tag_part
from callbacks.hooks import capture_activations, check_layers
from callbacks.render import grey, abs_max, diverging, hstack, label, tile_grid, upscale

__all__ = ["feature_maps", "FeatureMapsCallback"]


def feature_maps(net: nn.Module, images: Tensor, layers: list[str]) -> dict[str, Tensor]:
    """``{layer: activations}`` for ``images`` (N, C, H, W): ``(N, C', H', W')`` or ``(N, U)`` per layer."""
    return capture_activations(net, images, layers)


def _as_maps(act: Tensor) -> Tensor:
    """One sample's activation as ``(C, h, w)`` tiles; a vector of U units becomes one near-square map."""
    if act.dim() == 3:
        return act
    u = act.numel()
    side = math.ceil(math.sqrt(u))
    flat = torch.full((side * side,), float("nan"))
    flat[:u] = act.flatten().float().cpu()
    return flat.view(1, side, side)


class FeatureMapsCallback(VisualizationCallback):
    """Log every channel of the chosen layers for one probe image per class.

    Args:
        layers: layer names (pre-ReLU ``conv_i``, post-ReLU ``relu_i``, ``max_pool_i``, or fully connected).
        tile_size: maps are enlarged to about this many pixels.
    """

    technique = "feature_maps"

    def __init__(self, layers: list[str] | None = None, tile_size: int = 42, **kwargs) -> None:
        super().__init__(**kwargs)
        self.layers = layers
        self.tile_size = tile_size

    def _state_config(self):
        return {"layers": self.layers}

    def configure(self, net, shapes):
        if self.layers is None:
            kinds = (nn.Conv2d, nn.ReLU)
            self.layers = self.spatial_layers(shapes, kinds, net)
            if not self.layers:  # an MLP: its hidden fully-connected layers
                mods = dict(net.named_modules())
                self.layers = [n for n in shapes if isinstance(mods[n], (nn.Linear, nn.ReLU))][:-1]
        check_layers(net, self.layers)

    def render(self, ctx: RenderContext) -> None:
        x, y = self.probe_images(ctx.trainer)
        acts = feature_maps(ctx.net, x, self.layers)
        lo, hi = ctx.pixel_range
        for i, c in enumerate(y.tolist()):
            inp = upscale(grey(x[i, 0], lo, hi), 2)
            name = f"{c}_{tag_part(ctx.classes[c])}"
            for layer in self.layers:
                maps = _as_maps(acts[layer][i].cpu())  # (C, h, w)
                rgb = diverging(maps, abs_max(maps)).movedim(0, 1)  # (C, 3, h, w)
                rgb = upscale(rgb, max(1, self.tile_size // maps.shape[-1]))
                grid = tile_grid(rgb, nrow=min(8, len(rgb)), padding=2)
                img = label(hstack([inp, grid]), f"{ctx.classes[c]} - {layer} {tuple(acts[layer].shape[1:])} epoch {ctx.step}")
                ctx.add_image(f"{self.technique}/{layer}/{name}", img)
