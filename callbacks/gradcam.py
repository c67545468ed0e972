"""Grad-CAM per probe image (Selvaraju et al., 2017): ``gradcam/<layer>`` (a row per class).

Each row: the class's probe image, then its Grad-CAM map for the true class and for the predicted class, laid over
the image (``callbacks.methods.gradcam``): coloured where the layer's features raise that class's score, the more
strongly the redder, the image left plain where they do not. Read it as where the net looks for its answer: early
in training the maps are diffuse, later they settle on the parts that tell the classes apart; where the prediction
is wrong, the third column shows what the net took for evidence of the other class.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import figures
from .base import LayerError, RenderContext, VisualizationCallback
from .hooks import check_layers
from .layers import layer_roles
from .methods.confusion import predictions
from .methods.gradcam import grad_cam

__all__ = ["gradcam_picture", "GradCAMCallback", "CMAP", "MAX_ALPHA"]

CMAP = "jet"  # the usual Grad-CAM colours: blue weak, red strong evidence
MAX_ALPHA = 0.6  # opacity of the colour where the map is 1; it fades to the plain image where the map is 0


def overlay(images: Tensor, maps: Tensor) -> Tensor:
    """RGB ``(N, 3, H, W)`` in [0, 1] images with the ``(N, H, W)`` maps in [0, 1] laid over them in ``CMAP``,
    opacity ``MAX_ALPHA * map``."""
    heat = figures.to_rgb(maps, CMAP, 0.0, 1.0).movedim(0, 1)  # (N, 3, H, W)
    alpha = MAX_ALPHA * maps.float().cpu()[:, None]  # (N, 1, H, W)
    return images * (1 - alpha) + heat * alpha


def gradcam_picture(
    images: Tensor, true_maps: Tensor, pred_maps: Tensor, rows: list[str], layer: str, step: int
) -> Tensor:
    """``(3, H, W)`` uint8 at most ``figures.CARD_WIDTH`` wide: a row per image (``rows``: its label), the image
    ``(N, 3, H, W)`` in [0, 1], then the Grad-CAM maps ``(N, H, W)`` of its true and its predicted class over it;
    a colour bar and a title naming the layer and the epoch ``step``."""
    tiles = torch.stack([images, overlay(images, true_maps), overlay(images, pred_maps)], dim=1)  # (N, 3, 3, H, W)
    label_w = max(figures.text_width(r) for r in rows) + 8
    cell = max(images.shape[-1], (figures.CARD_WIDTH - label_w) // 3 - 2)
    grid = figures.tile_rows(tiles, rows, ["image", "true", "predicted"], cell=cell, max_width=figures.CARD_WIDTH)
    bar = figures.colorbar_strip(
        CMAP, 0.0, 1.0, "evidence / the image's max (uncoloured: none)", figures.CARD_WIDTH - 20
    )
    notes = [
        figures.text(line, figures.CARD_WIDTH)
        for line in (
            "rows: true class → predicted class (✓: right)",
            "colour: where the features raise that class's score",
        )
    ]
    body = figures.stack([*notes, grid, bar], dim=1, gap=2)
    return figures.titled(body, f"{layer} Grad-CAM - epoch {step}")


class GradCAMCallback(VisualizationCallback):
    """Log Grad-CAM maps of the probe images (one per shown class) for their true and their predicted class.

    Args:
        layer: a spatial layer (default: the last stage's feature layer, ``layers.layer_roles``; a net without
            spatial layers draws nothing).
    """

    technique = "gradcam"
    layer_args = ("layer",)
    layer_example = "{}"

    def __init__(self, layer: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.layer = layer
        self.layer_name: str | None = None

    def _state_config(self):
        return {"layer": self.layer}

    def configure(self, net, shapes):
        names = check_layers(net, [self.layer]) if self.layer else layer_roles(net, shapes).features[-1:]
        if names and len(shapes.get(names[0], ())) != 3:
            raise LayerError(f"Grad-CAM needs a (C, H, W) layer; {names[0]!r} outputs {shapes.get(names[0])}")
        self.layer_name = names[0] if names else None  # an MLP: nothing to draw

    def render(self, ctx: RenderContext) -> None:
        if self.layer_name is None:
            return
        x, y = self.probe_images(ctx.trainer)
        pred = predictions(ctx.net, x)  # (N,)
        maps = grad_cam(ctx.net, self.layer_name, torch.cat([x, x]), torch.cat([y, pred])).cpu()  # (2N, H, W)
        true_maps, pred_maps = maps.chunk(2)
        rows = [
            f"{ctx.classes[t]} " + ("✓" if t == p else f"→ {ctx.classes[p]}")  # the true class, then the answer
            for t, p in zip(y.tolist(), pred.tolist())
        ]
        img = gradcam_picture(
            figures.input_rgb(x, ctx.pixel_range), true_maps, pred_maps, rows, self.layer_name, ctx.step
        )
        ctx.add_image(f"{self.technique}/{self.layer_name}", img)
