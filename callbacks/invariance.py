"""Invariance curves (Zeiler & Fergus 2014, figure 5), watched while they form: ``invariance/<transformation>``.

The probe images (``per_class`` per class, fixed for the run) are shifted, scaled and rotated over a range of amounts
(uncovered pixels filled with each image's background) and sent through the net in one batched pass. One picture
per transformation (horizontal and vertical shifts share ``invariance/translate``), two kinds of panel stacked:

- the normalized distance ``||f(T x) - f(x)|| / ||f(x)||`` of each followed layer's output to the original's,
  against the amount (mean over the probes, band: the middle half of the probes). Defaults (any net): the early
  layer (the first conv's ReLU), its pooled output and the penultimate layer (the input of the last Linear);
- the probability of the true class (same statistics), and the class whose probability falls most, named.

The distance axis has one limit for all pictures, kept across epochs (raised, never lowered), so the step slider
compares like with like.

Scalars ``invariance/<transformation>/<layer>`` (mean distance at the sweep's two ends) and
``invariance/<transformation>/p_true`` (mean true-class probability there), so the Scalars tab shows invariance
forming over the epochs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from torch import Tensor

from .base import legacy_callback
from .figures import CARD_WIDTH, RC
from .hooks import NoDefaultLayer, check_layers
from .layers import layer_roles
from .live_figure import LiveFigure
from .methods.invariance import TRANSFORMATIONS, Sweep, default_layers, invariance_sweeps, sweep_amounts, transform
from .technique import RenderContext, Technique, check_arg, positive_int

__all__ = ["InvarianceChart", "Invariance", "InvarianceCallback", "PICTURES"]


# picture name -> the transformations it shows (a distance panel each, one shared probability panel)
PICTURES = {"translate": ("translate_x", "translate_y"), "scale": ("scale",), "rotate": ("rotate",)}
AXIS = {
    "translate_x": "horizontal shift (px, + is right)",
    "translate_y": "vertical shift (px, + is down)",
    "scale": "scale factor (> 1 enlarges)",
    "rotate": "rotation (degrees, + is counter-clockwise)",
}
BRIEF = {"translate_x": "shift (px, + is right)", "translate_y": "shift (px, + is down)"}
HEADING = {"translate_x": "horizontal shift", "translate_y": "vertical shift"}
TITLE = {"translate": "shifts", "scale": "scaling", "rotate": "rotation"}  # "Invariance to ..."


def _quartiles(values: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, 25% and 75% quantiles over the probes (columns) of ``(K, N)`` values; NaNs (silent layers) left out."""
    v = values.double()
    return v.nanmean(1).numpy(), torch.nanquantile(v, 0.25, dim=1).numpy(), torch.nanquantile(v, 0.75, dim=1).numpy()


def _ticks(amounts: np.ndarray) -> np.ndarray:
    """Five round ticks over the sweep (its ends, the middle and the quarter points)."""
    return np.unique(np.round(np.linspace(amounts.min(), amounts.max(), 5), 3))


