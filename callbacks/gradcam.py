"""Grad-CAM per probe image (Selvaraju et al., 2017): ``gradcam/<layer>`` (a row per class).

Each row: the class's probe image, then two Grad-CAM maps laid over it (``callbacks.methods.gradcam``): one for the
net's answer, and one for the runner-up class where the answer is right, or the true class where it is wrong.
Coloured where the layer's features raise that class's score, the more strongly the redder, the image left plain
where they do not. Each map cell is drawn at its receptive field's centre (``grad_cam(field=...)``), not stretched
over the whole image as the standard resize does, which pushes evidence at a garment's edge onto the background.
Read it as where the net looks for its answer, and what it would take as evidence for its second choice.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import figures
from .base import legacy_callback
from .hooks import check_layers
from .layers import layer_roles
from .methods.gradcam import grad_cam
from .methods.top_activations import receptive_field
from .technique import LayerError, RenderContext, Technique

__all__ = ["gradcam_picture", "GradCAM", "GradCAMCallback", "CMAP", "MAX_ALPHA"]

CMAP = "jet"  # the usual Grad-CAM colours: blue weak, red strong evidence
MAX_ALPHA = 0.6  # opacity of the colour where the map is 1; it fades to the plain image where the map is 0


def overlay(images: Tensor, maps: Tensor) -> Tensor:
    """RGB ``(N, 3, H, W)`` in [0, 1] images with the ``(N, H, W)`` maps in [0, 1] laid over them in ``CMAP``,
    opacity ``MAX_ALPHA * map``."""
    heat = figures.to_rgb(maps, CMAP, 0.0, 1.0).movedim(0, 1)  # (N, 3, H, W)
    alpha = MAX_ALPHA * maps.float().cpu()[:, None]  # (N, 1, H, W)
    return images * (1 - alpha) + heat * alpha


def gradcam_picture(
    images: Tensor,
    answer_maps: Tensor,
    other_maps: Tensor,
    rows: list[str],
    layer: str,
    step: int,
    placed: bool = True,
    method: str = "Grad-CAM",
) -> Tensor:
    """``(3, H, W)`` uint8 at most ``figures.CARD_WIDTH`` wide: a row per image (``rows``: its label), the image
    ``(N, 3, H, W)`` in [0, 1], then the Grad-CAM maps ``(N, H, W)`` of the net's answer and of the other class
    (runner-up where right, true class where wrong) over it; a colour bar and a title naming the layer and the
    epoch ``step``. ``placed``: the maps' cells sit at their receptive fields' centres (else stretched)."""
    tiles = torch.stack([images, overlay(images, answer_maps), overlay(images, other_maps)], dim=1)  # (N, 3, 3, H, W)
    cols = ["image", "answer", "2nd / true"]
    grid = figures.tile_rows(tiles, rows, cols, cell=images.shape[-1] * 3, max_width=figures.CARD_WIDTH)
    bar = figures.colorbar_strip(
        CMAP, 0.0, 1.0, "evidence / the image's max (uncoloured: none)", figures.CARD_WIDTH - 20
    )
    where = "map cells at their receptive fields' centres" if placed else "map cells stretched over the image"
    notes = [
        figures.text(line, figures.CARD_WIDTH)
        for line in (
            "rows: true class, ✓ right or ✗ wrong (said: the answer)",
            "2nd / true: the runner-up class where right, else the true one",
            "colour: where the features raise that class's score",
            where,
        )
    ]
    body = figures.stack([*notes, grid, bar], dim=1, gap=2)
    return figures.titled(body, f"{layer} {method} - epoch {step}")


class GradCAM(Technique):
    """Log Grad-CAM maps of the probe images (one per shown class) for the net's answer and for the runner-up class
    (the true class where the answer is wrong), each cell drawn at its receptive field's centre where the layer's
    geometry is known (``receptive_field``), else stretched over the image.

    Args:
        layer: a spatial layer (default: the last stage's feature layer, ``layers.layer_roles``; a net without
            spatial layers draws nothing).
    """

    technique = "gradcam"
    method = "Grad-CAM"  # the name in the picture's title
    cam = staticmethod(grad_cam)  # the maps: (net, layer, images, targets, field) -> (N, H, W); a variant's seam
    layer_args = ("layer",)
    layer_example = "{}"

    def __init__(self, layer: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.layer = layer
        self.layer_name: str | None = None
        self.field = None  # the layer's ReceptiveField, or None: the maps are stretched over the image

    def config(self):
        return {"layer": self.layer}

    def configure(self, net, shapes):
        names = check_layers(net, [self.layer]) if self.layer else layer_roles(net, shapes).features[-1:]
        if names and len(shapes.get(names[0], ())) != 3:
            raise LayerError(f"Grad-CAM needs a (C, H, W) layer; {names[0]!r} outputs {shapes.get(names[0])}")
        self.layer_name = names[0] if names else None  # an MLP: nothing to draw
        self.field = None
        if self.layer_name is not None:
            try:
                self.field = receptive_field(net, self.layer_name, self.input_shape)
            except LayerError:  # a module of unknown geometry: the standard stretch
                self.field = None

    def render(self, ctx: RenderContext) -> None:
        if self.layer_name is None:
            return
        x, y = ctx.probe_images()
        with torch.no_grad():
            logits = ctx.net(x)  # (N, K)
        first, second = logits.topk(2, dim=1).indices.unbind(1)  # the answer and the runner-up
        other = torch.where(first == y, second, y)
        maps = self.cam(ctx.net, self.layer_name, torch.cat([x, x]), torch.cat([first, other]), self.field).cpu()
        answer_maps, other_maps = maps.chunk(2)  # (N, H, W) each
        rows = [
            f"{ctx.classes[t]} ✓\n2nd: {ctx.classes[o]}" if t == a else f"{ctx.classes[t]} ✗\nsaid: {ctx.classes[a]}"
            for t, a, o in zip(y.tolist(), first.tolist(), other.tolist(), strict=True)
        ]
        img = gradcam_picture(
            figures.input_rgb(x, ctx.pixel_range),
            answer_maps,
            other_maps,
            rows,
            self.layer_name,
            ctx.step,
            placed=self.field is not None,
            method=self.method,
        )
        ctx.add_image(f"{self.technique}/{self.layer_name}", img)


GradCAMCallback = legacy_callback(GradCAM, "GradCAMCallback")
