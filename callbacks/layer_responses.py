"""Layer responses: ``layer_responses`` (layers x classes heatmap) and ``layer_responses/<layer>`` scalars.

Over the fixed, class-balanced validation set: the mean activation of every layer (the mean over its units, conv
units being the mean of their maps) for every class. The heatmap has one row per layer, in forward order; the
numbers are the means, the colour says how far each class is above (red) or below (blue) the layer's average over
classes, each row scaled to its own largest deviation (layers live on very different scales). A pale row says the layer responds alike to every class (early layers: strokes and edges are
everywhere); a row with a few strong cells says the layer has specialised (late layers). One scalar per layer: the
mean activation over the whole set.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from callbacks.base import FixedSetCallback, RenderContext
from callbacks.hooks import check_layers
from callbacks.render import annotated_heatmap, label
from callbacks.selectivity import class_means

__all__ = ["layer_class_responses", "row_contrast", "LayerResponsesCallback"]


def layer_class_responses(acts: dict[str, Tensor], labels: Tensor, num_classes: int) -> Tensor:
    """``(L, K)``: the mean activation of each layer for each class, from ``{layer: (N, U) or (N, C, H, W)}`` (conv
    maps spatially averaged first, so every unit counts once). Layers in the order of ``acts``."""
    return torch.stack([class_means(a.flatten(2).mean(2) if a.dim() > 2 else a.flatten(1), labels, num_classes).mean(1)
                        for a in acts.values()])


def row_contrast(values: Tensor) -> Tensor:
    """Each row's deviation from its own mean, divided by the row's largest absolute deviation: ``[-1, 1]``, 0 for
    a row that is the same for every class."""
    dev = values - values.mean(1, keepdim=True)
    scale = dev.abs().amax(1, keepdim=True)
    return dev / torch.where(scale > 1e-12, scale, torch.ones_like(scale))


class LayerResponsesCallback(FixedSetCallback):
    """Log a layers x classes heatmap of mean activations and one mean-activation scalar per layer.

    Args:
        layers: layers to include (default: every layer but ``flatten`` and ``dropout``, in forward order).
        per_class: samples per class in the fixed validation set.
    """

    technique = "layer_responses"

    def configure(self, net, shapes):
        if self.layers is None:
            mods = dict(net.named_modules())
            self.layers = [n for n in shapes if not isinstance(mods[n], (nn.Flatten, nn.Dropout, nn.Identity))]
        check_layers(net, self.layers)
        self.share_layers(self.layers, self.per_class)

    def render(self, ctx: RenderContext) -> None:
        acts, y = self.fixed_set_activations(ctx, self.layers, self.per_class)
        resp = layer_class_responses(acts, y, len(ctx.classes))  # (L, K)
        texts = [[f"{v:.2f}" for v in row.tolist()] for row in resp]
        img = annotated_heatmap(row_contrast(resp), self.layers, [str(c) for c in range(len(ctx.classes))], texts,
                                hi=1.0, cell=(16, 40), signed=True)
        ctx.add_image(self.technique, label(img, f"mean activation per layer and class (colour: above / below the layer's average), epoch {ctx.step}"))
        for layer, a in acts.items():
            ctx.add_scalar(f"{self.technique}/{layer}", float(a.float().mean()))
