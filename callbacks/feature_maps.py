"""Feature maps, one picture per layer: ``feature_maps/<layer>`` and ``feature_maps/<layer>/class_mean``.

``feature_maps/<layer>``: a row per class holding that class's probe image (the first validation image of the
class, fixed for the run) and the layer's channels for it. ``feature_maps/<layer>/class_mean``: the same layout
averaged over the fixed set (``per_class`` validation images of each class; the SimpleCNN source project's
"class-wise representative feature maps"), with the class's mean input image in the first column. By default the
single-image maps are drawn for the pre-ReLU layers (their post-ReLU maps are the same with the blue removed) and
the class means for both: averaging does not commute with the ReLU.

Each channel (column) has its own colour scale, so a channel that responds weakly is not washed out by a strong one
(often the background detector): its limit is written under the grid and kept across epochs, raised only when the
channel outgrows it (``Technique.scale``, kept in the checkpoint), so the step slider compares like with
like. Maps with negative values (pre-ReLU conv outputs) are drawn diverging (blue negative, white zero, red
positive, -1..1 times the channel's limit); maps without (after a ReLU, pooled ReLU outputs) sequential, white at 0
to dark red at the limit. Defaults: every conv (pre-ReLU) and ReLU (post-ReLU) layer with a spatial
output; for a net without one, its hidden fully-connected layers (each vector drawn as a square map).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import figures
from .base import legacy_callback
from .hooks import check_layers
from .layers import following_nonlinearity, is_nonlinearity, layer_roles
from .methods.feature_maps import feature_maps
from .methods.selectivity import class_means
from .technique import RenderContext, Technique, positive_int, tag_part

__all__ = ["FeatureMaps", "FeatureMapsCallback"]

# The tiles' target width: maps are enlarged by whole factors, and 28-px maps beside long class names need a little
# more than a card to reach 2x (TensorBoard fits a wider picture to the card); at CARD_WIDTH they stay at 1x.
MAPS_WIDTH = figures.CARD_WIDTH * 11 // 10


def _as_maps(acts: Tensor) -> Tensor:
    """``(N, C, h, w)`` stays; ``(N, U)`` vectors become ``(N, 1, s, s)`` square maps (NaN-padded)."""
    if acts.dim() == 4:
        return acts
    n, u = acts.shape[0], acts[0].numel()
    side = math.ceil(math.sqrt(u))
    flat = torch.full((n, side * side), float("nan"))
    flat[:, :u] = acts.flatten(1).float().cpu()
    return flat.view(n, 1, side, side)


class FeatureMaps(Technique):
    """Log the chosen layers' channels for one probe image per class, and averaged per class.

    Args:
        layers: layers drawn for the probe images (e.g. pre-ReLU ``conv_1``, post-ReLU ``relu_1``, ``max_pool_1``,
            nested ``layer1.0.conv1``); default: every conv layer with a spatial output (a deep net: four spread
            over its depth).
        mean_layers: layers drawn averaged per class; default: ``layers`` when given, else every conv and ReLU
            layer with a spatial output.
        max_channels: channels shown per layer (the first ones); the title says how many the layer has.
        class_mean: also log ``feature_maps/<layer>/class_mean`` over the fixed set.
        per_class: images per class in that fixed set (the source project used 500).
        per_class_tags: log one picture per class and layer, ``feature_maps/<layer>/<i>_<class>``, instead of one
            picture per layer with a row per class.
    """

    technique = "feature_maps"
    layer_args = ("layers", "mean_layers")

    def __init__(
        self,
        layers: list[str] | None = None,
        mean_layers: list[str] | None = None,
        max_channels: int = 16,
        class_mean: bool = True,
        per_class: int = 500,
        per_class_tags: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        for arg, value in (("max_channels", max_channels), ("per_class", per_class)):
            positive_int(self, arg, value)
        self.layers = layers
        self.mean_layers = mean_layers
        self.max_channels = max_channels
        self.class_mean = class_mean
        self.per_class = per_class
        self.per_class_tags = per_class_tags

    def config(self):
        return {"layers": self.layers, "mean_layers": self.mean_layers}

    def configure(self, net, shapes):
        roles = layer_roles(net, shapes)
        # a small net: every conv, and the nonlinearity after each; a deep one: a few stage features over its depth
        levels = roles.levels(self.max_default_layers)
        after = [following_nonlinearity(net, n, roles.order) if n in roles.convs else None for n in levels]
        names = [m for n, a in zip(levels, after, strict=True) for m in (n, a) if m]
        if not levels:  # an MLP: its hidden fully-connected layers
            mods = dict(net.named_modules())
            levels = names = [n for n in roles.order if isinstance(mods[n], nn.Linear) or is_nonlinearity(mods[n])][:-1]
        self.layer_names = levels if self.layers is None else check_layers(net, self.layers)
        given = self.mean_layers if self.mean_layers is not None else self.layers
        self.mean_names = names if given is None else check_layers(net, given)
        if self.class_mean:
            self.share_layers([], self.per_class, class_maps=self.mean_names)

    def drawn_layers(self) -> list[str]:
        return list(dict.fromkeys([*getattr(self, "layer_names", []), *getattr(self, "mean_names", [])]))

    def render(self, ctx: RenderContext) -> None:
        x, y = ctx.probe_images()
        acts = feature_maps(ctx.net, x, self.layer_names)
        names = [f"{c} {ctx.classes[c]}" for c in y.tolist()]
        inputs = figures.input_rgb(x, ctx.pixel_range)
        for layer in self.layer_names:
            maps = _as_maps(acts[layer].float().cpu())
            what = f"{layer} {tuple(acts[layer].shape[1:])}: one validation image per class"
            if self.per_class_tags:
                for i, c in enumerate(y.tolist()):
                    img = self.picture(maps[i : i + 1], inputs[i : i + 1], [names[i]], layer, what, ctx.step)
                    ctx.add_image(f"{self.technique}/{layer}/{c}_{tag_part(ctx.classes[c])}", img)
            else:
                ctx.add_image(f"{self.technique}/{layer}", self.picture(maps, inputs, names, layer, what, ctx.step))
        if self.class_mean:
            fx, fy = ctx.fixed_set(self.per_class)
            k, shown = len(ctx.classes), list(ctx.shown)
            means = ctx.fixed_set_class_maps(self.mean_names, self.per_class)  # the shared fixed-set pass
            mean_images = class_means(fx.flatten(1), fy, k)[shown].view(len(shown), *fx.shape[1:])
            mean_inputs = figures.input_rgb(mean_images, ctx.pixel_range)
            n = torch.bincount(fy.cpu(), minlength=k)[shown]
            for layer in self.mean_names:
                what = f"{layer}: mean over {int(n.min())}-{int(n.max())} validation images per class{ctx.shown_note()}"
                img = self.picture(
                    _as_maps(means[layer]),
                    mean_inputs,
                    [f"{c} {ctx.classes[c]}" for c in shown],
                    layer,
                    what,
                    ctx.step,
                    key=f"{layer}/class_mean",
                    first="the class's mean image",
                )
                ctx.add_image(f"{self.technique}/{layer}/class_mean", img)

    def picture(
        self,
        maps: Tensor,
        inputs: Tensor,
        rows: list[str],
        layer: str,
        what: str,
        step: int,
        key: str | None = None,
        first: str = "the image",
    ) -> Tensor:
        """Rows of ``[input, channel 0, channel 1, ...]`` tiles with a colour bar; ``maps`` ``(R, C, h, w)``."""
        shown = maps[:, : self.max_channels]
        base = key or layer
        peaks = torch.nan_to_num(shown.float(), nan=0.0).abs().amax(dim=(0, 2, 3))  # (C,) each channel's max |value|
        limits = torch.tensor([self.scale(f"{base}#{c}", float(v)) for c, v in enumerate(peaks.tolist())])
        signed = bool((shown < 0).any())  # after a ReLU no value is negative: one-sided colours
        norm = shown / limits.view(1, -1, 1, 1)
        if signed:
            tiles = figures.to_rgb(norm, figures.SIGNED, vmax=1.0)
        else:
            tiles = figures.to_rgb(norm, figures.POSITIVE, 0.0, 1.0)
        tiles = tiles.movedim(0, 2)  # (R, C, 3, h, w)
        h, w = tiles.shape[-2:]
        inp = (
            torch.nn.functional.interpolate(inputs, size=(h, w), mode="nearest")
            if inputs.shape[-2:] != (h, w)
            else inputs
        )
        tiles = torch.cat([inp[:, None], tiles], dim=1)
        label_w = max(figures.text_width(r) for r in rows) + 8
        cell = max(h, min(64, (MAPS_WIDTH - label_w) // tiles.shape[1] - 2))
        cols = [""] + [str(c) for c in range(shown.shape[1])]
        grid = figures.tile_rows(tiles, rows, cols, cell=cell)
        width = min(grid.shape[2], figures.CARD_WIDTH)
        if signed:
            bar = figures.colorbar_strip(
                figures.SIGNED, -1.0, 1.0, "activation / its channel's limit, kept over epochs", width
            )
        else:
            bar = figures.colorbar_strip(
                figures.POSITIVE, 0.0, 1.0, "activation (≥ 0) / its channel's limit, kept over epochs", width
            )
        sign = " (±)" if signed else ""
        lines, line = [], f"limits{sign} of channels 0, 1, ...:"
        for item in (f"{v:g}" for v in limits.tolist()):
            if figures.text_width(f"{line} {item}", 12) > width:
                lines.append(line)
                line = item
            else:
                line = f"{line} {item}"
        key_lines = [figures.text(t, width, 12) for t in [*lines, line]]
        more = f" (first {shown.shape[1]} of {maps.shape[1]})" if maps.shape[1] > shown.shape[1] else ""
        body = figures.stack([grid, *key_lines, bar], dim=1, gap=2)
        title = figures.titled(body, what, f"left: {first}; then channels{more}, each on its own scale")
        return figures.titled(title, f"{layer} feature maps - epoch {step}")


FeatureMapsCallback = legacy_callback(FeatureMaps, "FeatureMapsCallback")
