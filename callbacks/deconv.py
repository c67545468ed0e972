"""Zeiler & Fergus deconvnet reconstructions, one picture: ``deconv``.

A row per class: the class's probe image, then, for each chosen layer, the projection to pixel space of that
layer's strongest channel for the image (every other activation of the layer zeroed; see
``callbacks.methods.deconv``, which also says what the deconvnet supports). A layer that depends on a module the
deconvnet has no rule for (GELU, SiLU, LayerNorm, a squeeze-excitation gate ...) is not drawn, with one warning
naming the callback, the layers and the modules; with no layer left, nothing is drawn and every other picture is. Each projection is divided by its own largest ``|value|``, so the colour bar runs
from -1 to 1 (blue: pixels that would lower the channel, red: raise it); the row label names the channels.
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_warn

from . import figures
from .base import RenderContext, VisualizationCallback
from .hooks import check_layers, layer_shapes
from .layers import layer_roles
from .methods.deconv import deconv_blockers, deconvnet, deconvnet_from_seed, deconvnet_with_channels, strongest_channels

__all__ = ["deconvnet", "deconvnet_from_seed", "deconvnet_with_channels", "strongest_channels", "DeconvCallback"]


class DeconvCallback(VisualizationCallback):
    """Log, for each class's probe image, the deconvnet projection of each chosen layer's strongest channel.

    Args:
        layers: layers to project from (default: the stage outputs, ``layers.layer_roles``: a VGG's or LeNet's
            max-pools, a ResNet's ``layer1..4``, four at most; a net without conv stages: its hidden ReLUs).
    """

    technique = "deconv"

    def __init__(self, layers: list[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.layers = layers
        self.layer_names: list[str] = []
        self._warned: str | None = None  # the last warning given (each is given once)

    def _state_config(self):
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
            message = (
                f"{type(self).__name__}: the deconvnet (Zeiler & Fergus) has a rule for nn.ReLU, max-pooling and "
                f"linear layers only; {', '.join(blocked)} depend(s) on {', '.join(first[:3])}"
                f"{' ...' if len(first) > 3 else ''}, so "
                + (f"only {', '.join(self.layer_names)} are drawn" if self.layer_names else "no deconv picture is drawn")
            )
            if message != self._warned:
                self._warned = message
                rank_zero_warn(message)

    def render(self, ctx: RenderContext) -> None:
        if not self.layer_names:  # no layer the deconvnet applies to (warned at setup)
            return
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
