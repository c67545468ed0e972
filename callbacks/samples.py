"""At the start of fit: a grid of training samples per class (``samples/train``) and the model graph (Graphs tab).

One row per class, labelled with its name, holding the first ``per_class`` training images of that class as the
net sees them (after standardization, drawn back in pixel range). It shows at a glance which dataset was used and
whether the data look right (orientation, contrast, labels). The graph is traced with one input image.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from . import figures
from .base import legacy_callback
from .technique import RenderContext, Technique, positive_int

__all__ = ["class_grid", "Samples", "SamplesCallback"]


def class_grid(
    x: Tensor,
    y: Tensor,
    classes: tuple[str, ...],
    per_class: int,
    pixel_range: tuple[float, float],
    shown: Sequence[int] | None = None,
) -> Tensor:
    """uint8 ``(3, H, W)``: one row per class of ``shown`` (default: every class) with its first ``per_class``
    images of ``(x, y)`` (blank where a class has fewer), labelled with the class name."""
    shown = list(range(len(classes))) if shown is None else list(shown)
    rgb = figures.input_rgb(x, pixel_range)  # (N, 3, H, W)
    tiles = torch.ones(len(shown), per_class, *rgb.shape[1:])
    for row, c in enumerate(shown):
        idx = torch.nonzero(y.cpu() == c).flatten()[:per_class]
        tiles[row, : len(idx)] = rgb[idx]
    tiles_width = figures.CARD_WIDTH - 60  # the tiles' share of a card; the class labels take the rest
    cell = min(max(x.shape[-1], min(2 * x.shape[-1], tiles_width // per_class)), figures.CARD_WIDTH // per_class)
    return figures.tile_rows(tiles, [f"{c} {classes[c]}" for c in shown], cell=cell)


class Samples(Technique):
    """Log a per-class grid of training samples and the model graph when fit starts.

    Args:
        per_class: images per class in the grid.
        graph: also log the model graph (TensorBoard's Graphs tab).
    """

    technique = "samples"
    layer_args = ()  # names no layer
    evolves = False
    when = "fit_start"  # drawn once, at fit start, in the training process whatever the drawing mode (not on resume)

    def __init__(self, per_class: int = 8, graph: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        positive_int(self, "per_class", per_class)
        self.per_class = per_class
        self.graph = graph

    def render(self, ctx: RenderContext) -> None:
        x, y = ctx.train_samples(self.per_class)
        img = class_grid(x, y, ctx.classes, self.per_class, ctx.pixel_range, ctx.shown)
        ctx.add_image(
            f"{self.technique}/train",
            figures.titled(
                img, "training data", f"the first {self.per_class} training images of each class{ctx.shown_note()}"
            ),
        )
        if self.graph:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings about constants are irrelevant here
                ctx.writer.add_graph(ctx.net, x[:1])
            ctx.logged.append("graph")


SamplesCallback = legacy_callback(Samples, "SamplesCallback")
