"""Fully-connected activations per class: ``fc_activations/<layer>`` and ``sparsity/<layer>``.

Class-wise average activations over a fixed, class-balanced validation set (default 500 samples per class, as the
source project used): for each ``Linear`` layer one picture, a classes x units heatmap of its output (pre-ReLU, on a
diverging scale centred on zero) above the same for the ReLU that follows it (post-ReLU, from zero up). Each scale
is kept across epochs (raised, never lowered, when the values outgrow it), so the step slider compares like with like.
Scalar ``sparsity/<post layer>``: the fraction of zero post-ReLU activations over the set. Default: every ``Linear``
layer (the last one is the logits, without ReLU: its picture is the mean logit of every shown class for every shown
class). Rows are the shown classes (``ShownClasses``); a layer wider than ``MAX_UNITS`` shows its ``MAX_UNITS`` units
whose class means vary most across those classes, sorted by the class they prefer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import legacy_callback
from .figures import CARD_WIDTH, SEQUENTIAL, SIGNED, abs_max, colorbar
from .hooks import check_layers
from .layers import following_nonlinearity, layer_roles
from .live_figure import LiveFigure
from .methods.selectivity import class_means, shown_units
from .technique import FixedSetTechnique, RenderContext

__all__ = ["sparsity", "FCChart", "FCActivations", "FCActivationsCallback"]

MAX_UNITS = 128  # columns of a chart at most: a wider layer shows its most class-varying units


def sparsity(acts: Tensor) -> float:
    """Fraction of exactly-zero activations."""
    return float((acts == 0).float().mean()) if acts.numel() else 0.0


class FCChart:
    """The picture of one ``Linear`` layer: classes x units heatmaps of the class means, pre-ReLU above post-ReLU
    (just one when no ReLU follows), each on its own labelled colour scale; built once, redrawn by ``draw``."""

    def __init__(
        self,
        layer: str,
        post: str | None,
        classes: list[str],
        units: int,
        samples: str,
        logit_classes: list[int] | None = None,
        unit_note: str = "",
        class_axis: str = "class",
    ) -> None:
        self.layer, self.post = layer, post
        k = len(classes)
        panel = 13 * k + 60  # a 13-px row per class, plus the unit axis and the panel title
        self.live = LiveFigure(CARD_WIDTH, 40 + panel * (2 if post else 1))
        logits = logit_classes is not None
        with self.live.rc():
            axes = self.live.fig.subplots(2 if post else 1, 1, squeeze=False)[:, 0]
            self.images = []
            specs = [(layer, SIGNED, f"mean {layer} output")]
            if post:
                specs.append((post, SEQUENTIAL, f"mean {post} output"))
            for ax, (name, cmap, what) in zip(axes, specs):
                im = self.live.animate(
                    ax.imshow(
                        [[0.0] * units] * k,
                        cmap=cmap,
                        vmin=-1 if cmap == SIGNED else 0,
                        vmax=1,
                        aspect="auto",
                        interpolation="nearest",
                    )
                )
                ax.set_yticks(range(k), list(classes))
                ax.tick_params(axis="y", length=0)
                ax.set_ylabel(class_axis)
                if logits:
                    ax.set_xticks(range(units), [str(c) for c in logit_classes])
                    ax.set_xlabel("logit of class")
                else:
                    ax.set_xlabel(f"unit of {name}{unit_note}")
                    if unit_note:  # columns are chosen units, not indices 0..U-1
                        ax.set_xticks([])
                ax.set_title(
                    f"{name} (pre-ReLU)"
                    if name == layer and post
                    else f"{name} = ReLU({layer})"
                    if name == post
                    else f"{name} (logits)"
                    if logits
                    else name
                )
                self.images.append(im)
                colorbar(self.live.fig, im, ax, what)  # static: redrawn only when its scale changes
            self.live.title(f"{layer}: mean per class, {samples} samples each")

    def draw(self, pre: Tensor, post: Tensor | None, limits: list[float], step: int) -> Tensor:
        """``(3, H, W)`` uint8 of the class means ``pre`` and ``post`` ``(K, U)``, on the colour scales up to
        ``limits`` (one per panel)."""
        for im, means, v in zip(self.images, [pre, post] if self.post else [pre], limits):
            im.set_data(means.float().cpu().numpy())
            clim = (-v if im.get_cmap().name == SIGNED else 0.0, v)
            if im.get_clim() != clim:
                im.set_clim(*clim)
                self.live.refresh()
        return self.live.image(step)


class FCActivations(FixedSetTechnique):
    """Log per-class mean activations of fully-connected layers, pre- and post-ReLU in one picture per layer.

    Args:
        layers: ``Linear`` layers (their following ReLU is found automatically; default: every ``Linear`` layer).
        per_class: samples per class in the fixed validation set.
    """

    technique = "fc_activations"

    def configure(self, net, shapes):
        layers = self.layers
        if layers is None:
            layers = self.thin(layer_roles(net, shapes).head_linears)  # the classifier's, not a block's MLP
        self.layer_names = check_layers(net, layers)
        self.post = {layer: following_nonlinearity(net, layer) for layer in self.layer_names}
        self.names = list(dict.fromkeys([*self.layer_names, *[p for p in self.post.values() if p]]))
        self.share_layers(self.names, self.per_class)

    def render(self, ctx: RenderContext) -> None:
        acts, y = ctx.fixed_set_activations(self.names, self.per_class)
        k, shown = len(ctx.classes), list(ctx.shown)
        samples = ctx.sample_counts(y)
        classes = [ctx.classes[c] for c in shown]
        for layer in self.layer_names:
            pre = class_means(acts[layer].flatten(1), y, k)[shown]  # (shown classes, U)
            post_name = self.post[layer]
            post = class_means(acts[post_name].flatten(1), y, k)[shown] if post_name else None
            logits = post_name is None and pre.shape[1] == k
            cols = torch.tensor(shown) if logits else shown_units(post if post is not None else pre, MAX_UNITS)
            pre, post = pre[:, cols], post[:, cols] if post is not None else None
            note = (
                f" ({len(cols)} of {acts[layer].shape[1]}, most class-varying, by preferred class)"
                if len(cols) < acts[layer].flatten(1).shape[1] and not logits
                else ""
            )
            key = (layer, post_name, tuple(classes), len(cols), samples, note)
            if key not in self._charts:
                self._charts = {k_: c for k_, c in self._charts.items() if k_[0] != layer}  # one chart per layer
                self._charts[key] = FCChart(
                    layer, post_name, classes, len(cols), samples, shown if logits else None, note, ctx.class_axis()
                )
            limits = [
                self.scale(f"{layer}/{name}", abs_max(m)) for name, m in ((layer, pre), (post_name, post)) if name
            ]
            ctx.add_image(f"{self.technique}/{layer}", self._charts[key].draw(pre, post, limits, ctx.step))
            if post_name:
                ctx.add_scalar(f"sparsity/{post_name}", sparsity(acts[post_name]))


FCActivationsCallback = legacy_callback(FCActivations, "FCActivationsCallback")
