"""Zeiler & Fergus deconvnet reconstructions, one picture: ``deconv``.

A row per class: the class's probe image, then, for each chosen layer, the projection to pixel space of that
layer's most informative channel for the image: the one whose peak is most unusually strong for this image, as a
z-score against the channel's peaks over the fixed validation set (``informative_channels``; the plainly strongest
channel is, on dark-background data, usually one that fires on every image's background). Channels that fire on a
plain image of the background (``flat_background``) at half their usual peak or more (``background_channels``) are
never chosen: their peak barely varies, so a tiny difference would give them the largest z-score, and their
projection draws the background around the garment. Every other activation of the layer is zeroed (see
``callbacks.methods.deconv``, which also says what the deconvnet supports). A layer that depends on a module the
deconvnet has no rule for (GELU, SiLU, LayerNorm, a squeeze-excitation gate ...) is not drawn, with one warning
naming the callback, the layers and the modules; with no layer left, nothing is drawn and every other picture is.
Each projection is divided by its own largest ``|value|``, so the colour bar runs from -1 to 1. The projection is a
direction in pixel space: red where a brighter pixel would drive the channel, blue where a darker one would (on
normalised data the black background is already the darkest value, so blue there means the channel wants it dark).
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_warn

from . import figures
from .base import legacy_callback
from .hooks import capture_activations, check_layers, layer_shapes
from .layers import layer_roles
from .methods.deconv import (
    background_channels,
    channel_peaks,
    deconv_blockers,
    deconvnet_with_channels,
    flat_background,
    informative_channels,
)
from .technique import RenderContext, Technique, positive_int

__all__ = ["Deconv", "DeconvCallback"]

REFERENCE_MAX = 500  # images at most in the reference set (500 at 10 classes; 5 per class at 100)


class Deconv(Technique):
    """Log, for each class's probe image, the deconvnet projection of each chosen layer's most unusually strong
    channel for that image (``informative_channels``: the channel's peak as a z-score over the fixed set).

    Args:
        layers: layers to project from (default: the stage outputs, ``layers.layer_roles``: a VGG's or LeNet's
            max-pools, a ResNet's ``layer1..4``, four at most; a net without conv stages: its hidden ReLUs).
        per_class: validation images per class in the reference set that gives each channel's usual peak.
        batch_size: most images per forward pass over the reference set.
    """

    technique = "deconv"

    def __init__(self, layers: list[str] | None = None, per_class: int = 50, batch_size: int = 500, **kwargs) -> None:
        super().__init__(**kwargs)
        positive_int(self, "per_class", per_class)
        positive_int(self, "batch_size", batch_size)
        self.layers = layers
        self.per_class = per_class
        self.batch_size = batch_size
        self.layer_names: list[str] = []
        self._warned: str | None = None  # the last warning given (each is given once)

    def config(self):
        return {"layers": self.layers}

    def configure(self, net, shapes):
        if self.layers is None:
            roles = layer_roles(net, shapes)
            names = self.thin(roles.stages or roles.hidden)
        else:
            names = check_layers(net, self.layers)
        order = list(layer_shapes(net, self.input_shape))  # one dry pass: every module in the order it ran
        blocked = {n: deconv_blockers(net, n, self.input_shape, order) for n in names}
        self.layer_names = [n for n in names if not blocked[n]]
        blocked = {n: b for n, b in blocked.items() if b}
        if blocked:
            first = next(iter(blocked.values()))
            why = (
                f"the deconvnet (Zeiler & Fergus) has a rule for nn.ReLU, max-pooling and linear layers only; "
                f"{', '.join(blocked)} depend(s) on {', '.join(first[:3])}{' and more' if len(first) > 3 else ''}"
            )
            if not self.layer_names and self.layers is None:
                self.unsuited = why  # the base turns this callback off, with one warning that says why
                return
            message = f"{type(self).__name__}: {why}, so " + (
                f"only {', '.join(self.layer_names)} are drawn" if self.layer_names else "no deconv picture is drawn"
            )
            if message != self._warned:
                self._warned = message
                rank_zero_warn(message)

    def render(self, ctx: RenderContext) -> None:
        if not self.layer_names:  # no layer the deconvnet applies to (warned at setup)
            return
        x, y = ctx.probe_images()
        ref = self.reference_peaks(ctx)  # {layer: (M, C)}
        blank = flat_background(ctx.fixed_set(self.per_class, REFERENCE_MAX)[0])  # (1, C, H, W)
        acts = capture_activations(ctx.net, torch.cat([x, blank]), self.layer_names, stop_after_last=True)
        columns, channels = [figures.input_rgb(x, ctx.pixel_range)], []
        for layer in self.layer_names:
            peaks = channel_peaks(acts[layer]).float()  # (N + 1, C): the probes, then the plain background
            background = background_channels(peaks[-1], ref[layer])  # (C,)
            chosen = informative_channels(acts[layer][:-1], ref[layer], exclude=background)  # (N,)
            proj, ch = deconvnet_with_channels(ctx.net, x, layer, chosen)  # (N, C, H, W), (N,)
            proj = proj.float().cpu().sum(1)  # colour inputs: the channels' sum, one signed map per image
            proj = proj / proj.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
            columns.append(figures.to_rgb(proj, figures.SIGNED, vmax=1.0).movedim(0, 1))
            channels.append(ch.tolist())
        tiles = torch.stack(columns, dim=1)  # (N, 1 + L, 3, H, W)
        rows = [
            f"{c} {ctx.classes[c]}: ch " + ", ".join(str(chs[i]) for chs in channels) for i, c in enumerate(y.tolist())
        ]
        grid = figures.tile_rows(tiles, rows, ["image", *self.layer_names], cell=max(x.shape[-1], 64))
        bar = figures.colorbar_strip(
            figures.SIGNED, -1.0, 1.0, "projection / its max |value|", min(grid.shape[2], figures.CARD_WIDTH)
        )
        m = len(next(iter(ref.values())))
        rule = [
            "channel: the most unusually strong for this image",
            f"(z-score over {m} validation images), skipping channels",
            "that fire on a plain background as on a garment",
            "red: a brighter pixel there drives the channel,",
            "blue: a darker one does (blue on black: wants it dark)",
        ]
        rule = figures.stack([figures.text(line, max(figures.text_width(r, 13) for r in rule), 13) for line in rule])
        body = figures.titled(
            figures.stack([rule, grid, bar], dim=1, gap=2), "each layer's channel (ch) projected back to pixels"
        )
        ctx.add_image(self.technique, figures.titled(body, f"deconvnet (Zeiler & Fergus) - epoch {ctx.step}"))

    def reference_peaks(self, ctx: RenderContext) -> dict:
        """``{layer: (M, C)}``: each channel's peak on each image of the fixed set, in batches (one forward pass per
        batch for every layer): the channel's usual level, against which ``informative_channels`` scores."""
        x, _ = ctx.fixed_set(self.per_class, REFERENCE_MAX)
        parts: dict[str, list] = {layer: [] for layer in self.layer_names}
        for start in range(0, len(x), self.batch_size):
            batch = x[start : start + self.batch_size]
            acts = capture_activations(ctx.net, batch, self.layer_names, stop_after_last=True)
            for layer in self.layer_names:
                parts[layer].append(channel_peaks(acts[layer]).float())
        return {layer: torch.cat(p) for layer, p in parts.items()}


DeconvCallback = legacy_callback(Deconv, "DeconvCallback")
