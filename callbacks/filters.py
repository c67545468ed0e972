"""First-layer filters as images: ``filters/<layer>``.

Conv filters ``(out, in, kh, kw)`` become one tile per unit (a row of tiles per unit when it has several input
channels; an RGB tile when it has three); an MLP's first ``Linear(784, H)`` becomes one 28x28 tile per hidden unit.
All tiles share one diverging scale (blue negative, white zero, red positive) with a colour bar, kept across epochs
(``Technique.scale``), so tiles are comparable across units *and* epochs.
"""

from __future__ import annotations

import torch

from . import figures
from .base import legacy_callback
from .hooks import check_layers
from .methods.filters import filter_tiles, first_layer
from .technique import RenderContext, Technique

__all__ = ["Filters", "FiltersCallback"]


class Filters(Technique):
    """Log the first layer's weights as an image grid at the end of every ``every_n_epochs`` validation.

    Args:
        layer: a Conv2d or Linear layer (default: the first one of the net).
        vmax: a fixed colour-scale limit; default: chosen at the first picture and raised when exceeded.
        max_units: units shown (the first ones).
    """

    technique = "filters"
    layer_args = ("layer",)
    layer_example = "{}"

    def __init__(self, layer: str | None = None, vmax: float | None = None, max_units: int = 64, **kwargs) -> None:
        super().__init__(**kwargs)
        self.layer = layer
        self.vmax = vmax
        self.max_units = max_units

    def config(self):
        return {"layer": self.layer}

    def configure(self, net, shapes):
        self.layer_name = check_layers(net, [self.layer])[0] if self.layer else first_layer(net)
        filter_tiles(net, self.layer_name)  # raises for an unknown or unsuitable layer

    def render(self, ctx: RenderContext) -> None:
        m = dict(ctx.net.named_modules())[self.layer_name]
        w = m.weight.detach().float().cpu()
        w = w.view(len(w), 1, *filter_tiles(ctx.net, self.layer_name).shape[-2:]) if w.dim() == 2 else w
        w = w[: self.max_units]  # (U, in, kh, kw)
        vmax = self.vmax or self.scale(self.layer_name, figures.abs_max(w))
        u, cin = w.shape[:2]
        if cin == 3:  # RGB filters: grey is 0, each channel on the same signed scale
            tiles = (w / (2 * vmax) + 0.5).clamp(0, 1)  # (U, 3, kh, kw)
            legend = f"RGB filters: grey = 0, full colour = +-{vmax:.3g}"
        else:
            tiles = figures.to_rgb(w.flatten(0, 1), figures.SIGNED, vmax=vmax).movedim(0, 1)  # (U * in, 3, kh, kw)
            legend = None
        if cin in (1, 3):  # units in rows of `per_row`
            per_row = 8 if u > 8 else u
            pad = -u % per_row
            tiles = torch.cat([tiles, torch.ones(pad, *tiles.shape[1:])]).view(-1, per_row, *tiles.shape[1:])
            if u <= per_row:  # one row: each column is a unit
                rows, cols, what = [""], [str(j) for j in range(u)], "one filter per unit (column)"
            else:
                rows = [f"{i}-{min(i + per_row, u) - 1}" for i in range(0, u, per_row)]
                cols, what = [f"+{j}" for j in range(per_row)], "unit = row's first + column"
        else:  # a row per unit, a column per input channel (at most 8)
            tiles = tiles.view(u, cin, *tiles.shape[1:])[:, :8]
            rows, cols, what = (
                [str(i) for i in range(u)],
                [str(j) for j in range(tiles.shape[1])],
                "rows: units; columns: input channels",
            )
        side = tiles.shape[-1]
        tiles_width = figures.CARD_WIDTH - 20  # the tiles' share of a card; the unit labels take the rest
        grid = figures.tile_rows(
            tiles, rows, cols, cell=max(32, side * max(1, min(56, tiles_width // tiles.shape[1]) // side))
        )
        parts = [grid]
        if legend is None:
            parts.append(
                figures.colorbar_strip(
                    figures.SIGNED,
                    -vmax,
                    vmax,
                    "weight (blue < 0 < red)",
                    min(max(grid.shape[2], 300), figures.CARD_WIDTH),
                )
            )
        body = figures.titled(figures.stack(parts, dim=1, gap=2), f"{tuple(m.weight.shape)} weights; {what}", legend)
        ctx.add_image(
            f"{self.technique}/{self.layer_name}", figures.titled(body, f"{self.layer_name} filters - epoch {ctx.step}")
        )


FiltersCallback = legacy_callback(Filters, "FiltersCallback")
