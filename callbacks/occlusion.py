"""Occlusion sensitivity (Zeiler & Fergus, 2014): ``occlusion`` (a row per class) and ``occlusion/mean_max_drop``
(the method: ``callbacks.methods.occlusion``)."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.patches import Patch
from torch import Tensor, nn

from .base import legacy_callback
from .classes import class_columns, shown_positions
from .figures import CARD_WIDTH, SIGNED, abs_max, colorbar, input_rgb, mosaic, show_grid, text_width
from .live_figure import LiveFigure
from .methods.occlusion import Occlusion as OcclusionResult
from .methods.occlusion import occlusion_sensitivity, sensitivity_map
from .technique import RenderContext, Technique, check_arg, positive_int, tag_part

__all__ = ["OcclusionChart", "Occlusion", "OcclusionCallback"]

# One colour per class (matplotlib's tab10, then tab20's light shades), repeated for more classes.
_PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
]

BATCH_INPUT_VALUES = 2**22  # input values per forward pass of the occluded copies, at most (see ``batch_for``)


class OcclusionChart:
    """A row per probe image: input | p(true class) of the intact image | drop in p(true class) where the patch hides
    (the input's outline on it) | the class predicted with the patch at each position, whose colours' key is below
    (``CARD_WIDTH`` wide: beside the rows, the class names took the panels' room). Built once for a probe set,
    redrawn by ``draw``."""

    TILE = 52  # px per row and column

    def __init__(
        self, images: Tensor, rows: list[str], columns: list[str], patch: int, stride: int, positions: tuple[int, int]
    ) -> None:
        n, k, t = len(rows), len(columns), self.TILE
        h, w = images.shape[-2:]
        # the predicted classes' key below the rows, in as many columns (at most 3) as the card's width holds
        ncols = max(1, min(3, (CARD_WIDTH - 10) // (max(text_width(c, 12) for c in columns) + 30)))
        self.live = LiveFigure(CARD_WIDTH, 200 + t * n + 20 * (-(-k // ncols)))
        with self.live.rc():
            fig = self.live.fig
            grid = fig.add_gridspec(1, 4, width_ratios=(t, t, t, t))
            ax = image_ax = fig.add_subplot(grid[0])  # then the p(true) bars, the drop map, the predictions
            show_grid(ax, images[:, None], row_labels=rows, title="input")
            ax.set_aspect("auto")
            ax.set_xticks([])
            ax = fig.add_subplot(grid[1])
            self.bars = [self.live.animate(b) for b in ax.barh(range(n), np.zeros(n), height=0.6, color="#555555")]
            ax.set_ylim(n - 0.5, -0.5)
            ax.set_xlim(0, 1)
            ax.set_xticks([0, 1], ["0", "1"])
            ax.set_yticks([])
            ax.set_xlabel("p(true)")
            ax.set_title("intact")
            ax = fig.add_subplot(grid[2])
            self.drop = self.live.animate(
                show_grid(ax, np.zeros((n, 1, h, w)), cmap=SIGNED, vmax=1, title="drop in\np(true)")
            )
            ax.set_aspect("auto")
            ax.set_xticks([])
            grey = mosaic(images.mean(1)[:, None])  # (n * (h + 1) - 1, w), NaN between tiles
            # the inputs' outlines, drawn after (over) the changing drop map
            self.live.animate(ax.contour(grey, levels=[0.35], colors="black", linewidths=0.7))
            ax = fig.add_subplot(grid[3])
            colorbar(
                fig,
                self.drop,
                [image_ax, *fig.axes[1:3], ax],
                "drop in p(true) where hidden",
                location="bottom",
                shrink=0.8,
                fraction=0.04,
                aspect=25,
                format="%.2g",
            )
            cmap = ListedColormap([_PALETTE[c % len(_PALETTE)] for c in range(k)]).with_extremes(bad="white")
            self.pred = self.live.animate(
                ax.imshow(
                    mosaic(np.zeros((n, 1, *positions))),
                    cmap=cmap,
                    norm=BoundaryNorm(np.arange(k + 1) - 0.5, k),
                    aspect="auto",
                    interpolation="nearest",
                )
            )
            ax.set_title("predicted\nif hidden")
            ax.set_xticks([])
            ax.set_yticks([])
            fig.legend(
                [Patch(color=_PALETTE[c % len(_PALETTE)]) for c in range(k)],
                columns,
                loc="outside lower center",
                ncols=ncols,
                handlelength=1,
                columnspacing=1,
                title="class predicted if hidden",
            )
            self.live.title(f"Occlusion: {patch}-px patch, stride {stride}")

    def draw(self, heat: Tensor, predicted: Tensor, base_prob: Tensor, vmax: float, step: int) -> Tensor:
        """``(3, H, W)`` uint8: ``heat`` ``(N, H, W)`` drops on the scale ``-vmax..vmax``, ``predicted`` ``(N, R, C)``
        classes, ``base_prob`` ``(N,)``."""
        m = mosaic(heat.detach().float().cpu()[:, None])
        v = vmax
        self.drop.set_data(m)
        if self.drop.get_clim() != (-v, v):  # a new scale: the colour bar is redrawn
            self.drop.set_clim(-v, v)
            self.drop.colorbar.set_ticks([-v, 0, v])
            self.live.refresh()
        self.pred.set_data(mosaic(predicted.detach().float().cpu()[:, None]))
        for bar, p in zip(self.bars, base_prob.detach().float().cpu().tolist()):
            bar.set_width(p if np.isfinite(p) else 0.0)
        return self.live.image(step)


class Occlusion(Technique):
    """Log Zeiler & Fergus occlusion sensitivity: ``occlusion`` and the scalar ``occlusion/mean_max_drop``.

    One row per class's probe image: the input; the sensitivity map (for each pixel, the mean drop in the
    probability of the true class over the patch positions covering it) on a diverging scale shared by all rows,
    red where hiding that area lowers the probability, blue where it raises it, white for no change, with the
    input's outline on it; the class the net predicts with the patch at each position (Z&F figure 7 (e)); and the
    probability of the true class for the intact image. The scalar is the mean over the probes of each one's
    largest drop.

    Args:
        patch: side of the square occluder, in pixels (1..image side); default a quarter of the image side (7 at
            28 px, 8 at 32, 56 at 224), so the picture means the same at every image size.
        stride: step between patch positions, in pixels (>= 1); the last position is flush with the border;
            default a 14th of the image side (2 at 28 px, 16 at 224): about 12 x 12 positions, whatever the size.
        fill: the square's value in pixel units, 0 = black .. 1 = white (converted to the net's standardized
            input with the data's pixel range); None (default) = 0.0, the black background of MNIST-like data,
            so occluding blank background changes nothing. Give e.g. the dataset's mean pixel for Z&F's grey.
        batch_size: most occluded copies per forward pass (lower it if the accelerator runs out of memory); large
            images pass fewer (``batch_for``: at most 2**22 input values, 27 copies of 224 px colour).
        per_class_tags: one picture per class (``occlusion/<i>_<name>``) instead of one with a row per class.
        every_n_epochs: draw every n epochs (default 2, and always at the last epoch).
    """

    technique = "occlusion"
    layer_args = ()  # names no layer
    class_tags = True

    def __init__(
        self,
        patch: int | None = None,
        stride: int | None = None,
        fill: float | None = None,
        batch_size: int = 4096,
        per_class_tags: bool = False,
        every_n_epochs: int = 2,
        **kwargs,
    ) -> None:
        super().__init__(every_n_epochs=every_n_epochs, **kwargs)
        for arg, value in (("patch", patch), ("stride", stride), ("batch_size", batch_size)):
            if value is not None or arg == "batch_size":
                positive_int(self, arg, value)
        ok = fill is None or (not isinstance(fill, bool) and isinstance(fill, (int, float)) and 0.0 <= fill <= 1.0)
        check_arg(self, "fill", fill, ok, "a number in [0, 1] (0 black, 1 white) or None")
        self.patch = patch
        self.stride = stride
        self.fill = fill
        self.batch_size = batch_size
        self.per_class_tags = bool(per_class_tags)

    def config(self):
        return {"patch": self.patch, "stride": self.stride, "fill": self.fill}

    def configure(self, net, shapes):
        h, w = self.input_shape[-2:]  # the validation images' (set by the base's setup)
        ok = self.patch is None or self.patch <= min(h, w)
        check_arg(self, "patch", self.patch, ok, f"in 1..{min(h, w)} (the input is {h}x{w})")

    def geometry(self, hw: tuple[int, int]) -> tuple[int, int]:
        """``(patch, stride)`` in pixels for images of size ``hw``: as given, else scaled with the image side."""
        side = min(hw)
        return (self.patch or max(1, round(side / 4)), self.stride or max(1, round(side / 14)))

    def fill_value(self, pixel_range: tuple[float, float]) -> float:
        """The occluder's value in the net's input units: ``lo + fill * (hi - lo)`` (``fill`` None: 0.0)."""
        lo, hi = pixel_range
        return float(lo + (0.0 if self.fill is None else self.fill) * (hi - lo))

    def batch_for(self, x: Tensor) -> int:
        """Occluded copies per forward pass: ``batch_size``, fewer for large images, so that one batch holds at most
        ``BATCH_INPUT_VALUES`` input values (4,096 copies of 28 px grey; 27 of 224 px colour: 4,096 of those ran a
        ResNet-50 out of 24 GB)."""
        return max(1, min(self.batch_size, BATCH_INPUT_VALUES // x[0].numel()))

    def compute(
        self, net: nn.Module, x: Tensor, y: Tensor, pixel_range: tuple[float, float]
    ) -> tuple[OcclusionResult, Tensor]:
        """The render's computation: ``(occlusion_sensitivity(...), sensitivity_map(...))`` for images ``x``."""
        patch, stride = self.geometry(tuple(x.shape[-2:]))
        occ = occlusion_sensitivity(net, x, y, patch, stride, self.fill_value(pixel_range), self.batch_for(x))
        return occ, sensitivity_map(occ, x.shape[-2:], patch)

    def render(self, ctx: RenderContext) -> None:
        x, y = ctx.probe_images()
        occ, heat = self.compute(ctx.net, x, y, ctx.pixel_range)
        heat, base_prob = heat.cpu(), occ.base_prob.cpu()
        predicted = shown_positions(occ.predicted, ctx.shown, len(ctx.classes))  # a class not shown: "other"
        columns = class_columns(ctx.classes, ctx.shown)
        max_drop = occ.drop.flatten(1).amax(1).cpu()
        images = input_rgb(x, ctx.pixel_range)
        true = y.tolist()
        names = [ctx.classes[c] if c < len(ctx.classes) else str(c) for c in true]
        positions = tuple(predicted.shape[1:])
        groups = [list(range(len(true)))] if not self.per_class_tags else [[i] for i in range(len(true))]
        for rows in groups:
            patch, stride = self.geometry(tuple(x.shape[-2:]))
            key = (tuple(true[i] for i in rows), tuple(columns), tuple(x.shape), positions, patch, stride)
            if key not in self._charts:
                self._charts[key] = OcclusionChart(
                    images[rows], [names[i] for i in rows], columns, patch, stride, positions
                )
            vmax = self.scale("drop" if not self.per_class_tags else f"drop/{rows[0]}", abs_max(heat[rows]))
            img = self._charts[key].draw(heat[rows], predicted[rows], base_prob[rows], vmax, ctx.step)
            c = true[rows[0]]
            ctx.add_image(
                self.technique if not self.per_class_tags else f"{self.technique}/{c}_{tag_part(names[rows[0]])}", img
            )
        ctx.add_scalar(f"{self.technique}/mean_max_drop", float(max_drop.mean()) if len(max_drop) else 0.0)


OcclusionCallback = legacy_callback(Occlusion, "OcclusionCallback")
