"""Activation distributions: histograms ``activations/<layer>`` and scalars ``activations/<layer>/dead_fraction``.

TensorBoard's Histograms and Distributions tabs show, epoch by epoch, every value each chosen layer produced for
a fixed, class-balanced validation subset (default 20 images per class): pre-ReLU layers should stay centred with a
stable spread, post-ReLU layers show the spike at zero growing or shrinking. For each ReLU layer, the fraction of
*dead* units: units (conv: channels) that output zero for every sample of the fixed validation set (default 500
per class) at every position. A dead unit gets no gradient and will not recover on its own.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import legacy_callback
from .hooks import capture_activations, check_layers
from .layers import is_nonlinearity, layer_roles
from .methods.activations import dead_fraction
from .technique import HISTOGRAM_VALUES, FixedSetTechnique, RenderContext, positive_int

__all__ = ["Activations", "ActivationsCallback"]

HISTOGRAM_MAX = 200  # images at most behind the histograms (20 per class at 10 classes, 2 at 100): a histogram keeps
# at most 16,384 values per layer (``RenderContext.add_histogram``), which 200 images already give many times over


class Activations(FixedSetTechnique):
    """Log histograms of layer activations and the dead-unit fraction of ReLU layers.

    Args:
        layers: layers to histogram (default: every conv, Linear and ReLU layer).
        per_class: samples per class whose raw activations go into the histograms.
        dead_per_class: samples per class of the fixed set used to call a unit dead.
    """

    technique = "activations"
    max_default_layers = 16  # histograms cost little; a deep net gets 16 spread over its depth

    def __init__(
        self, layers: list[str] | None = None, per_class: int = 20, dead_per_class: int = 500, **kwargs
    ) -> None:
        super().__init__(layers=layers, per_class=per_class, **kwargs)
        positive_int(self, "dead_per_class", dead_per_class)
        self.dead_per_class = dead_per_class
        self.layer_names: list[str] = []

    def configure(self, net, shapes):
        mods = dict(net.named_modules())
        layers = self.layers
        if layers is None:
            order = layer_roles(net, shapes).order  # outside squeeze-excitation blocks
            layers = self.thin(
                [n for n in order if isinstance(mods[n], (nn.Conv2d, nn.Linear)) or is_nonlinearity(mods[n])]
            )
        self.layer_names = check_layers(net, layers)
        self.relus = [n for n in self.layer_names if isinstance(mods[n], nn.ReLU)]
        self.share_layers(self.relus, self.dead_per_class)

    def render(self, ctx: RenderContext) -> None:
        x, _ = ctx.fixed_set(self.per_class, HISTOGRAM_MAX)
        self.histogram_idx = self.fixed_idx  # the histograms' images (the dead set's: ``fixed_idx``)
        for layer, values in self.histogram_values(ctx.net, x).items():
            ctx.add_histogram(f"{self.technique}/{layer}", values)
        if self.relus:
            # A post-ReLU unit is dead iff its spatial mean is zero for every sample (all values are >= 0), so the
            # per-sample means shared with the other fixed-set callbacks are enough.
            means, _ = ctx.fixed_set_activations(self.relus, self.dead_per_class)
            for layer in self.relus:
                ctx.add_scalar(f"{self.technique}/{layer}/dead_fraction", dead_fraction(means[layer]))

    def histogram_values(self, net: nn.Module, x: Tensor) -> dict[str, Tensor]:
        """Each layer's values over ``x`` as its histogram takes them: every ``s``-th of the flattened activations
        (``s`` makes at most ``HISTOGRAM_VALUES``), gathered pass by pass, each pass's maps within
        ``capture_bytes``, so 16 full-resolution layers of 200 images are never held at once (18 GB on a
        ResNet-50 at 224 px). The values thinning the whole capture gives, in the same order (to float rounding where
        a pass holds fewer images; where one pass holds them all, as on LeNet-5, the very same)."""
        n, batch = len(x), self.capture_batch(x, self.layer_names, len(x))
        kept: dict[str, list[Tensor]] = {layer: [] for layer in self.layer_names}
        for start in range(0, n, batch):
            acts = capture_activations(net, x[start : start + batch], self.layer_names, stop_after_last=True)
            for layer in self.layer_names:
                flat = acts[layer].detach().flatten()
                per_image = flat.numel() // len(acts[layer])
                step = max(1, -(-n * per_image // HISTOGRAM_VALUES))  # as add_histogram thins the whole
                kept[layer].append(flat[(-start * per_image) % step :: step].to("cpu", copy=True))  # not a view
            del acts
        return {layer: torch.cat(values) for layer, values in kept.items()}


ActivationsCallback = legacy_callback(Activations, "ActivationsCallback")
