"""Unit importance by ablation: the picture ``importance/<layer>`` and scalars (the method:
``callbacks.methods.importance``, Morcos et al. 2018)."""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from torch import Tensor

from .base import legacy_callback
from .data import FIXED_SET_MAX, set_budget
from .figures import CARD_WIDTH
from .hooks import LayerError, check_layers, spread
from .layers import layer_roles
from .live_figure import LiveFigure
from .methods.importance import ablation_importance, rank_correlation, variance_importance
from .methods.selectivity import class_means, selectivity_index
from .technique import FixedSetTechnique, RenderContext, check_arg, layer_list, positive_int

__all__ = ["ImportanceChart", "Importance", "ImportanceCallback", "live_rank_correlation"]

RED, BLUE, GREY = "#b2182b", "#2166ac", "#555555"  # the loss rises, falls; the other units


def _padded(lo: float, hi: float) -> tuple[float, float]:
    """Axis limits around ``[lo, hi]`` with 8% room (a unit's room when the range is empty or not finite)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return -1.0, 1.0
    pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.5
    return lo - pad, hi + pad


class ImportanceChart:
    """The picture of one layer: bars of the ``top`` largest loss rises (unit indices on the axis) with whiskers of
    two standard errors, filled where the rise exceeds them, hollow where it is within its sampling noise; below,
    the rise of every live unit against its class selectivity index and against its activation variance (the top
    units red), dead units left out and counted. Built once (the layout is fixed), redrawn by ``draw``."""

    def __init__(self, layer: str, units: int, top: int, samples: int, of: int | None = None) -> None:
        self.k = k = min(top, units)
        self.live = LiveFigure(CARD_WIDTH, 600)
        with self.live.rc():
            fig = self.live.fig
            grid = fig.add_gridspec(2, 2, height_ratios=(1, 1.1))
            self.bars_ax = ax = self.live.animate(fig.add_subplot(grid[0, :]))
            self.bars = ax.bar(range(k), np.zeros(k), width=0.8, color=RED, edgecolor=RED, linewidth=1.2)
            self.whiskers = ax.add_collection(LineCollection([], colors="black", linewidths=1.0))
            ax.set_xticks(range(k), [str(100 + i) for i in range(k)], rotation=90 if k > 10 else 0)  # widest labels
            ax.set_xlim(-0.6, k - 0.4)
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_xlabel("unit (largest rise first)")
            ax.set_ylabel("cross-entropy rise")
            ax.set_title(f"the {k} units whose removal costs most")
            ax.legend(
                handles=[
                    Patch(facecolor=RED, edgecolor=RED, label="rise > 2 SE"),
                    Patch(facecolor="white", edgecolor=RED, label="within 2 SE (noise)"),
                    Line2D([], [], color="black", linewidth=1.0, label="\u00b12 SE"),
                ],
                loc="upper right",
                fontsize="small",
                handlelength=1.2,
                borderpad=0.3,
                labelspacing=0.2,
            )
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
            left.set_ylabel("cross-entropy rise")
            right.tick_params(labelleft=False)
            which = f"{units} units" if of in (None, units) else f"{units} of its {of} units (evenly spread)"
            self.live.title(f"{layer}: zeroing one unit at a time\n{which}, {samples} samples\n ")
            self.note = self.live.slot(
                fig.text(0.01, 0.925, "intact: accuracy 00.0%, mean loss 0.000", ha="left", va="top")
            )
            self.dead_note = self.live.slot(
                fig.supxlabel("0000 dead units (zero on every sample) left out", fontsize="medium")
            )

    def draw(
        self,
        rise: Tensor,
        se: Tensor,
        dead: Tensor,
        units: Tensor,
        selectivity: Tensor,
        variance: Tensor,
        base_acc: float,
        base_loss: float,
        step: int,
    ) -> Tensor:
        """``(3, H, W)`` uint8 for the ``(U,)`` loss rises, their standard errors, dead flags, unit indices,
        selectivity indices and variances."""
        d = np.nan_to_num(rise.detach().double().cpu().numpy())
        e = np.nan_to_num(se.detach().double().cpu().numpy())
        live = ~dead.cpu().numpy().astype(bool)
        order = np.argsort(-d, kind="stable")[: self.k]
        top = np.zeros(len(d), bool)
        top[order] = True
        for bar, v, err in zip(self.bars, d[order], e[order]):
            bar.set_height(v)
            colour = RED if v >= 0 else BLUE
            bar.set_edgecolor(colour)
            bar.set_facecolor(colour if abs(v) > 2 * err else "white")  # beyond its sampling noise: filled
        self.whiskers.set_segments(
            [[(i, v - 2 * err), (i, v + 2 * err)] for i, (v, err) in enumerate(zip(d[order], e[order]))]
        )
        self.bars_ax.set_xticklabels([str(int(u)) for u in units.cpu()[torch.as_tensor(order)]])
        lo, hi = d[order] - 2 * e[order], d[order] + 2 * e[order]
        self.bars_ax.set_ylim(*_padded(min(0.0, float(lo.min())), max(0.0, float(hi.max()) * 1.3)))  # room: legend
        for (ax, rest, best), v in zip(self.scatters, (selectivity, variance)):
            x = v.detach().double().cpu().numpy()
            rest.set_offsets(np.stack([x[~top & live], d[~top & live]], 1))
            best.set_offsets(np.stack([x[top & live], d[top & live]], 1))
            finite = x[live & np.isfinite(x)]
            ax.set_xlim(
                *_padded(float(finite.min()) if finite.size else 0.0, float(finite.max()) if finite.size else 1.0)
            )
            r = live_rank_correlation(v, rise, dead)
            ax.title.set_text(f"Spearman r {r:+.2f}" if math.isfinite(r) else "Spearman r: n/a")
        shown = d[live]
        self.scatters[0][0].set_ylim(
            *_padded(float(shown.min()) if shown.size else 0.0, float(shown.max()) if shown.size else 1.0)
        )
        self.note.text = f"intact: accuracy {100 * base_acc:.1f}%, mean loss {base_loss:.3f}"
        n_dead = int((~live).sum())
        self.dead_note.text = (
            f"{n_dead} dead unit{'s' if n_dead != 1 else ''} (zero on every sample) left out"
            if n_dead
            else "no dead units"
        )
        return self.live.image(step)


def live_rank_correlation(v: Tensor, rise: Tensor, dead: Tensor) -> float:
    """Spearman's r of ``v`` and ``rise`` over the live units only: a dead unit's rise is 0 by construction (zeroing
    a zero changes nothing), so dead units would pile up at one point and count as agreement."""
    keep = ~dead.cpu()
    return rank_correlation(v.cpu()[keep], rise.cpu()[keep])


class Importance(FixedSetTechnique):
    """Log each unit's importance by ablation (Morcos et al. 2018): ``importance/<layer>`` and scalars.

    Over the fixed, class-balanced validation set (``per_class`` samples per class): every unit of the layer is
    zeroed in turn (conv units: the whole channel) and the rise in mean cross-entropy recorded, with its standard
    error over the samples (the accuracy drop, in steps of 1/N, is too coarse to rank units). The picture shows the
    ``top`` units whose removal raises the loss most (with their unit index; filled bars: rise > 2 standard errors,
    hollow: within them, whiskers +-2 SE), and the rise of every live unit against its class selectivity index (as
    in the selectivity callback, over the same set) and against its activation variance across samples, with
    Spearman's rank correlation of each; dead units (zero on every sample, so exactly 0 rise) are left out of both
    and counted. Scalars ``importance/<layer>/max_acc_drop``, ``.../mean_acc_drop``, ``.../max_loss_rise``,
    ``.../mean_loss_rise``, and the rank correlations with the loss rise over live units ``.../selectivity_corr``
    and ``.../variance_corr``, each only where defined (no constant vector).

    Cost: one pass of the net's tail per unit over the set (README, "Cost"). Hence the defaults: the last two
    ReLU layers, ``per_class=50`` (500 samples: accuracy drops resolve only to 0.2 percentage points, hence the
    loss rise) and ``every_n_epochs=5`` (plus the last epoch, as always).

    Args:
        layers: layers to ablate (default: the last stage's feature layer and the hidden fc nonlinearities, the
            last two of them: LeNet-5's relu_3 and relu_4, a ResNet's last stage).
        top: number of most critical units shown as bars (>= 1).
        per_class: samples per class in the fixed validation set (>= 1).
        chunk_size: most samples per forward pass of the ablation (lower it if the accelerator runs out of memory).
        max_units: most units ablated per layer (>= 1, or None for all); a wider layer (a ResNet's last stage has
            512 channels) gets this many, evenly spread over its indices, since each costs a pass over the set.
        max_samples: most samples in all (per_class is lowered to fit: 50 per class at 10 classes, 5 at 100).
        every_n_epochs: draw after every n epochs: at 0-based epochs n - 1, 2n - 1, ... (as Lightning's
            ``check_val_every_n_epoch``; n = 1: every epoch), and always at the last epoch of a fit.
    """

    technique = "importance"

    def __init__(
        self,
        layers: list[str] | None = None,
        top: int = 16,
        per_class: int = 50,
        chunk_size: int = 2048,
        max_units: int | None = 128,
        max_samples: int = 500,
        every_n_epochs: int = 5,
        **kwargs,
    ) -> None:
        super().__init__(layers=layers, per_class=per_class, every_n_epochs=every_n_epochs, **kwargs)
        positive_int(self, "top", top)
        positive_int(self, "chunk_size", chunk_size)
        if max_units is not None:
            positive_int(self, "max_units", max_units)
        layer_list(self, layers, "a list of layer names (or None for the last two ReLUs)")
        self.top = top
        self.chunk_size = chunk_size
        self.max_units = max_units
        ok = isinstance(max_samples, int) and not isinstance(max_samples, bool) and 1 <= max_samples <= FIXED_SET_MAX
        check_arg(self, "max_samples", max_samples, ok, f"an integer in 1..{FIXED_SET_MAX} (the fixed set's budget)")
        self.max_samples = max_samples
        self.layer_names: list[str] = []

    def config(self):
        return {"layers": self.layers, "per_class": self.per_class}

    def configure(self, net, shapes):
        layers = self.layers
        if layers is None:
            roles = layer_roles(net, shapes)
            # the last stage's units (they feed the classifier) and the hidden fc layers: two at most. Ablating an
            # earlier stage runs the rest of the net once per unit, the most costly drawing on a deep net.
            layers = (roles.features[-1:] + roles.hidden)[-2:]
        self.layer_names = check_layers(net, layers)
        for layer in self.layer_names:
            if len(shapes.get(layer, ())) < 1:
                raise LayerError(f"layer {layer!r} has no unit dimension to ablate (output shape {shapes.get(layer)})")
        self.share_layers(self.layer_names, self.per_class)

    def shared_per_class(self, num_classes: int) -> int:
        """The shared layers are read on the set this technique ablates: ``per_class`` capped by ``max_samples``
        for the data's class count (5 per class at 100 classes), so that the validation loop's capture serves it."""
        return self.samples_per_class(num_classes)

    def samples_per_class(self, num_classes: int) -> int:
        """``per_class``, capped so that the set holds at most ``max_samples`` images: an ablation runs the rest of
        the net once per unit over every sample, so its cost is units x samples."""
        return set_budget(self.per_class, num_classes, self.max_samples)

    def render(self, ctx: RenderContext) -> None:
        per_class = self.samples_per_class(len(ctx.classes))
        x, y = ctx.fixed_set(per_class, self.max_samples)
        acts, _ = ctx.fixed_set_activations(self.layer_names, per_class)  # (N, U) per layer, same samples
        for layer in self.layer_names:
            a = acts[layer]
            units = None if self.max_units is None else spread(range(a.shape[1]), self.max_units)
            abl = ablation_importance(ctx.net, x, y, layer, units=units, chunk_size=self.chunk_size)
            var = variance_importance(a).cpu()[abl.units]
            si = selectivity_index(class_means(a, y.to(a.device), len(ctx.classes))).cpu()[abl.units]
            drop, rise = abl.acc_drop.cpu(), abl.loss_rise.cpu()
            ctx.post(layer, (abl.units.tolist(), drop))  # for the unit browser
            key = (layer, len(drop), len(x))
            if key not in self._charts:
                self._charts[key] = ImportanceChart(layer, len(drop), self.top, len(x), of=a.shape[1])
            img = self._charts[key].draw(
                rise, abl.loss_rise_se.cpu(), abl.dead.cpu(), abl.units, si, var, abl.base_acc, abl.base_loss, ctx.step
            )
            ctx.add_image(f"{self.technique}/{layer}", img)
            ctx.add_scalar(f"{self.technique}/{layer}/max_acc_drop", float(drop.max()))
            ctx.add_scalar(f"{self.technique}/{layer}/mean_acc_drop", float(drop.mean()))
            ctx.add_scalar(f"{self.technique}/{layer}/max_loss_rise", float(rise.max()))
            ctx.add_scalar(f"{self.technique}/{layer}/mean_loss_rise", float(rise.mean()))
            for what, v in (("selectivity", si), ("variance", var)):
                r = live_rank_correlation(v, rise, abl.dead.cpu())
                if math.isfinite(r):
                    ctx.add_scalar(f"{self.technique}/{layer}/{what}_corr", r)


ImportanceCallback = legacy_callback(Importance, "ImportanceCallback")