class InvarianceChart:
    """The picture of one or two sweeps of the same images, a column each: the feature distance of every layer to
    the original's (top) and the probability of the true class, with the class whose probability falls most named
    (bottom), against the amount. Mean over the probes as a line, the middle half of the probes as a band.

    Built once for fixed amounts, layers and distance axis limit ``top`` (``CARD_WIDTH`` x 550 px); ``draw`` updates
    only the curves, bands and names over a cached picture of the rest."""

    def __init__(self, amounts: dict[str, Tensor], layers: Sequence[str], probes: int, title: str, top: float) -> None:
        names = list(amounts)
        self.live = LiveFigure(CARD_WIDTH, 550, layout=None)
        with self.live.rc():
            fig = self.live.fig
            fig.subplots_adjust(left=0.2, right=0.97, top=0.81, bottom=0.16, hspace=0.4, wspace=0.08)
            axes = fig.subplots(2, len(names), sharey="row", squeeze=False)
            self.columns = []
            for col, name in enumerate(names):
                x = amounts[name].numpy()
                ax_d, ax_p = axes[0, col], axes[1, col]
                zeros = np.zeros_like(x)
                curves = []
                for i in range(len(layers)):
                    band = self.live.animate(ax_d.fill_between(x, zeros, zeros, color=f"C{i}", alpha=0.2, linewidth=0))
                    line = self.live.animate(ax_d.plot(x, zeros, color=f"C{i}", linewidth=1.8)[0])
                    curves.append((band, line))
                p_band = self.live.animate(ax_p.fill_between(x, zeros, zeros, color="k", alpha=0.2, linewidth=0))
                p_line = self.live.animate(ax_p.plot(x, zeros, color="k", linewidth=1.8)[0])
                worst = self.live.animate(ax_p.plot(x, zeros, ":", color="C3", linewidth=2.2)[0])
                worst_name = self.live.animate(
                    ax_p.text(
                        0.03,
                        0.95,
                        "",
                        color="C3",
                        ha="left",
                        va="top",
                        transform=ax_p.transAxes,
                        fontsize=RC["legend.fontsize"],
                    )
                )
                self.columns.append((name, x, curves, p_band, p_line, worst, worst_name))
                pad = 0.04 * (x.max() - x.min())
                for ax in (ax_d, ax_p):
                    ax.set_xticks(_ticks(x))
                    ax.set_xlim(x.min() - pad, x.max() + pad)
                    ax.grid(alpha=0.3)
                if len(names) == 1:
                    ax_d.set_title("feature distance to the original")
                    ax_p.set_title("probability of the true class")
                    ax_p.set_xlabel(AXIS[name])
                else:
                    ax_d.set_title(HEADING[name])
                    ax_p.set_xlabel(BRIEF[name])
            axes[0, 0].set_ylim(0, top)
            axes[1, 0].set_ylim(0, 1.05)
            axes[0, 0].set_ylabel("feature distance\n‖f(Tx) − f(x)‖ / ‖f(x)‖")
            axes[1, 0].set_ylabel("p(true class)")
            keys = [Line2D([], [], color=f"C{i}", linewidth=1.8) for i in range(len(layers))]
            fig.legend(
                keys,
                list(layers),
                loc="upper center",
                bbox_to_anchor=(0.585, 0.91),
                ncols=min(3, len(layers)),
                frameon=False,
                handlelength=1.5,
                columnspacing=1.0,
            )
            fig.legend(  # what the lower panels draw
                [
                    Line2D([], [], color="k", linewidth=1.8),
                    Patch(color="k", alpha=0.2, linewidth=0),
                    Line2D([], [], linestyle=":", color="C3", linewidth=2.2),
                ],
                ["mean", "middle half", "lowest class"],
                loc="lower center",
                bbox_to_anchor=(0.585, 0.0),
                ncols=3,
                frameon=False,
                handlelength=1.5,
                columnspacing=0.8,
            )
            self.live.title(f"{title}\nmean of {probes} probe images, band: middle half")

    def draw(self, sweeps: dict[str, Sweep], labels: Tensor, classes: Sequence[str], step: int) -> Tensor:
        """``(3, H, W)`` uint8 of ``sweeps`` (the chart's transformations) for probes of true classes ``labels``."""
        labels = labels.cpu()
        present = sorted(set(labels.tolist()))
        for name, x, curves, p_band, p_line, worst, worst_name in self.columns:
            sw = sweeps[name]
            for (band, line), d in zip(curves, sw.distance.values()):
                mean, lo, hi = _quartiles(d)
                band.set_data(x, lo, hi)
                line.set_ydata(mean)
            mean, lo, hi = _quartiles(sw.p_true)
            p_band.set_data(x, lo, hi)
            p_line.set_ydata(mean)
            if len(present) > 1:  # the class whose true-class probability falls most over the sweep
                per_class = torch.stack([sw.p_true[:, labels == c].double().mean(1) for c in present])  # (classes, K)
                w = int(per_class.mean(1).argmin())
                worst.set_ydata(per_class[w].numpy())
                worst_name.set_text(f"lowest:\n{classes[present[w]]}")
            worst.set_visible(len(present) > 1)
            worst_name.set_visible(len(present) > 1)
        return self.live.image(step)


