"""First-layer filters as images: ``filters/<layer>``.

Conv filters ``(out, in, kh, kw)`` become one tile per (unit, input channel); an MLP's first ``Linear(784, H)``
becomes one 28x28 tile per hidden unit. All tiles share one symmetric, diverging scale (blue negative, white
zero, red positive) whose limit is fixed at the first picture of the run (1.25 x the largest |weight| then) and
kept in the callback's state, so tiles are comparable across units *and* epochs; the limit is printed on the image.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from callbacks.base import LayerError, RenderContext, VisualizationCallback
from callbacks.render import abs_max, diverging, label, tile_grid, upscale

__all__ = ["filter_tiles", "first_layer", "FiltersCallback"]


def first_layer(net: nn.Module) -> str:
    """Name of the first ``Conv2d`` or ``Linear`` in the net."""
    for name, m in net.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            return name
    raise LayerError(f"{type(net).__name__} has no Conv2d or Linear layer")


def filter_tiles(net: nn.Module, layer: str) -> Tensor:
    """Weights of ``layer`` as ``(N, kh, kw)`` tiles: conv filters per (unit, input channel), or Linear rows
    reshaped to square images (784 inputs -> 28x28)."""
    m = dict(net.named_modules()).get(layer)
    if isinstance(m, nn.Conv2d):
        w = m.weight.detach()
        return w.reshape(-1, *w.shape[-2:])
    if isinstance(m, nn.Linear):
        side = math.isqrt(m.in_features)
        if side * side != m.in_features:
            raise LayerError(f"Linear layer {layer!r} has {m.in_features} inputs, not a square image")
        return m.weight.detach().reshape(-1, side, side)
    raise LayerError(f"layer {layer!r} is {type(m).__name__}, not a Conv2d or Linear layer")


class FiltersCallback(VisualizationCallback):
    """Log the first layer's weights as an image grid at the end of every ``every_n_epochs`` validation.

    Args:
        layer: a Conv2d or Linear layer (default: the first one of the net).
        vmax: the colour scale limit; default: fixed at the first picture (1.25 x max |weight|).
        tile_size: tiles are enlarged to about this many pixels (nearest neighbour).
    """

    technique = "filters"

    def __init__(self, layer: str | None = None, vmax: float | None = None, tile_size: int = 40, **kwargs) -> None:
        super().__init__(**kwargs)
        self.layer = layer
        self.vmax = vmax
        self.tile_size = tile_size

    def _state_config(self):
        return {"layer": self.layer}

    def configure(self, net, shapes):
        self.layer = self.layer or first_layer(net)
        filter_tiles(net, self.layer)  # raises for an unknown or unsuitable layer

    def extra_state(self):
        return {"vmax": self.vmax}

    def load_extra_state(self, state):
        self.vmax = state.get("vmax", self.vmax)

    def render(self, ctx: RenderContext) -> None:
        tiles = filter_tiles(ctx.net, self.layer).cpu()  # (N, kh, kw)
        if self.vmax is None:
            self.vmax = 1.25 * abs_max(tiles)
        rgb = diverging(tiles, self.vmax).movedim(0, 1)  # (N, 3, kh, kw)
        rgb = upscale(rgb, max(1, self.tile_size // tiles.shape[-1]))
        grid = tile_grid(rgb, nrow=min(8, len(rgb)), padding=2)
        ctx.add_image(f"{self.technique}/{self.layer}", label(grid, f"{self.layer} epoch {ctx.step}  scale +-{self.vmax:.3g}"))
