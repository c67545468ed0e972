"""Layer responses: ``layer_responses`` (layers x classes heatmap) and ``layer_responses/<layer>`` scalars.

Over the fixed, class-balanced validation set: the mean activation of every layer (the mean over its units, conv
units being the mean of their maps) for every class (the shown classes' columns, ``ShownClasses``). The heatmap has one row per layer, in forward order; the
numbers are the means, the colour says how far each class is above (red) or below (blue) the layer's average over
classes, each row scaled to its own largest deviation (layers live on very different scales). A pale row says the
layer responds alike to every class (early layers: strokes and edges are everywhere); a row with a few strong cells
says the layer has specialised (late layers). One scalar per layer: the mean activation over the whole set.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from .base import FixedSetCallback, RenderContext
from .figures import SIGNED, colorbar
from .hooks import check_layers
from .layers import layer_roles
from .live_figure import LiveFigure, contrast_colours, draw_texts
from .methods.selectivity import class_means

__all__ = ["layer_class_responses", "row_contrast", "short_number", "LayerResponsesChart", "LayerResponsesCallback"]


def layer_class_responses(acts: dict[str, Tensor], labels: Tensor, num_classes: int) -> Tensor:
    """``(L, K)``: the mean activation of each layer for each class, from ``{layer: (N, U) or (N, C, H, W)}`` (conv
    maps spatially averaged first, so every unit counts once). Layers in the order of ``acts``."""
    return torch.stack([class_means(a.flatten(2).mean(2) if a.dim() > 2 else a.flatten(1), labels, num_classes).mean(1)
                        for a in acts.values()])


def row_contrast(values: Tensor) -> Tensor:
    """Each row's deviation from its own mean, divided by the row's largest absolute deviation: ``[-1, 1]``, 0 for
    a row that is the same for every class."""
    dev = values - values.mean(1, keepdim=True)
    scale = dev.abs().amax(1, keepdim=True)
    return dev / torch.where(scale > 1e-12, scale, torch.ones_like(scale))


def short_number(v: float) -> str:
    """``v`` in at most 4 characters where possible (a number in a narrow cell): ``.45``, ``-.45``, ``2.3``, ``12``,
    ``1e3``."""
    if not np.isfinite(v):
        return "nan" if np.isnan(v) else ("inf" if v > 0 else "-inf")
    a = abs(v)
    if a < 0.005:
        return "0"
    if a < 1:
        return f"{v:.2f}".replace("0.", ".", 1)
    if a < 10:
        return f"{v:.1f}"
    if a < 1000:
        return f"{v:.0f}"
    return f"{v:.0e}".replace("e+0", "e").replace("e+", "e")


class LayerResponsesChart:
    """The layers x classes heatmap with the mean in every cell, on the fixed -1..1 contrast scale; built once,
    redrawn by ``draw`` (cell numbers are Pillow text, see ``callbacks.live_figure``)."""

    def __init__(self, layers: list[str], classes: list[str], samples: str, class_axis: str = "class") -> None:
        n, k = len(layers), len(classes)
        self.live = LiveFigure(min(720, 120 + 34 * k), 185 + 22 * n)
        with self.live.rc():
            self.ax = ax = self.live.fig.add_subplot()
            self.im = self.live.animate(ax.imshow(np.zeros((n, k)), cmap=SIGNED, vmin=-1, vmax=1, aspect="auto",
                                                  interpolation="nearest"))
            ax.set_xticks(range(k), list(classes), rotation=45, ha="right", rotation_mode="anchor")
            ax.set_yticks(range(n), layers)
            ax.tick_params(length=0)
            ax.set_xlabel(class_axis)
            ax.set_ylabel("layer (forward order)")
            colorbar(self.live.fig, self.im, ax, "(class mean - layer's mean) / largest |difference|",
                     location="bottom", ticks=[-1, -0.5, 0, 0.5, 1])
            self.live.title(f"Mean activation per layer and class ({samples} each)")
        self.cells = np.array([(j, i) for i in range(n) for j in range(k)], dtype=np.float64)

    def draw(self, resp: Tensor, step: int) -> Tensor:
        """``(3, H, W)`` uint8 for the ``(L, K)`` means ``resp``."""
        contrast = row_contrast(resp.float().cpu()).numpy()
        self.im.set_data(contrast)
        img = self.live.image(step)
        colours = contrast_colours(self.im.cmap(self.im.norm(np.nan_to_num(contrast))))
        texts = [short_number(float(v)) for v in resp.flatten().tolist()]
        return draw_texts(img, self.live.to_pixels(self.ax, self.cells), texts, colours)


class LayerResponsesCallback(FixedSetCallback):
    """Log a layers x classes heatmap of mean activations and one mean-activation scalar per layer.

    Args:
        layers: layers to include (default: every layer but ``flatten`` and ``dropout``, in forward order).
        per_class: samples per class in the fixed validation set.
    """

    technique = "layer_responses"
    max_default_layers = 16  # a row per layer costs little; a deep net gets 16 spread over its depth

    def __init__(self, layers: list[str] | None = None, per_class: int = 500, **kwargs) -> None:
        super().__init__(layers=layers, per_class=per_class, **kwargs)
        self.layer_names: list[str] = []

    def configure(self, net, shapes):
        layers = self.layers
        if layers is None:
            mods = dict(net.named_modules())
            order = layer_roles(net, shapes).order  # outside squeeze-excitation blocks
            layers = self.thin([n for n in order if not isinstance(mods[n], (nn.Flatten, nn.Dropout, nn.Identity))])
        self.layer_names = check_layers(net, layers)
        self.share_layers(self.layer_names, self.per_class)

    def render(self, ctx: RenderContext) -> None:
        acts, y = self.fixed_set_activations(ctx, self.layer_names, self.per_class)
        shown = list(ctx.shown)
        resp = layer_class_responses(acts, y, len(ctx.classes))[:, shown]  # (L, shown classes)
        n = y.cpu().bincount(minlength=len(ctx.classes))[shown]
        samples = f"{int(n.min())}" if int(n.min()) == int(n.max()) else f"{int(n.min())}-{int(n.max())}"
        key = (tuple(self.layer_names), tuple(shown), samples)
        if key not in self._charts:
            self._charts = {key: LayerResponsesChart(self.layer_names, [ctx.classes[c] for c in shown], samples,
                                                     ctx.class_axis())}
        ctx.add_image(self.technique, self._charts[key].draw(resp, ctx.step))
        for layer, a in acts.items():
            ctx.add_scalar(f"{self.technique}/{layer}", float(a.float().mean()))
