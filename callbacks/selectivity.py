"""Class selectivity of units: ``selectivity`` (one picture, every layer) and per-layer scalars and histograms
(Morcos et al. 2018).

For a fixed, class-balanced set of validation samples: each unit's mean activation per class (conv units: the
mean of the channel's map), drawn for every chosen layer as a classes x units heatmap, each unit scaled to its
largest class mean and the units sorted by preferred class (then by selectivity), so a layer of selective units
shows a staircase of bright cells and an unselective one even columns. Each unit's class selectivity index

    SI = (mu_max - mu_rest) / (mu_max + mu_rest)

with ``mu_max`` the largest class mean and ``mu_rest`` the mean over the other classes: 0 for a unit that responds
equally to all classes, 1 for one that responds to a single class only. Its mean over the layer is written on the
layer's panel and logged as scalar ``selectivity/<layer>/mean_index``, its distribution as histogram
``selectivity/<layer>/index``. Rows are the shown classes (``ShownClasses``), and a layer wider than ``MAX_UNITS``
shows the units whose means vary most across them; the index and its scalars always cover every class.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .base import legacy_callback
from .figures import CARD_WIDTH, SEQUENTIAL, SIGNED, colorbar
from .hooks import check_layers
from .layers import layer_roles
from .live_figure import LiveFigure
from .methods.selectivity import class_means, selectivity_index, shown_units
from .technique import FixedSetTechnique, RenderContext

__all__ = ["sorted_by_preference", "SelectivityChart", "Selectivity", "SelectivityCallback"]

MAX_UNITS = 128  # columns of a panel at most


def sorted_by_preference(means: Tensor) -> tuple[Tensor, Tensor]:
    """``(scaled (K, U), order (U,))``: class means ``(K, U)`` with each unit divided by its largest ``|mean|``,
    units ordered by preferred class, then by falling selectivity index; silent units (all means 0) last."""
    m = torch.nan_to_num(means.detach().float().cpu())
    top = m.abs().amax(0)
    silent = top == 0
    keys = (-selectivity_index(m).numpy(), m.argmax(0).numpy(), silent.numpy())  # last key sorts first
    order = torch.from_numpy(np.lexsort(keys)).long()
    scaled = m / torch.where(silent, torch.ones_like(top), top)
    return scaled[:, order], order


class SelectivityChart:
    """One panel per layer (classes x units, units sorted by preference, each scaled to its maximum) on one fixed
    0..1 scale (-1..1 when a layer has negative means); built once, redrawn by ``draw``."""

    def __init__(
        self,
        layers: list[str],
        units: list[int],
        signed: bool,
        classes: list[str],
        samples: str,
        class_axis: str = "class",
    ) -> None:
        k = len(classes)
        panel = 12 * k + 40  # a 12-px row per class, the panel title and the unit axis
        self.live = LiveFigure(CARD_WIDTH, 100 + panel * len(layers))
        with self.live.rc():
            axes = self.live.fig.subplots(len(layers), 1, squeeze=False)[:, 0]
            self.images, self.notes, self.ticks = [], [], []
            for ax, layer, u in zip(axes, layers, units):
                im = self.live.animate(
                    ax.imshow(
                        [[0.0] * u] * k,
                        cmap=SIGNED if signed else SEQUENTIAL,
                        vmin=-1 if signed else 0,
                        vmax=1,
                        aspect="auto",
                        interpolation="nearest",
                    )
                )
                ax.set_yticks(range(k), list(classes))
                positions = list(range(0, u, -(-u // 8)))
                ax.set_xticks(positions, [str(u) for _ in positions])  # the widest label, for the layout
                # tick labels: the unit at each position, which changes
                self.ticks.append(
                    (positions, [self.live.slot(t.label1) for t in ax.xaxis.get_major_ticks()[: len(positions)]])
                )
                ax.tick_params(axis="y", length=0)
                self.notes.append(
                    self.live.slot(ax.set_title(f"{layer}: {u} units, {u} shown, {u} silent, SI 0.00", loc="left"))
                )
                ax.set_ylabel(class_axis)
                self.images.append(im)
            colorbar(
                self.live.fig,
                self.images[0],
                list(axes),
                "class mean / the unit's largest class mean",
                location="bottom",
                shrink=0.8,
                fraction=0.025,
                aspect=40,
                ticks=[-1, 0, 1] if signed else [0, 0.5, 1],
            )
            self.layers, self.units = layers, units
            axes[-1].set_xlabel("unit (sorted by preferred class)")
            self.live.title(f"Class selectivity, {samples} samples per class")

    def draw(self, means: list[Tensor], shown: list[int], step: int) -> Tensor:
        """``(3, H, W)`` uint8 for each layer's class means ``(K, U)`` over every class: the rows of the ``shown``
        classes, at most ``MAX_UNITS`` units; the notes' unit counts and mean SI cover every unit and class."""
        for (positions, ticks), im, note, m, layer, u in zip(
            self.ticks, self.images, self.notes, means, self.layers, self.units
        ):
            rows = m[shown]
            cols = shown_units(rows, MAX_UNITS)
            scaled, order = sorted_by_preference(rows[:, cols])
            im.set_data(scaled.numpy())
            for p, tick in zip(positions, ticks):
                tick.text = str(int(cols[order[p]]))
            silent = int((m.abs().amax(0) == 0).sum())
            note.text = (
                f"{layer}: {m.shape[1]} units"
                + (f", {u} shown" if u < m.shape[1] else "")
                + (f", {silent} silent" if silent else "")
                + f", mean SI {float(selectivity_index(m.float().cpu()).mean()):.2f}"
            )
        return self.live.image(step)


class Selectivity(FixedSetTechnique):
    """Log one picture of every chosen layer's classes x units means and each layer's class selectivity indices.

    Args:
        layers: layers to analyse (default: every ReLU, i.e. post-ReLU activations).
        per_class: samples per class in the fixed validation set (the source project used 500).
    """

    technique = "selectivity"

    def configure(self, net, shapes):
        layers = self.layers
        if layers is None:
            roles = layer_roles(net, shapes)
            layers = self.thin(roles.features + roles.hidden)  # what each stage computed, the hidden fc layers
        self.layer_names = check_layers(net, layers)
        self.share_layers(self.layer_names, self.per_class)

    def render(self, ctx: RenderContext) -> None:
        acts, y = ctx.fixed_set_activations(self.layer_names, self.per_class)
        k = len(ctx.classes)
        means = [class_means(acts[layer], y, k).cpu() for layer in self.layer_names]
        for layer, m in zip(self.layer_names, means):
            si = selectivity_index(m)
            ctx.add_scalar(f"{self.technique}/{layer}/mean_index", float(si.mean()))
            ctx.add_histogram(f"{self.technique}/{layer}/index", si)
        shown = list(ctx.shown)
        samples = ctx.sample_counts(y)
        signed = any(bool((m[shown] < 0).any()) for m in means)
        units = [min(m.shape[1], MAX_UNITS) for m in means]
        key = (tuple(self.layer_names), tuple(units), signed, ctx.classes, tuple(shown), samples)
        if key not in self._charts:
            self._charts = {
                key: SelectivityChart(
                    self.layer_names, units, signed, [ctx.classes[c] for c in shown], samples, ctx.class_axis()
                )
            }
        ctx.add_image(self.technique, self._charts[key].draw(means, shown, ctx.step))


SelectivityCallback = legacy_callback(Selectivity, "SelectivityCallback")
