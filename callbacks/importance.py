"""Unit importance by ablation: the picture ``importance/<layer>`` and scalars (the method:
``callbacks.methods.importance``, Morcos et al. 2018)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from .base import FixedSetCallback, RenderContext
from .hooks import LayerError, check_layers, spread
from .layers import layer_roles
from .live_figure import LiveFigure
from .methods.importance import ablation_importance, rank_correlation, variance_importance
from .methods.selectivity import class_means, selectivity_index

__all__ = ["ImportanceChart", "ImportanceCallback"]

RED, BLUE, GREY = "#b2182b", "#2166ac", "#555555"  # drop (accuracy falls), rise, the other units


def _padded(lo: float, hi: float) -> tuple[float, float]:
    """Axis limits around ``[lo, hi]`` with 8% room (a unit's room when the range is empty or not finite)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return -1.0, 1.0
    pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.5
    return lo - pad, hi + pad


class ImportanceChart:
    """The picture of one layer: bars of the ``top`` largest accuracy drops (unit indices on the axis) above the
    drop of every unit against its class selectivity index and against its activation variance (the top units
    red). Built once (the layout is fixed), redrawn by ``draw``."""

    def __init__(self, layer: str, units: int, top: int, samples: int, of: int | None = None) -> None:
        self.k = k = min(top, units)
        self.live = LiveFigure(400, 560)
        with self.live.rc():
            fig = self.live.fig
            grid = fig.add_gridspec(2, 2, height_ratios=(1, 1.15))
            self.bars_ax = ax = self.live.animate(fig.add_subplot(grid[0, :]))
            self.bars = ax.bar(range(k), np.zeros(k), width=0.8, color=RED)
            ax.set_xticks(range(k), [str(100 + i) for i in range(k)], rotation=90 if k > 10 else 0)  # widest labels
            ax.set_xlim(-0.6, k - 0.4)
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_xlabel("unit (largest drop first)")
            ax.set_ylabel("accuracy drop (% points)")
            ax.set_title(f"the {k} units whose removal costs most")
            left = self.live.animate(fig.add_subplot(grid[1, 0]))
            right = self.live.animate(fig.add_subplot(grid[1, 1], sharey=left))
            self.scatters = []
            for ax, name in ((left, "class selectivity index"), (right, "activation variance")):
                rest = ax.scatter(np.zeros(units), np.zeros(units), s=10, color=GREY, linewidths=0)
                best = ax.scatter(np.zeros(units), np.zeros(units), s=14, color=RED, linewidths=0)
                ax.axhline(0, color="black", linewidth=0.6)
                ax.set_xlabel(name)
                ax.set_title("Spearman r +0.00")
                ax.locator_params(axis="x", nbins=4)
                self.scatters.append((ax, rest, best))
            left.set_ylabel("accuracy drop (% points)")
            right.tick_params(labelleft=False)
            which = f"one of {units} units" if of in (None, units) else f"one of {units} of its {of} units (evenly spread)"
            self.live.title(f"{layer}: zeroing {which} at a time\n{samples} samples")
            self.note = self.live.slot(fig.text(0.99, 0.955, "accuracy 00.0%", ha="right", va="top"))

    def draw(self, drop: Tensor, units: Tensor, selectivity: Tensor, variance: Tensor, base_acc: float,
             step: int) -> Tensor:
        """``(3, H, W)`` uint8 for the ``(U,)`` accuracy drops, unit indices, selectivity indices and variances."""
        d = np.nan_to_num(drop.detach().double().cpu().numpy() * 100)  # percentage points
        order = np.argsort(-d, kind="stable")[: self.k]
        top = np.zeros(len(d), bool)
        top[order] = True
        for bar, v in zip(self.bars, d[order]):
            bar.set_height(v)
            bar.set_color(RED if v >= 0 else BLUE)
        self.bars_ax.set_xticklabels([str(int(u)) for u in units.cpu()[torch.as_tensor(order)]])
        self.bars_ax.set_ylim(*_padded(min(0.0, float(d[order].min())), max(0.0, float(d[order].max()))))
        for (ax, rest, best), v in zip(self.scatters, (selectivity, variance)):
            x = v.detach().double().cpu().numpy()
            rest.set_offsets(np.stack([x[~top], d[~top]], 1))
            best.set_offsets(np.stack([x[top], d[top]], 1))
            finite = x[np.isfinite(x)]
            ax.set_xlim(*_padded(float(finite.min()) if finite.size else 0.0, float(finite.max()) if finite.size else 1.0))
            r = rank_correlation(v, drop)
            ax.title.set_text(f"Spearman r {r:+.2f}" if math.isfinite(r) else "Spearman r: n/a")
        self.scatters[0][0].set_ylim(*_padded(float(d.min()), float(d.max())))
        self.note.text = f"accuracy {100 * base_acc:.1f}%"
        return self.live.image(step)


class ImportanceCallback(FixedSetCallback):
    """Log each unit's importance by ablation (Morcos et al. 2018): ``importance/<layer>`` and scalars.

    Over the fixed, class-balanced validation set (``per_class`` samples per class): every unit of the layer is
    zeroed in turn (conv units: the whole channel) and the drop in accuracy recorded. The picture shows the
    ``top`` most critical units (largest drop first, with their unit index), and the drop of every unit against
    its class selectivity index (as in the selectivity callback, over the same set) and against its activation
    variance across samples, with Spearman's rank correlation of each. Scalars ``importance/<layer>/max_acc_drop``,
    ``.../mean_acc_drop``, and the rank correlations ``.../selectivity_corr`` and ``.../variance_corr``, each
    only where defined (no constant vector).

    Cost: one pass of the net's tail per unit over the set (README, "Cost"). Hence the defaults: the last two
    ReLU layers, ``per_class=50`` (500 samples: accuracy drops resolve to 0.2 percentage points) and
    ``every_n_epochs=5`` (plus the last epoch, as always).

    Args:
        layers: layers to ablate (default: the last two ReLU layers, i.e. post-ReLU units of the deepest layers).
        top: number of most critical units shown as bars (>= 1).
        per_class: samples per class in the fixed validation set (>= 1).
        chunk_size: most samples per forward pass of the ablation (lower it if the accelerator runs out of memory).
        max_units: most units ablated per layer (>= 1, or None for all); a wider layer (a ResNet's last stage has
            512 channels) gets this many, evenly spread over its indices, since each costs a pass over the set.
        every_n_epochs: draw after every n epochs: at 0-based epochs n - 1, 2n - 1, ... (as Lightning's
            ``check_val_every_n_epoch``; n = 1: every epoch), and always at the last epoch of a fit.
    """

    technique = "importance"

    def __init__(self, layers: list[str] | None = None, top: int = 16, per_class: int = 50, chunk_size: int = 2048,
                 max_units: int | None = 128, every_n_epochs: int = 5, **kwargs) -> None:
        super().__init__(layers=layers, per_class=per_class, every_n_epochs=every_n_epochs, **kwargs)
        name = type(self).__name__
        for arg, value in (("top", top), ("chunk_size", chunk_size), ("max_units", 1 if max_units is None else max_units)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {arg} must be an integer >= 1, got {value!r}")
        if layers is not None and (isinstance(layers, str) or not all(isinstance(n, str) for n in layers)):
            raise ValueError(f"{name}: layers must be a list of layer names (or None for the last two ReLUs), got {layers!r}")
        self.top = top
        self.chunk_size = chunk_size
        self.max_units = max_units
        self.layer_names: list[str] = []

    def _state_config(self):
        return {"layers": self.layers, "per_class": self.per_class}

    def configure(self, net, shapes):
        layers = self.layers
        if layers is None:
            roles = layer_roles(net, shapes)
            layers = (roles.features + roles.hidden)[-2:]  # the last two stages' or hidden layers' outputs
        self.layer_names = check_layers(net, layers)
        for layer in self.layer_names:
            if len(shapes.get(layer, ())) < 1:
                raise LayerError(f"layer {layer!r} has no unit dimension to ablate (output shape {shapes.get(layer)})")
        self.share_layers(self.layer_names, self.per_class)

    def render(self, ctx: RenderContext) -> None:
        x, y = self.fixed_set(ctx.trainer, self.per_class)
        acts, _ = self.fixed_set_activations(ctx, self.layer_names, self.per_class)  # (N, U) per layer, same samples
        for layer in self.layer_names:
            a = acts[layer]
            units = None if self.max_units is None else spread(range(a.shape[1]), self.max_units)
            abl = ablation_importance(ctx.net, x, y, layer, units=units, chunk_size=self.chunk_size)
            var = variance_importance(a).cpu()[abl.units]
            si = selectivity_index(class_means(a, y.to(a.device), len(ctx.classes))).cpu()[abl.units]
            drop = abl.acc_drop.cpu()
            key = (layer, len(drop), len(x))
            if key not in self._charts:
                self._charts[key] = ImportanceChart(layer, len(drop), self.top, len(x), of=a.shape[1])
            ctx.add_image(f"{self.technique}/{layer}",
                          self._charts[key].draw(drop, abl.units, si, var, abl.base_acc, ctx.step))
            ctx.add_scalar(f"{self.technique}/{layer}/max_acc_drop", float(drop.max()))
            ctx.add_scalar(f"{self.technique}/{layer}/mean_acc_drop", float(drop.mean()))
            for what, v in (("selectivity", si), ("variance", var)):
                r = rank_correlation(v, drop)
                if math.isfinite(r):
                    ctx.add_scalar(f"{self.technique}/{layer}/{what}_corr", r)
