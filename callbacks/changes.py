"""What changed in each unit since the last drawn epoch: ``changes/<layer>``.

Between two drawn epochs, per unit of each chosen layer (``callbacks.methods.changes``):

- how far its incoming weights moved, relative to their size: ``||W_now - W_then|| / ||W_then||``;
- how much its class profile changed: 1 - Pearson correlation of its class-mean activations over the fixed set,
  then and now (0: the same preferences, 1: unrelated, 2: reversed);
- whether it died (silent on the whole fixed set), came alive, or switched its preferred class.

The picture ranks the units that changed most (two bar charts) and names the dead, the newly dead and the newly
alive units. Scalars ``changes/<layer>/weight_change`` (mean over units), ``changes/<layer>/profile_change``
(mean over units with a profile), ``changes/<layer>/dead_units`` and ``changes/<layer>/preferred_class_switches``.

The previous drawn epoch's weights and class means are kept in the callback's checkpoint state, so a resumed run
continues the series without a gap. The first drawn epoch has nothing to compare with and logs nothing.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .base import legacy_callback
from .figures import CARD_WIDTH
from .hooks import check_layers, layer_shapes
from .layers import layer_roles
from .live_figure import LiveFigure, draw_texts
from .methods.changes import UnitChanges, compare_snapshots, unit_snapshot
from .technique import FixedSetTechnique, RenderContext, positive_int

__all__ = ["ChangesChart", "default_change_layers", "Changes", "ChangesCallback"]


def default_change_layers(net: nn.Module, shapes: dict[str, tuple[int, ...]] | None = None) -> list[str]:
    """Two layers at most (``layers.layer_roles``): the last stage's feature layer (the nonlinearity after the last
    conv of a small net) and the last hidden fully-connected nonlinearity; without the latter, the first and the
    last stage features. ``shapes``: the modules called once per forward pass (default: found for a 1x28x28 input)."""
    if shapes is None:
        calls: dict[str, int] = {}
        shapes = {n: s for n, s in layer_shapes(net, (1, 28, 28), calls).items() if calls[n] == 1}
    roles = layer_roles(net, shapes)
    picked = (roles.features[-1:] + roles.hidden[-1:]) if roles.hidden else (roles.features[:1] + roles.features[-1:])
    return list(dict.fromkeys(picked))


def _units(idx: Tensor, limit: int = 8) -> str:
    units = idx.tolist()
    text = ", ".join(str(u) for u in units[:limit])
    return text + (f" (+{len(units) - limit} more)" if len(units) > limit else "")


def _short(name: str, n: int = 12) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


FOOTER_LINES = 7  # the footer's height, in lines of text


def _footer(ch: UnitChanges, since: int) -> str:
    u = len(ch.dead)
    lines = [
        f"dead now: {int(ch.dead.sum())} of {u}"
        + (f" (units {_units(torch.nonzero(ch.dead).flatten())})" if ch.dead.any() else ""),
        f"died since epoch {since}: "
        + (f"units {_units(torch.nonzero(ch.died).flatten())}" if ch.died.any() else "none"),
        "came alive: " + (f"units {_units(torch.nonzero(ch.came_alive).flatten())}" if ch.came_alive.any() else "none"),
        f"preferred class switched since epoch {since}: {int(ch.switched.sum())} of {u} units",
        "dashed lines: the median over all units; bar text: the preferred class (then→now where it switched)",
    ]
    wrapped = "\n".join(textwrap.fill(line, 56, subsequent_indent="    ") for line in lines).split("\n")
    return "\n".join(wrapped[:FOOTER_LINES])


class ChangesChart:
    """The picture of one layer: the ``top`` units whose incoming weights moved most and those whose class profile
    changed most (bars, unit indices on the axis, the preferred class at each profile bar), then the dead, newly
    dead and newly alive units named. Built once (fixed layout, ``CARD_WIDTH`` px wide); ``draw`` redraws the bars and
    the x axes over a cached picture of the rest and writes the texts that change with Pillow (much cheaper)."""

    def __init__(self, layer: str, units: int, top: int) -> None:
        self.k = k = min(top, units)
        bars = 17 * k + 10  # px per bar chart
        panel = 22 + bars + 48  # title, bars, tick labels and axis title, gap
        self.footer_top = 36 + 2 * panel + 4
        width, height = CARD_WIDTH, self.footer_top + 20 * FOOTER_LINES + 8
        self.live = LiveFigure(width, height, layout=None)
        with self.live.rc():
            fig = self.live.fig

            def box(y_top: float) -> list[float]:  # axes rectangle (figure fractions) whose top is y_top px down
                return [66 / width, 1 - (y_top + bars) / height, (width - 66 - 14) / width, bars / height]

            self.panels = []
            for i, (colour, title, xlabel) in enumerate(
                (
                    ("C0", "incoming weights that moved most", "‖ΔW‖ / ‖W‖ (relative weight change)"),
                    ("C1", "class profiles that changed most", "1 − correlation of class means"),
                )
            ):
                ax = fig.add_axes(box(36 + 22 + i * panel))
                ax.set_ylim(k - 0.5, -0.5)  # the largest on top
                ax.set_yticks(np.arange(k), [""] * k)  # unit indices: written by draw
                ax.set_title(title)
                ax.set_xlabel(xlabel, labelpad=2)
                ax.grid(axis="x", alpha=0.3)
                self.live.animate(ax.xaxis)  # limits, ticks and grid change every time
                rects = [self.live.animate(r) for r in ax.barh(np.arange(k), np.zeros(k), color=colour, height=0.7)]
                median = self.live.animate(ax.axvline(0.0, color="k", linestyle="--", linewidth=1))
                self.panels.append((ax, rects, median))
            self.live.title(f"{layer}: what changed per unit")

    def draw(self, ch: UnitChanges, classes: Sequence[str], step: int, since: int) -> Tensor:
        """``(3, H, W)`` uint8 of the changes ``ch`` between epochs ``since`` and ``step``."""
        positions = []  # per panel: (axes, [(text, data position, Pillow anchor, pixel offset)])
        for i, ((ax, rects, median), values) in enumerate(zip(self.panels, (ch.weight_change, ch.profile_change))):
            v = values.double().numpy()
            ok = np.flatnonzero(np.isfinite(v))
            order = ok[np.argsort(-v[ok], kind="stable")][: self.k]
            vmax = float(v[order].max()) if len(order) else 0.0
            xmax = (vmax * (1.9 if i else 1.1)) if vmax > 0 else 1.0
            with self.live.rc():
                ax.set_xlim(0, xmax)
            for j, rect in enumerate(rects):
                rect.set_width(float(v[order[j]]) if j < len(order) else 0.0)
            median.set_xdata([float(np.median(v[ok])) if len(ok) else 0.0] * 2)
            median.set_visible(bool(len(ok)))
            labels = []
            for j, unit in enumerate(order.tolist()):
                labels.append((f"unit {unit}", (0.0, j), "rm", -5))
                if i:  # the preferred class now (then -> now where it switched)
                    then, now = int(ch.preferred_then[unit]), int(ch.preferred_now[unit])
                    name = (
                        f"{_short(classes[then])}→{_short(classes[now])}" if ch.switched[unit] else _short(classes[now])
                    )
                    labels.append((name, (float(v[unit]) + 0.02 * xmax, j), "lm", 0))
            if not len(order):
                labels.append(
                    (
                        "no incoming weights found" if i == 0 else "no unit has a profile",
                        (xmax / 2, (self.k - 1) / 2),
                        "mm",
                        0,
                    )
                )
            positions.append((ax, labels))
        img = self.live.image(step)
        xy, texts = [], []  # Pillow texts at pixel positions
        for ax, labels in positions:
            if labels:
                px = self.live.to_pixels(ax, np.array([p for _, p, _, _ in labels]))
                for (text, _, anchor, dx), (x, y) in zip(labels, px):
                    xy.append((x + dx, y))
                    texts.append((text, anchor))
        footer = _footer(ch, since).split("\n")
        xy += [(10, self.footer_top + 20 * i) for i in range(len(footer))]
        texts += [(line, "la") for line in footer]
        out = img
        for anchor in sorted({a for _, a in texts}):  # one Pillow pass per anchor
            sel = [i for i, (_, a) in enumerate(texts) if a == anchor]
            out = draw_texts(
                out, np.array([xy[i] for i in sel]), [texts[i][0] for i in sel], [(0, 0, 0)] * len(sel), anchor=anchor
            )
        return out


class Changes(FixedSetTechnique):
    """Log, per unit of the chosen layers, what changed since the last drawn epoch.

    Args:
        layers: layers to follow (default: the ReLU after the last conv and the last hidden fully-connected ReLU;
            without a hidden fully-connected layer, the ReLUs after the first and the last conv).
        per_class: samples per class in the fixed validation set (class profiles, dead units).
        top: how many units each bar chart ranks.
        every_n_epochs: draw after every n epochs (default 2: the changes over two epochs), and at the last one.
    """

    technique = "changes"
    evolves = False  # each picture is already a difference between two epochs

    def __init__(
        self, layers: list[str] | None = None, per_class: int = 500, top: int = 10, every_n_epochs: int = 2, **kwargs
    ) -> None:
        super().__init__(layers=layers, per_class=per_class, every_n_epochs=every_n_epochs, **kwargs)
        positive_int(self, "top", top)
        self.top = top
        self.layer_names: list[str] = []
        self.previous: dict[str, dict[str, Tensor]] = {}  # layer -> unit_snapshot at previous_step
        self.previous_step: int | None = None
        self._charts: dict[str, ChangesChart] = {}  # built at the first drawing of each layer

    def configure(self, net, shapes):
        names = self.layers if self.layers is not None else default_change_layers(net, shapes)
        self.layer_names = check_layers(net, names)
        self.share_layers(self.layer_names, self.per_class)

    def extra_state(self) -> dict[str, Any]:
        return {"changes_previous": self.previous, "changes_previous_step": self.previous_step}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.previous = dict(state.get("changes_previous") or {})
        self.previous_step = state.get("changes_previous_step")

    def render(self, ctx: RenderContext) -> None:
        acts, y = ctx.fixed_set_activations(self.layer_names, self.per_class)
        now = {layer: unit_snapshot(ctx.net, layer, acts[layer], y, len(ctx.classes)) for layer in self.layer_names}
        since = self.previous_step
        if since is not None and since < ctx.step:
            for layer in self.layer_names:
                then = self.previous.get(layer)
                if then is None or then["means"].shape != now[layer]["means"].shape:
                    continue  # a layer added or changed since: nothing to compare with yet
                ch = compare_snapshots(then, now[layer])
                units = len(ch.dead)
                if layer not in self._charts or self._charts[layer].k != min(self.top, units):
                    self._charts[layer] = ChangesChart(layer, units, self.top)
                ctx.add_image(f"{self.technique}/{layer}", self._charts[layer].draw(ch, ctx.classes, ctx.step, since))
                tag = f"{self.technique}/{layer}"
                if torch.isfinite(ch.weight_change).any():
                    ctx.add_scalar(f"{tag}/weight_change", float(ch.weight_change.double().nanmean()))
                if torch.isfinite(ch.profile_change).any():
                    ctx.add_scalar(f"{tag}/profile_change", float(ch.profile_change.double().nanmean()))
                ctx.add_scalar(f"{tag}/dead_units", int(ch.dead.sum()))
                ctx.add_scalar(f"{tag}/preferred_class_switches", int(ch.switched.sum()))
        if since is None or ctx.step > since:
            self.previous, self.previous_step = now, ctx.step


ChangesCallback = legacy_callback(Changes, "ChangesCallback")
