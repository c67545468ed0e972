"""Layer responses: ``layer_responses`` (layers x classes heatmap) and ``layer_responses/<layer>`` scalars.

Over the fixed, class-balanced validation set: the mean activation of every layer (the mean over its units, conv
units being the mean of their maps) for every class (the shown classes' columns, ``ShownClasses``). The heatmap has one
row per layer, in forward order; the numbers are the means; the colour is an effect size (``class_effect_sizes``, in
``callbacks.methods.layer_responses``): how far each class's mean sits above (red) or below (blue) the layer's mean over
classes, in units of the layer's pooled within-class standard deviation of the per-sample layer mean, on one fixed scale
for every row and epoch (-2..2, clipped). Layers live on very different scales, and a difference means something only
against the spread of single samples: a pale row says the layer's class means differ by less than its sample-to-sample
noise (the layer treats classes alike), a dark cell that the class is told apart from the others by the layer's mean
alone. One scalar per layer: the mean activation over the whole set.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor, nn

from .base import legacy_callback
from .figures import SIGNED, colorbar
from .hooks import check_layers
from .layers import layer_roles
from .live_figure import LiveFigure, contrast_colours, draw_texts
from .methods.layer_responses import class_effect_sizes, layer_class_responses
from .technique import FixedSetTechnique, RenderContext

__all__ = ["EFFECT_LIMIT", "short_number", "LayerResponsesChart", "LayerResponses", "LayerResponsesCallback"]


EFFECT_LIMIT = 2.0  # the colour scale's ends, in within-class standard deviations (a large effect: Cohen's d of 2)


def short_number(v: float) -> str:
    """``v`` in at most 4 characters where possible (a number in a narrow cell), two significant digits below 10:
    ``.45``, ``-.45``, ``.004``, ``2.3``, ``12``, ``1e3``; ``0`` only for exactly zero (a dead layer)."""
    if not np.isfinite(v):
        return "nan" if np.isnan(v) else ("inf" if v > 0 else "-inf")
    a = abs(v)
    if a == 0:
        return "0"
    if a < 0.001:
        return f"{v:.0e}".replace("e-0", "e-")
    if a < 0.00995:
        return f"{v:.3f}".replace("0.", ".", 1)
    if a < 0.995:
        return f"{v:.2f}".replace("0.", ".", 1)
    if a < 9.95:
        return f"{v:.1f}"
    if a < 999.5:
        return f"{v:.0f}"
    return f"{v:.0e}".replace("e+0", "e").replace("e+", "e")


class LayerResponsesChart:
    """The layers x classes heatmap with the mean in every cell, coloured by the effect size on the fixed
    ``-EFFECT_LIMIT..EFFECT_LIMIT`` scale (clipped); built once, redrawn by ``draw`` (cell numbers are Pillow text,
    see ``callbacks.live_figure``)."""

    def __init__(self, layers: list[str], classes: list[str], samples: str, class_axis: str = "class") -> None:
        n, k = len(layers), len(classes)
        self.live = LiveFigure(min(720, 120 + 34 * k), 185 + 22 * n)
        with self.live.rc():
            self.ax = ax = self.live.fig.add_subplot()
            self.im = self.live.animate(
                ax.imshow(
                    np.zeros((n, k)),
                    cmap=SIGNED,
                    vmin=-EFFECT_LIMIT,
                    vmax=EFFECT_LIMIT,
                    aspect="auto",
                    interpolation="nearest",
                )
            )
            ax.set_xticks(range(k), list(classes), rotation=45, ha="right", rotation_mode="anchor")
            ax.set_yticks(range(n), layers)
            ax.tick_params(length=0)
            ax.set_xlabel(class_axis)
            ax.set_ylabel("layer (forward order)")
            colorbar(
                self.live.fig,
                self.im,
                ax,
                "colour: (class mean - mean) / within-class SD\n"
                f"clipped at \u00b1{EFFECT_LIMIT:g}; pale: alike within noise",
                location="bottom",
                pad=0.12,
                extend="both",  # pointed ends: effects beyond the scale are clipped to its end colours
                ticks=np.linspace(-EFFECT_LIMIT, EFFECT_LIMIT, 5),
            )
            self.live.title(f"Class means per layer ({samples} images each)")
        self.cells = np.array([(j, i) for i in range(n) for j in range(k)], dtype=np.float64)

    def draw(self, resp: Tensor, effect: Tensor, step: int) -> Tensor:
        """``(3, H, W)`` uint8 for the ``(L, K)`` means ``resp`` (printed) and effect sizes ``effect`` (colour)."""
        d = np.clip(np.nan_to_num(effect.float().cpu().numpy(), nan=0.0), -EFFECT_LIMIT, EFFECT_LIMIT)
        self.im.set_data(d)
        img = self.live.image(step)
        colours = contrast_colours(self.im.cmap(self.im.norm(d)))
        texts = [short_number(float(v)) for v in resp.flatten().tolist()]
        return draw_texts(img, self.live.to_pixels(self.ax, self.cells), texts, colours)


class LayerResponses(FixedSetTechnique):
    """Log a layers x classes heatmap of mean activations, coloured by effect size (``class_effect_sizes``), and one
    mean-activation scalar per layer.

    Args:
        layers: layers to include (default: every layer but ``flatten`` and ``dropout``, in forward order).
        per_class: samples per class in the fixed validation set.
    """

    technique = "layer_responses"
    max_default_layers = 16  # a row per layer costs little; a deep net gets 16 spread over its depth

    def configure(self, net, shapes):
        layers = self.layers
        if layers is None:
            mods = dict(net.named_modules())
            order = layer_roles(net, shapes).order  # outside squeeze-excitation blocks
            layers = self.thin([n for n in order if not isinstance(mods[n], (nn.Flatten, nn.Dropout, nn.Identity))])
        self.layer_names = check_layers(net, layers)
        self.share_layers(self.layer_names, self.per_class)

    def render(self, ctx: RenderContext) -> None:
        acts, y = ctx.fixed_set_activations(self.layer_names, self.per_class)
        shown = list(ctx.shown)
        resp = layer_class_responses(acts, y, len(ctx.classes))[:, shown]  # (L, shown classes)
        effect = class_effect_sizes(acts, y, len(ctx.classes))[:, shown]  # against every class's mean, as resp
        samples = ctx.sample_counts(y)
        key = (tuple(self.layer_names), tuple(shown), samples)
        if key not in self._charts:
            self._charts = {
                key: LayerResponsesChart(self.layer_names, [ctx.classes[c] for c in shown], samples, ctx.class_axis())
            }
        ctx.add_image(self.technique, self._charts[key].draw(resp, effect, ctx.step))
        for layer, a in acts.items():
            ctx.add_scalar(f"{self.technique}/{layer}", float(a.float().mean()))


LayerResponsesCallback = legacy_callback(LayerResponses, "LayerResponsesCallback")
