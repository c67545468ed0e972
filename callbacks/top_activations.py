"""Top activations (Zeiler & Fergus, 2014, figure 2): what the strongest responses of a unit look like,
``top_activations/<layer>``.

The method (receptive fields, the top-k search, patches and their deconvnet projections) is
``callbacks.methods.top_activations`` in plain PyTorch; its names are re-exported here. This module draws its
results: a row per unit, its top images' receptive-field windows, then their projections.
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from . import figures
from .base import legacy_callback
from .hooks import LayerError, NoDefaultLayer, check_layers, check_unit_range, layer_shapes
from .layers import layer_roles
from .methods.deconv import deconv_blockers
from .methods.top_activations import (
    ReceptiveField,
    patches,
    projected_patches,
    receptive_field,
    top_activations,
    top_activations_of,
)
from .methods.top_activations import TopActivations as TopResult
from .technique import FixedSetTechnique, RenderContext, check_arg, positive_int

__all__ = ["TopActivations", "TopActivationsCallback"]


# ------------------------------------------------------------------------------------------------ the callback
_OUTSIDE = torch.tensor([0.80, 0.85, 0.95])  # patch pixels beyond the image border: pale blue
MAX_TILE = 32  # px: larger patches are shrunk (area averaging) so a row of 2k tiles fits a card


class TopActivations(FixedSetTechnique):
    """Log Zeiler & Fergus top activations (their figure 2): ``top_activations/<layer>``.

    Over a fixed, class-balanced set of validation images, for each chosen unit of a layer (a row): the ``k``
    images that activate it most, strongest first; for a conv unit the receptive field of its strongest position
    is outlined in orange on each image, then those windows are shown enlarged (pale blue: beyond the image
    border), then (``projection``) the deconvnet projection of that single activation, cropped the same way, on
    a diverging scale per patch (red positive, blue negative). For a fully-connected unit the projections are of
    the whole image. Each row's label gives the unit and its largest response.

    Args:
        layers: layers to analyse (default: every ReLU with a (C, H, W) output; a net without conv layers: the
            first ReLU after an nn.Linear).
        units: an integer n: the first n units of each layer (all of them if it has fewer); or a list of unit
            indices, checked against every layer.
        k: images per unit (the top k, strongest first).
        projection: also show the deconvnet projection of each top activation.
        per_class: samples per class in the fixed validation set searched for the top images.
        every_n_epochs: draw every n epochs (default 5, and always at the last epoch: about 0.25 s per drawing
            for LeNet-5 on a 2-core CPU).
    """

    technique = "top_activations"
    batch_size = 1000  # images per forward pass of the search, at most (fewer where the maps are large)
    max_width = figures.CARD_WIDTH * 11 // 10  # about this wide at most: tiles grow by whole factors, as feature maps'

    def __init__(
        self,
        layers: list[str] | None = None,
        units: int | list[int] = 8,
        k: int = 5,
        projection: bool = True,
        per_class: int = 100,
        every_n_epochs: int = 5,
        **kwargs,
    ) -> None:
        super().__init__(layers=layers, per_class=per_class, every_n_epochs=every_n_epochs, **kwargs)
        ok = layers is None or (isinstance(layers, (list, tuple)) and all(isinstance(s, str) for s in layers))
        check_arg(self, "layers", layers, ok, "a list of layer names or None (the default)")
        if isinstance(units, (list, tuple)):
            ok = bool(units) and all(isinstance(u, int) and not isinstance(u, bool) and u >= 0 for u in units)
            check_arg(self, "units", units, ok, "a non-empty list of unit indices >= 0 (or an integer n >= 1)")
            units = list(units)
        else:
            ok = isinstance(units, int) and not isinstance(units, bool) and units >= 1
            check_arg(self, "units", units, ok, "an integer >= 1 or a list of unit indices")
        positive_int(self, "k", k)
        check_arg(self, "projection", projection, isinstance(projection, bool), "true or false")
        self.layers = list(layers) if layers is not None else None
        self.units = units
        self.k = k
        self.projection = projection
        self.layer_units: dict[str, list[int]] = {}
        self.fields: dict[str, ReceptiveField | None] = {}
        self.projectable: dict[str, bool] = {}  # whether the deconvnet applies to the layer (``deconv_blockers``)
        self._hw_key, self._hw = None, {}
        self._warned: str | None = None

    def config(self):
        return {"layers": self.layers}

    @staticmethod
    def default_layers(net: nn.Module, shapes: dict[str, tuple[int, ...]]) -> list[str]:
        """Each stage's feature layer (its ending nonlinearity, of any kind, or its output: ``layers.layer_roles``);
        a net without spatial stages: its first hidden fully-connected nonlinearity."""
        roles = layer_roles(net, shapes)
        return roles.features or roles.hidden[:1]

    def configure(self, net, shapes):
        self.layer_names = (
            self.thin(self.default_layers(net, shapes)) if self.layers is None else check_layers(net, self.layers)
        )
        if not self.layer_names:
            raise NoDefaultLayer(
                f"no default layer (no conv stage, no hidden fully-connected nonlinearity); name some of: "
                f"{', '.join(shapes)}"
            )
        self.layer_units, self.fields, self.projectable = {}, {}, {}
        no_patches, no_projection, order = {}, {}, None
        for layer in self.layer_names:
            shape = shapes[layer]
            if len(shape) not in (1, 3):
                raise LayerError(f"layer {layer!r} outputs {shape} per image; top activations need (C, H, W) or (U,)")
            n = shape[0]
            units = list(range(min(self.units, n))) if isinstance(self.units, int) else list(self.units)
            check_unit_range(layer, units, n)
            self.layer_units[layer] = units
            self.fields[layer] = None
            if len(shape) == 3:
                try:
                    self.fields[layer] = receptive_field(net, layer, self.input_shape)
                except LayerError as e:  # a module of unknown geometry: show the top images without patches
                    no_patches[layer] = str(e)
            if order is None and self.projection:
                order = list(layer_shapes(net, self.input_shape))  # one dry pass for every layer's check
            blockers = deconv_blockers(net, layer, self.input_shape, order) if self.projection else []
            self.projectable[layer] = not blockers
            if blockers:
                no_projection[layer] = ", ".join(blockers[:3]) + (" ..." if len(blockers) > 3 else "")
        reasons = (
            [f"{', '.join(no_patches)} shown without patches ({next(iter(no_patches.values()))})"] if no_patches else []
        )
        if no_projection:
            reasons.append(
                f"{', '.join(no_projection)} without deconvnet projections (no deconvnet rule for "
                f"{next(iter(no_projection.values()))})"
            )
        message = f"{type(self).__name__}: " + "; ".join(reasons) if reasons else None
        if message is not None and message != self._warned:  # once, not at every setup
            self._warned = message
            rank_zero_warn(message)

    def compute(self, net: nn.Module, x: Tensor, layer: str, pixel_lo: float = 0.0, top: TopResult | None = None):
        """The render's computation for one layer: ``(top, patches or None, projections or None)`` over ``x``
        (``top``: the layer's search, when already done with the other layers' in one pass)."""
        if layer not in self.layer_units:  # not set up by the Trainer (a direct call): configure for x's shape
            self.configure_for(net, tuple(x.shape[1:]))
        units = self.layer_units[layer]
        if top is None:
            top = top_activations(net, x, layer, units, min(self.k, len(x)), self.batch_size)
        rf = self.fields.get(layer)
        whole = self.covers_image(rf, x)
        crops = None
        if top.positions is not None and rf is not None and not whole:
            crops = patches(x, top.indices, top.positions, rf, self._layer_hw(net, x, layer), fill=pixel_lo)
        proj = None
        if self.projection and self.projectable.get(layer, True) and (top.positions is None or rf is not None):
            batch = self.backward_batch(x, top.indices.numel())
            proj = projected_patches(net, x, layer, units, top.indices, top.positions, rf, whole, batch)
        return top, crops, proj

    def search_batch(self, x: Tensor) -> int:
        """Images per pass of the search: ``batch_size``, fewer where the layers' maps of one batch would pass
        ``capture_bytes`` (``capture_batch``)."""
        return self.capture_batch(x, self.layer_names, self.batch_size)

    @staticmethod
    def covers_image(rf: ReceptiveField | None, x: Tensor) -> bool:
        """Whether a receptive field is as large as the images (a deep stage's): then the whole images are shown,
        not windows that would be mostly padding around a small image."""
        return rf is not None and rf.size >= max(x.shape[-2:])

    def _layer_hw(self, net: nn.Module, x: Tensor, layer: str) -> tuple[int, int]:
        """The layer's map size for images like ``x`` (the shapes found at setup assume 28x28 inputs)."""
        if self._hw_key != (id(net), tuple(x.shape[1:])):
            self._hw_key, self._hw = (id(net), tuple(x.shape[1:])), layer_shapes(net, tuple(x.shape[1:]))
        return tuple(self._hw[layer][-2:])

    def render(self, ctx: RenderContext) -> None:
        x, _ = ctx.fixed_set(self.per_class)
        lo, hi = ctx.pixel_range
        if not self.layer_units:  # not set up by the Trainer (a direct call): configure for x's shape
            self.configure_for(ctx.net, tuple(x.shape[1:]))
        tops = top_activations_of(
            ctx.net, x, {n: self.layer_units[n] for n in self.layer_names}, min(self.k, len(x)), self.search_batch(x)
        )  # one pass for every layer
        for layer in self.layer_names:
            top, crops, proj = self.compute(ctx.net, x, layer, lo, tops[layer])
            ctx.add_image(f"{self.technique}/{layer}", self.picture(ctx, x, layer, top, crops, proj))

    def picture(self, ctx: RenderContext, x: Tensor, layer: str, top: TopResult, crops, proj) -> Tensor:
        """A row per unit: its top ``k`` image patches (the receptive field of the strongest position; whole
        images for fully-connected units), strongest first, then their deconvnet projections."""
        units = self.layer_units[layer]
        k = top.indices.shape[1]
        indices = top.indices.cpu()
        if crops is not None:  # which patch pixels lie inside the image: pale blue outside
            ones = torch.ones(1, 1, *x.shape[-2:])
            inside = patches(
                ones,
                torch.zeros_like(indices),
                top.positions.cpu(),
                self.fields[layer],
                self._layer_hw(ctx.net, x, layer),
                fill=0.0,
            )[:, :, :1].bool()  # (U, k, 1, s, s)
            shown = figures.input_rgb(crops.flatten(0, 1).cpu(), ctx.pixel_range).view(
                *crops.shape[:2], 3, *crops.shape[-2:]
            )
            shown = torch.where(inside, shown, _OUTSIDE.view(1, 1, 3, 1, 1))
        else:
            shown = figures.input_rgb(x[indices.flatten()].cpu(), ctx.pixel_range).view(len(units), k, 3, *x.shape[-2:])
        tiles = [shown]
        if proj is not None:
            q = proj.float().cpu().sum(2)  # (U, k, s, s): colour inputs summed over channels
            q = q / q.abs().flatten(2).amax(2).clamp_min(1e-12)[..., None, None]
            q = (
                torch.nn.functional.interpolate(q, size=shown.shape[-2:], mode="nearest")
                if q.shape[-2:] != shown.shape[-2:]
                else q
            )
            tiles.append(figures.to_rgb(q, figures.SIGNED, vmax=1.0).movedim(0, 2))
        tiles = torch.cat(tiles, dim=1)  # (U, k or 2k, 3, s, s)
        if tiles.shape[-1] > MAX_TILE:  # a deep layer's field can be larger than the image: shrink, keep the card size
            u, n = tiles.shape[:2]
            tiles = torch.nn.functional.interpolate(tiles.flatten(0, 1), size=(MAX_TILE, MAX_TILE), mode="area")
            tiles = tiles.view(u, n, 3, MAX_TILE, MAX_TILE)
        rows = [f"unit {u} (max {float(top.values[r, 0]):.3g})" for r, u in enumerate(units)]
        cols = [str(j + 1) for j in range(k)] * (2 if proj is not None else 1)
        label_w = max(figures.text_width(r) for r in rows) + 8
        grid = figures.tile_rows(
            tiles, rows, cols, cell=max(tiles.shape[-1], (self.max_width - label_w) // tiles.shape[1] - 2)
        )
        parts = [grid]
        if crops is not None:  # a key to the fill of the windows' parts beyond the image
            line = figures.text("beyond the image border (the window reaches past it)", min(grid.shape[2], 380))
            swatch = torch.full((3, line.shape[1], 18), 255, dtype=torch.uint8)
            swatch[:, 3:-3, 4:] = (_OUTSIDE * 255).round().to(torch.uint8).view(3, 1, 1)
            parts.append(figures.stack([swatch, line], dim=2))
        if proj is not None:
            parts.append(
                figures.colorbar_strip(
                    figures.SIGNED, -1.0, 1.0, "projection / its max |value|", min(grid.shape[2], figures.CARD_WIDTH)
                )
            )
        rf = self.fields.get(layer)
        what = (
            f"receptive fields ({rf.size} px, stride {rf.stride})"
            if crops is not None
            else f"whole images (receptive field {rf.size} px)"
            if self.covers_image(rf, x)
            else "images"
        ) + f": top {k} of {len(x)}"
        sub = "strongest first" + ("; right: their deconvnet projections" if proj is not None else "")
        body = figures.titled(figures.stack(parts, dim=1, gap=2), what, sub)
        return figures.titled(body, f"{layer} top activations - epoch {ctx.step}")


TopActivationsCallback = legacy_callback(TopActivations, "TopActivationsCallback")
