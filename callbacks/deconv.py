"""Zeiler & Fergus deconvnet reconstructions, one picture: ``deconv``.

A row per class: the class's probe image, then, for each chosen layer, the projection to pixel space of that
layer's strongest channel for the image (every other activation of the layer zeroed; see
``callbacks.methods.deconv``). Each projection is divided by its own largest ``|value|``, so the colour bar runs
from -1 to 1 (blue: pixels that would lower the channel, red: raise it); the row label names the channels.
"""

from __future__ import annotations

import torch
from torch import nn

from . import figures
from .base import LayerError, RenderContext, VisualizationCallback
from .hooks import check_layers
from .methods.deconv import deconvnet, deconvnet_from_seed, deconvnet_with_channels, strongest_channels

__all__ = ["deconvnet", "deconvnet_from_seed", "deconvnet_with_channels", "strongest_channels", "DeconvCallback"]


class DeconvCallback(VisualizationCallback):
    """Log, for each class's probe image, the deconvnet projection of each chosen layer's strongest channel.

    Args:
        layers: layers to project from (default: every max-pool layer; a net without one: its ReLUs).
    """

    technique = "deconv"

    def __init__(self, layers: list[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.layers = layers

    def _state_config(self):
        return {"layers": self.layers}

    def configure(self, net, shapes):
        if self.layers is None:
            mods = dict(net.named_modules())
            self.layer_names = self.thin([n for n in shapes if isinstance(mods[n], nn.MaxPool2d)] or [
                n for n in shapes if isinstance(mods[n], nn.ReLU)
            ])
        else:
            self.layer_names = check_layers(net, self.layers)
        if not self.layer_names:
            raise LayerError("deconv: empty layer list")

    def render(self, ctx: RenderContext) -> None:
        x, y = self.probe_images(ctx.trainer)
        columns, channels = [figures.input_rgb(x, ctx.pixel_range)], []
        for layer in self.layer_names:
            proj, ch = deconvnet_with_channels(ctx.net, x, layer)  # (N, C, H, W), (N,)
            proj = proj.float().cpu().sum(1)  # colour inputs: the channels' sum, one signed map per image
            proj = proj / proj.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
            columns.append(figures.to_rgb(proj, figures.SIGNED, vmax=1.0).movedim(0, 1))
            channels.append(ch.tolist())
        tiles = torch.stack(columns, dim=1)  # (N, 1 + L, 3, H, W)
        rows = [f"{c} {ctx.classes[c]}: ch " + ", ".join(str(chs[i]) for chs in channels) for i, c in enumerate(y.tolist())]
        grid = figures.tile_rows(tiles, rows, ["image", *self.layer_names], cell=max(x.shape[-1], 64))
        bar = figures.colorbar_strip(figures.SIGNED, -1.0, 1.0, "projection / its max |value|", min(grid.shape[2], 420))
        body = figures.titled(figures.stack([grid, bar], dim=1, gap=2),
                              "each layer's strongest channel projected back to pixels", "(ch: that channel, per layer)")
        ctx.add_image(self.technique, figures.titled(body, f"deconvnet (Zeiler & Fergus) - epoch {ctx.step}"))