class Invariance(Technique):
    """Log how the chosen layers' outputs and the true-class probability react to shifts, scaling and rotation.

    Args:
        layers: layers to follow (default: the first conv's ReLU, its pooled output and the penultimate layer).
        transformations: any of ``translate_x``, ``translate_y``, ``scale``, ``rotate`` (default: all four).
        per_class: probe images per class (the curves average over all of them).
        max_shift: the largest shift, as a fraction of the image side (0.3: 8 px at 28 px).
        scale_range: the smallest and largest scale factor.
        max_angle: the largest rotation, in degrees, either way.
        every_n_epochs: draw after every n epochs (default 5: invariance grows slowly), and at the last epoch.
    """

    technique = "invariance"

    def __init__(
        self,
        layers: list[str] | None = None,
        transformations: list[str] | None = None,
        per_class: int = 2,
        max_shift: float = 0.3,
        scale_range: tuple[float, float] = (0.6, 1.4),
        max_angle: float = 90.0,
        every_n_epochs: int = 5,
        **kwargs,
    ) -> None:
        super().__init__(every_n_epochs=every_n_epochs, **kwargs)
        ok = transformations is None or (bool(transformations) and all(t in TRANSFORMATIONS for t in transformations))
        check_arg(self, "transformations", transformations, ok, f"a non-empty list of {', '.join(TRANSFORMATIONS)}")
        positive_int(self, "per_class", per_class)
        check_arg(self, "max_shift", max_shift, 0 < max_shift < 1, "a fraction of the image side in (0, 1)")
        ok = len(scale_range) == 2 and 0 < scale_range[0] <= 1 <= scale_range[1]
        check_arg(self, "scale_range", scale_range, ok, "(low, high) with 0 < low <= 1 <= high")
        check_arg(self, "max_angle", max_angle, 0 < max_angle <= 180, "in (0, 180] degrees")
        self.layers = layers
        self.transformations = transformations
        self.per_class = per_class
        self.max_shift = max_shift
        self.scale_range = tuple(scale_range)
        self.max_angle = max_angle
        self.layer_names: list[str] | None = None  # resolved at the first drawing when `layers` is not given
        self._charts: dict[str, tuple] = {}  # picture -> (what it was built for, InvarianceChart)

    def config(self):
        return {"layers": self.layers, "transformations": self.transformations}

    def configure(self, net, shapes):
        if self.layers is not None:
            self.layer_names = check_layers(net, self.layers)
        else:  # the first stage's feature layer, its (pooled) output, the penultimate layer (``layers.layer_roles``)
            roles = layer_roles(net, shapes)
            early = roles.features[:1] + [s for s in roles.stages[:1] if not roles.features[0].startswith(s + ".")]
            # (a stage output that the feature layer ends, as timm's ``bn1`` and ``bn1.act``, is the same tensor)
            self.layer_names = list(dict.fromkeys(early + roles.penultimate(net, shapes)))
            if not self.layer_names:
                raise NoDefaultLayer(
                    f"{type(net).__name__} has neither a conv stage nor a Linear layer: name the layers to follow"
                )

    def render(self, ctx: RenderContext) -> None:
        x, y = ctx.probe_images(self.per_class)
        if self.layer_names is None:
            self.layer_names = default_layers(ctx.net, x)
        chosen = self.transformations or list(TRANSFORMATIONS)
        sweeps = {}
        for name in chosen:
            amounts = sweep_amounts(name, x.shape[-2:], self.max_shift, self.scale_range, self.max_angle)
            sweeps[name] = (transform(x, name, amounts), amounts)
        result = invariance_sweeps(ctx.net, x, y, self.layer_names, sweeps)
        finite = [d for sw in result.values() for d in sw.distance.values() if torch.isfinite(d).any()]
        top = max([1.0] + [float(torch.nanquantile(d.double(), 0.75, dim=1).max()) for d in finite])
        top = self.scale("invariance/distance", top * 1.05)  # one axis limit for all, kept across epochs
        for picture, members in PICTURES.items():
            shown = {name: result[name] for name in members if name in result}
            if not shown:
                continue
            key = (picture, tuple(self.layer_names), len(y), top)
            chart = self._charts.get(picture)
            if chart is None or chart[0] != key:  # first drawing, or the distance axis had to grow
                title = f"Invariance to {TITLE[picture]}"
                chart = (
                    key,
                    InvarianceChart({n: sw.amounts for n, sw in shown.items()}, self.layer_names, len(y), title, top),
                )
                self._charts[picture] = chart
            ctx.add_image(f"{self.technique}/{picture}", chart[1].draw(shown, y, ctx.classes, ctx.step))
        for name, sw in result.items():
            ends = [0, len(sw.amounts) - 1]
            for layer, d in sw.distance.items():
                ctx.add_scalar(f"{self.technique}/{name}/{layer}", float(d[ends].double().nanmean()))
            ctx.add_scalar(f"{self.technique}/{name}/p_true", float(sw.p_true[ends].double().mean()))


InvarianceCallback = legacy_callback(Invariance, "InvarianceCallback")
