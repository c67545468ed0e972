"""Activation maximization pictures: ``actmax/<layer>`` (and ``actmax/<fc_1>/vs_weights`` for an MLP).

The method itself (plain PyTorch) is in ``callbacks.methods.actmax`` and re-exported here. Every drawing starts
from the same seeded noise and runs the same steps, so a picture depends on the weights of its epoch only: a net
that did not change gives the same picture, and one that changed gives the change, not the optimization's history.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import figures
from .base import legacy_callback
from .hooks import NoDefaultLayer, check_layers, check_units
from .layers import layer_roles
from .methods.actmax import (
    DEFAULT_L2,
    DEFAULT_ROTATE,
    DEFAULT_SCALE,
    DEFAULT_TV,
    OBJECTIVES,
    maximize_activation,
    weight_correlation,
)
from .technique import RenderContext, Technique, check_arg, int_at_least, positive_int

__all__ = ["ActMax", "ActMaxCallback"]  # the method: convscope.methods.actmax

WIDTH = figures.CARD_WIDTH  # px: a TensorBoard card
GAP = 4  # px between tiles
PIXEL_LABEL = "pixel: 0 black .. 1 white (before normalising)"


def tile_picture(
    tiles: Tensor,
    labels: list[str],
    ncols: int,
    title: str,
    bars: list[tuple[str, float, float, str]],
    width: int = WIDTH,
) -> Tensor:
    """``(U, 3, h, w)`` RGB tiles in [0, 1] in a grid of ``ncols`` columns, each enlarged (nearest neighbour) and
    labelled above with ``labels[i]``; a title above, a colour bar per ``(cmap, vmin, vmax, label)`` below.
    ``(3, H, W)`` uint8, at most ``width`` px wide. Drawn as tensors: no axes are needed, and a matplotlib figure
    per layer and epoch would cost more than the optimization itself."""
    tiles = figures.shrink(tiles, (width - GAP * (ncols - 1)) // ncols)
    n, _, h, w = tiles.shape
    f = max(1, (width - GAP * (ncols - 1)) // (ncols * w))
    big = (tiles.clamp(0, 1) * 255).round().to(torch.uint8).repeat_interleave(f, -2).repeat_interleave(f, -1)
    cells = [figures.stack([figures.text(labels[i], w * f, 12, "center"), big[i]], dim=1) for i in range(n)]
    rows = [figures.stack(cells[i : i + ncols], dim=2, gap=GAP) for i in range(0, n, ncols)]
    grid = figures.stack(rows, dim=1, gap=GAP)
    strips = [
        figures.colorbar_strip(cmap, float(lo), float(hi), label, min(width, max(grid.shape[2], 300)))
        for cmap, lo, hi, label in bars
    ]
    return figures.titled(figures.stack([grid, *strips], dim=1, gap=GAP), title)


PRIOR_PER_CLASS = 100  # validation images per class averaged for ``prior_mean``
STEPS = 48  # the callback's steps per drawing: with the mean-image prior and no shift, 48 meet every quality bar
# of benchmarks/actmax_quality.py that 64 meet (README), at three quarters of the cost


class ActMax(Technique):
    """Log activation-maximization images: ``actmax/<layer>`` (and ``actmax/<fc_1>/vs_weights`` for an MLP).

    All units of a layer are optimized together in one batch. Every drawing starts from the same seeded noise
    (``seed``) and runs ``steps`` steps, so the picture is a function of the epoch's weights alone: unchanged
    weights give the same picture (but for the title's epoch number), and the slider shows what training changed.
    (``warm_steps > 0`` opts in to the old behaviour: later drawings continue from the previous drawing's images
    for ``warm_steps`` steps, cheaper but dependent on their own history.) Images are drawn in grey over the data's
    pixel range (black to white), RGB for three-channel inputs.

    Args:
        layers: ``{layer: [unit, ...]}``; default: the first ``max_channels`` channels of every conv layer and the
            output layer's logits (an MLP: the first ``max_channels`` units of its first layer, and the logits).
        max_channels: units per layer in the default.
        objective: ``"neuron"`` (a conv unit's centre position) or ``"channel"`` (the mean of its map); see
            ``maximize_activation``. Fully-connected units and logits are the same under both.
        steps: Adam steps of every drawing (of the first one only when ``warm_steps > 0``).
        warm_steps: 0 (default): every drawing starts afresh. ``> 0``: later drawings warm-start from the last
            drawing's images (kept in the checkpoint) for this many steps.
        seed: seeds the start noise and the transformations (``maximize_activation``'s ``seed``), the same at
            every drawing.
        lr, l2, tv, scale, rotate, blur_every: see ``maximize_activation``.
        jitter: whole-pixel shifts (``maximize_activation``'s); 0 by default here, as a shift smears a first conv
            layer's 5x5 pattern (the zoom and rotation about the centre do not; ``benchmarks/actmax_quality.py``).
        prior_mean: start from, and pull towards, the mean image of the fixed set (the first ``PRIOR_PER_CLASS``
            validation images of each class) instead of mid-grey (``maximize_activation``'s ``prior_mean``): the
            logit images then look like the data (the benchmark's best). The picture is
            ``maximize_activation(net, layer, units, pixel_range=..., steps=48, jitter=0, prior_mean=that mean)``.
    """

    technique = "actmax"
    layer_example = "'{{{}: [0, 1, 2, 3]}}'"

    def __init__(
        self,
        layers: dict[str, list[int]] | None = None,
        max_channels: int = 16,
        objective: str = "neuron",
        steps: int = STEPS,
        warm_steps: int = 0,
        seed: int = 0,
        lr: float = 0.05,
        l2: float = DEFAULT_L2,
        tv: float = DEFAULT_TV,
        jitter: int = 0,
        scale: float = DEFAULT_SCALE,
        rotate: float = DEFAULT_ROTATE,
        blur_every: int = 16,
        prior_mean: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        positive_int(self, "steps", steps)
        int_at_least(self, "warm_steps", warm_steps, 0)
        check_arg(self, "objective", objective, objective in OBJECTIVES, f"one of {', '.join(OBJECTIVES)}")
        self.layers = layers
        self.max_channels = max_channels
        self.objective = objective
        self.steps, self.warm_steps = steps, warm_steps
        self.options = dict(lr=lr, l2=l2, tv=tv, jitter=jitter, scale=scale, rotate=rotate, blur_every=blur_every)
        self.prior_mean = prior_mean
        self.seed = seed
        self.layer_units: dict[str, list[int]] = {}  # resolved in ``configure``; ``layers`` stays as given
        self.layer_names: list[str] = []
        self.last: dict[str, Tensor] = {}  # the last drawing's images, kept only for a warm start

    def config(self):
        return {"layers": self.layers, "objective": self.objective}

    def configure(self, net, shapes):
        mods = dict(net.named_modules())
        layers = self.layers
        if layers is None:
            roles = layer_roles(net, shapes)
            linears = [n for n in roles.order if isinstance(mods[n], nn.Linear)]
            spatial = roles.levels(self.max_default_layers)  # every conv of a small net; a few stages of a deep one
            layers = {n: list(range(min(self.max_channels, shapes[n][0]))) for n in spatial}
            if not spatial and len(linears) > 1:
                layers[linears[0]] = list(range(min(self.max_channels, shapes[linears[0]][0])))
            if linears:
                layers[linears[-1]] = list(range(shapes[linears[-1]][0]))
        if not layers:
            raise NoDefaultLayer("no default layer (no conv stage, no Linear layer); give {layer: [units]}")
        names = check_layers(net, list(layers))  # the net's own names (a compiled net's `_orig_mod.` dropped)
        self.layer_units = {name: check_units(net, name, units, shapes) for name, units in zip(names, layers.values())}
        self.layer_names = list(self.layer_units)
        self.first_linear = next((n for n in shapes if isinstance(mods[n], nn.Linear)), None)
        self.last_linear = next((n for n in reversed(list(shapes)) if isinstance(mods[n], nn.Linear)), None)

    def extra_state(self):
        return {"last": {k: v.cpu() for k, v in self.last.items()}} if self.warm_steps else {}

    def load_extra_state(self, state):
        self.last = dict(state.get("last") or {}) if self.warm_steps else {}

    def units_of(self, layer: str, ctx: RenderContext) -> list[int]:
        """The units drawn for ``layer``: as configured, except the default logits, which are the shown classes'."""
        units = self.layer_units[layer]
        if self.layers is None and layer == self.last_linear and len(units) == len(ctx.classes):
            return list(ctx.shown)
        return units

    def images(
        self,
        net: nn.Module,
        layer: str,
        pixel_range: tuple[float, float],
        input_shape,
        prior: Tensor | None = None,
        units: list[int] | None = None,
    ) -> Tensor:
        """This drawing's images of ``layer``: ``steps`` from the seeded noise (or, with ``warm_steps > 0`` and a
        previous drawing of the same units, ``warm_steps`` from its images)."""
        units = self.layer_units[layer] if units is None else units
        init = self.last.get(layer) if self.warm_steps else None
        warm = init is not None and tuple(init.shape) == (len(units), *input_shape)
        device = next(net.parameters()).device
        imgs = maximize_activation(
            net,
            layer,
            units,
            objective=self.objective,
            steps=self.warm_steps if warm else self.steps,
            pixel_range=pixel_range,
            init=init.to(device) if warm else None,
            input_shape=tuple(input_shape),
            prior_mean=prior,
            seed=self.seed,
            **self.options,
        )
        if self.warm_steps:
            self.last[layer] = imgs.detach().cpu()
        return imgs

    def render(self, ctx: RenderContext) -> None:
        input_shape = tuple(ctx.input_shape)
        prior = ctx.fixed_set(PRIOR_PER_CLASS)[0].float().mean(0) if self.prior_mean else None
        modules = dict(ctx.net.named_modules())
        for layer in self.layer_units:
            units = self.units_of(layer, ctx)
            imgs = self.images(ctx.net, layer, ctx.pixel_range, input_shape, prior, units).cpu()
            ctx.add_image(f"{self.technique}/{layer}", self.picture(ctx, layer, units, imgs))
            mod = modules[layer]
            if (
                layer == self.first_linear
                and layer != self.last_linear
                and isinstance(mod, nn.Linear)
                and mod.in_features == imgs[0].numel()
            ):
                self._vs_weights(ctx, layer, mod, units, imgs)

    def picture(self, ctx: RenderContext, layer: str, units: list[int], imgs: Tensor) -> Tensor:
        """The images as a labelled grid on the grey pixel scale: unit index (and class name for the logits)."""
        logits = layer == self.last_linear and len(units) <= len(ctx.classes)
        if logits:
            labels, what = [f"{u} {ctx.classes[u]}" for u in units], "logit"
        else:
            spatial = self.shapes.get(layer) is not None and len(self.shapes[layer]) > 1
            labels = [str(u) for u in units]
            what = ("centre neuron" if self.objective == "neuron" else "channel mean") if spatial else "unit"
        ncols = len(units) if len(units) <= 4 else 3 if len(units) in (5, 6, 9) else 4
        widest = max(figures.text_width(label, 12) for label in labels)
        while ncols > 2 and widest > (WIDTH - GAP * (ncols - 1)) // ncols:  # long class names: fewer columns
            ncols -= 1
        title = f"actmax {layer} ({what}) - epoch {ctx.step}"
        bar = (figures.GREY, 0.0, 1.0, PIXEL_LABEL)
        img = tile_picture(figures.input_rgb(imgs, ctx.pixel_range), labels, ncols, title, [bar])
        if self.prior_mean and what == "centre neuron":  # the surround: the start image, outside the neuron's field
            note = "grey surround: the data's mean image, the start;"
            note2 = "pixels outside the neuron's field keep it"
            lines = [figures.text(t, img.shape[2], 12) for t in (note, note2)]
            img = figures.stack([img, *lines], dim=1)
        return img

    def _vs_weights(self, ctx: RenderContext, layer: str, mod: nn.Linear, units: list[int], imgs: Tensor) -> None:
        """Each hidden unit's weight image beside its actmax image, with their correlation r (the MLP check)."""
        w = mod.weight.detach()[units].cpu().float()
        r = weight_correlation(w, imgs)
        vmax = self.scale(f"{layer}/vs_weights", figures.abs_max(w))
        wt = figures.to_rgb(w.view(len(units), *imgs.shape[-2:]), figures.SIGNED, vmax=vmax).movedim(0, 1)
        at = figures.input_rgb(imgs, ctx.pixel_range)
        tiles = torch.stack([wt, at], 1).flatten(0, 1)  # weight, actmax, weight, actmax, ...
        labels = [s for i, u in enumerate(units) for s in (f"unit {u}", f"r={float(r[i]):+.2f}")]
        bars = [(figures.SIGNED, -vmax, vmax, "weight (left tiles)"), (figures.GREY, 0.0, 1.0, PIXEL_LABEL)]
        title = f"{layer}: weights | actmax, mean r={float(r.mean()):+.2f} - epoch {ctx.step}"
        ctx.add_image(f"{self.technique}/{layer}/vs_weights", tile_picture(tiles, labels, 6, title, bars))
        ctx.add_scalar(f"{self.technique}/{layer}/vs_weights/mean_r", float(r.mean()))


ActMaxCallback = legacy_callback(ActMax, "ActMaxCallback")
