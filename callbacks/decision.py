"""The decision pipeline of every class's probe image in one picture: ``decision`` (a row per class).

Left to right: the input; the few strongest feature maps after each stage (default: every max-pool output, i.e.
what the next stage sees; a net without convolutions starts at its hidden layers), the channel index written on
each; each hidden fully-connected layer's activations as a strip of colour (one column per unit); and the class
probabilities, the true class boxed. Every column has one colour scale for all rows, so rows compare directly.
Read it as the net's argument for its answers: early stages still look like the input, late ones are a sparse code
that differs from class to class, and the last column shows how sure the net is and what it hesitates between.
``per_class_tags=True`` logs one such picture per class instead, ``decision/<i>_<name>``.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.patches import Rectangle
from torch import Tensor, nn

from .base import legacy_callback
from .classes import class_columns, shown_positions, shown_probs
from .figures import SEQUENTIAL, SIGNED, abs_max, colorbar, input_rgb, mosaic, show_grid
from .hooks import check_layers
from .layers import layer_roles
from .live_figure import LiveFigure, draw_texts
from .methods.decision import decision_pipeline, strongest_maps
from .technique import RenderContext, Technique, positive_int, tag_part

__all__ = ["default_stages", "DecisionChart", "Decision", "DecisionCallback"]


def _with_white_gaps(cmap: str):
    """A colour map drawing NaN (the gaps between rows) white."""
    return colormaps[cmap].with_extremes(bad="white")


def default_stages(net: nn.Module, shapes: dict[str, tuple[int, ...]]) -> tuple[list[str], list[str]]:
    """``(stages, fc)``: the stage outputs (``layers.layer_roles``: LeNet-5's max-pools, a ResNet's ``layer1..4``)
    and the hidden fully-connected layers' nonlinearities (vector outputs)."""
    roles = layer_roles(net, shapes)
    return roles.stages, roles.hidden


class DecisionChart:
    """A row per probe image: input | strongest maps per stage | hidden-layer strips | probabilities; each column on
    one labelled colour scale shared by its rows. Built once for a probe set, redrawn by ``draw``."""

    TILE = 40  # px per map tile (and per row)

    def __init__(
        self,
        images: Tensor,
        rows: list[str],
        true: list[int],
        columns: list[str],
        stages: list[tuple[str, tuple[int, ...], bool]],
        fcs: list[tuple[str, int, bool]],
        maps: int,
    ) -> None:
        n, k, t = len(rows), len(columns), self.TILE
        ks = [min(maps, shape[0]) for _, shape, _ in stages]
        widths = [t] + [t * c for c in ks] + [50] * len(fcs) + [12 * k]  # px of each column
        tall = max(len(c) for c in columns) * 7  # px: the rotated class names under the probabilities
        self.live = LiveFigure(min(720, 110 + sum(widths) + 12 * len(widths)), 185 + tall + max(t * n, 60))
        with self.live.rc():
            fig = self.live.fig
            grid = fig.add_gridspec(1, len(widths), width_ratios=widths)
            ax = fig.add_subplot(grid[0])
            show_grid(ax, images[:, None], row_labels=rows, title="input")
            ax.set_xticks([])
            ax.set_aspect("auto")  # every column as tall as the others, so rows line up
            self.stage_axes, self.stage_images = [], []
            for i, ((name, shape, signed), c) in enumerate(zip(stages, ks)):
                ax = fig.add_subplot(grid[1 + i])
                im = self.live.animate(
                    show_grid(
                        ax,
                        np.zeros((n, c, *shape[1:])),
                        cmap=SIGNED if signed else SEQUENTIAL,
                        vmin=-1 if signed else 0,
                        vmax=1,
                    )
                )
                ax.set_aspect("auto")
                ax.set_title(f"{name}\n{c} strongest")
                ax.set_xticks(
                    [j * (shape[2] + 1) + (shape[2] - 1) / 2 for j in range(c)], [str(j + 1) for j in range(c)]
                )
                ax.set_xlabel("rank")
                colorbar(fig, im, ax, "activation", location="bottom", shrink=1.0, fraction=0.04, format="%.3g")
                self.stage_axes.append((ax, shape))
                self.stage_images.append(im)
            self.fc_images, fc_axes = [], []
            fc_signed = any(signed for _, _, signed in fcs)
            for i, (name, units, _) in enumerate(fcs):
                ax = fig.add_subplot(grid[1 + len(stages) + i])
                im = self.live.animate(
                    ax.imshow(
                        self._strip(np.zeros((n, units))),
                        aspect="auto",
                        interpolation="nearest",
                        cmap=_with_white_gaps(SIGNED if fc_signed else SEQUENTIAL),
                        vmin=-1 if fc_signed else 0,
                        vmax=1,
                    )
                )
                ax.set_yticks([])
                ax.set_title(f"{name}\n{units} units")
                ax.set_xticks([0, units - 1], ["0", str(units - 1)])
                ax.set_xlabel("unit")
                self.fc_images.append(im)
                fc_axes.append(ax)
            if fcs:  # one scale for the hidden layers
                colorbar(
                    fig,
                    self.fc_images[0],
                    fc_axes,
                    "activation",
                    location="bottom",
                    shrink=1.0,
                    fraction=0.04,
                    format="%.3g",
                )
            ax = fig.add_subplot(grid[-1])
            self.probs = self.live.animate(
                ax.imshow(np.zeros((n, k)), cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
            )
            for r, c in enumerate(true):  # animated too, so they are drawn over the probabilities
                self.live.animate(
                    ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="#d62728", linewidth=1.2))
                )
            ax.set_yticks([])
            ax.set_xticks(range(k), columns, rotation=90)  # "<index> <name>": the class, not a bare index
            ax.set_xlabel("class")
            ax.set_title("probability\n(red box: true)")
            colorbar(
                fig, self.probs, ax, "probability", location="bottom", shrink=1.0, fraction=0.04, ticks=[0, 0.5, 1]
            )
            self.live.title(f"Decision: input to answer, {n} probe{'s' if n > 1 else ''}")

    @staticmethod
    def _strip(values: np.ndarray, rows: int = 9) -> np.ndarray:
        """``(N, U)`` -> ``(N * (rows + 1) - 1, U)``: each row ``rows`` times, a NaN row (white) between rows."""
        n, u = values.shape
        out = np.full((n, rows + 1, u), np.nan, dtype=np.float32)
        out[:, :rows] = values[:, None]
        return out.reshape(n * (rows + 1), u)[:-1]

    def _clim(self, im, v: float) -> None:
        """The colour scale of ``im`` up to ``v`` (from ``-v`` if signed); its colour bar redrawn if it changed."""
        clim = (-v if im.get_cmap().name.startswith(SIGNED) else 0.0, v)
        if im.get_clim() != clim:
            im.set_clim(*clim)
            self.live.refresh()

    def draw(
        self, stage_maps: list[Tensor], fc_acts: list[Tensor], probs: Tensor, maps: int, limits: list[float], step: int
    ) -> Tensor:
        """``(3, H, W)`` uint8: ``stage_maps`` ``[(N, C, h, w)]``, ``fc_acts`` ``[(N, U)]``, ``probs`` ``(N, K)``;
        ``limits``: the colour-scale top of each stage, then of the hidden layers."""
        labels = []
        for (ax, shape), im, acts, v in zip(self.stage_axes, self.stage_images, stage_maps, limits):
            tiles, idx = strongest_maps(acts.cpu(), maps)
            im.set_data(mosaic(tiles))
            self._clim(im, v)
            h, w = shape[1:]
            for r in range(idx.shape[0]):
                for j in range(idx.shape[1]):
                    labels.append((ax, (j * (w + 1) - 0.5, r * (h + 1) - 0.5), str(int(idx[r, j]))))
        v = limits[-1]
        for im, a in zip(self.fc_images, fc_acts):
            im.set_data(self._strip(a.detach().float().cpu().flatten(1).numpy()))
            self._clim(im, v)
        self.probs.set_data(probs.detach().float().cpu().numpy())
        img = self.live.image(step)
        if not labels:
            return img
        xy = np.concatenate([self.live.to_pixels(ax, np.array([p])) for ax, p, _ in labels]) + 2
        return draw_texts(
            img, xy, [s for _, _, s in labels], [(255, 255, 255)] * len(labels), anchor="lt", outline=(0, 0, 0)
        )


class Decision(Technique):
    """Log, for the probe image of every class, input -> strongest stage maps -> fc activations -> probabilities.

    Args:
        stages: spatial layers whose maps are shown (default: every max-pool layer).
        fc_layers: vector layers shown as strips (default: every ReLU after a Linear layer).
        maps: strongest maps shown per stage and image (>= 1).
        per_class_tags: one picture per class (``decision/<i>_<name>``) instead of one with a row per class.
        every_n_epochs: draw every n epochs (default 2, and always at the last epoch).
    """

    technique = "decision"
    layer_args = ("stages", "fc_layers")
    class_tags = True

    def __init__(
        self,
        stages: list[str] | None = None,
        fc_layers: list[str] | None = None,
        maps: int = 3,
        per_class_tags: bool = False,
        every_n_epochs: int = 2,
        **kwargs,
    ) -> None:
        super().__init__(every_n_epochs=every_n_epochs, **kwargs)
        positive_int(self, "maps", maps)
        self.stages = stages
        self.fc_layers = fc_layers
        self.maps = maps
        self.per_class_tags = bool(per_class_tags)
        self.stage_names: list[str] = []
        self.fc_names: list[str] = []

    def config(self):
        return {"stages": self.stages, "fc_layers": self.fc_layers}

    def configure(self, net, shapes):
        stages, fc = default_stages(net, shapes)
        self.stage_names = self.thin(stages) if self.stages is None else check_layers(net, self.stages)
        self.fc_names = fc if self.fc_layers is None else check_layers(net, self.fc_layers)

    def drawn_layers(self) -> list[str]:
        return [*self.stage_names, *self.fc_names]

    def _chart(self, key, images, rows, true, classes, stage_acts, fc_acts) -> DecisionChart:
        if key not in self._charts:
            stages = [(n, tuple(a.shape[1:]), bool((a < 0).any())) for n, a in zip(self.stage_names, stage_acts)]
            fcs = [(n, a[0].numel(), bool((a < 0).any())) for n, a in zip(self.fc_names, fc_acts)]
            self._charts[key] = DecisionChart(images, rows, true, classes, stages, fcs, self.maps)
        return self._charts[key]

    def _limits(self, prefix: str, stage_acts: list[Tensor], fc_acts: list[Tensor]) -> list[float]:
        """Colour-scale tops kept across epochs: one per stage (of the maps shown), one for the hidden layers."""
        tops = [
            self.scale(f"{prefix}{n}", abs_max(strongest_maps(a, self.maps)[0]))
            for n, a in zip(self.stage_names, stage_acts)
        ]
        return tops + [self.scale(f"{prefix}fc", max([abs_max(a) for a in fc_acts], default=1.0))]

    def render(self, ctx: RenderContext) -> None:
        x, y = ctx.probe_images()
        acts, probs = decision_pipeline(ctx.net, x, [*self.stage_names, *self.fc_names])
        probs = shown_probs(probs.float().cpu(), ctx.shown)  # (N, shown classes [+ other])
        columns = class_columns(ctx.classes, ctx.shown)
        stage_acts = [acts[n].cpu() for n in self.stage_names]
        fc_acts = [acts[n].cpu().flatten(1) for n in self.fc_names]
        images = input_rgb(x, ctx.pixel_range)
        true = y.tolist()
        names = [ctx.classes[c] if c < len(ctx.classes) else str(c) for c in true]
        boxes = shown_positions(y, ctx.shown, len(ctx.classes)).tolist()  # the true class's column
        if not self.per_class_tags:
            key = ("all", tuple(columns), tuple(true), tuple(x.shape))
            if key[:2] not in {k[:2] for k in self._charts}:
                self._charts = {}
            chart = self._chart(key, images, names, boxes, columns, stage_acts, fc_acts)
            ctx.add_image(
                self.technique,
                chart.draw(stage_acts, fc_acts, probs, self.maps, self._limits("", stage_acts, fc_acts), ctx.step),
            )
            return
        for i, c in enumerate(true):
            key = (i, tuple(columns), c, tuple(x.shape))
            chart = self._chart(
                key,
                images[i : i + 1],
                names[i : i + 1],
                [boxes[i]],
                columns,
                [a[i : i + 1] for a in stage_acts],
                [a[i : i + 1] for a in fc_acts],
            )
            one_stage, one_fc = [a[i : i + 1] for a in stage_acts], [a[i : i + 1] for a in fc_acts]
            img = chart.draw(
                one_stage, one_fc, probs[i : i + 1], self.maps, self._limits(f"{i}/", one_stage, one_fc), ctx.step
            )
            ctx.add_image(f"{self.technique}/{c}_{tag_part(names[i])}", img)


DecisionCallback = legacy_callback(Decision, "DecisionCallback")
