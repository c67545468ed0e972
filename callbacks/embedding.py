"""Embedding projector: penultimate-layer features in TensorBoard's Projector tab, tag ``embedding/<layer>``.

For a fixed, class-balanced validation subset (default 50 per class: 500 points), the features that enter the last
``Linear`` layer, with each sample's image as a sprite thumbnail and its class name as the label. Colour by label in
the Projector and run PCA or t-SNE: as training goes on, the classes pull apart into clusters. Each snapshot costs
about ``N * (features + 28 * 28)`` bytes on disk, so it is written every 5 epochs by default (and at the last).
"""

from __future__ import annotations

import math
from pathlib import Path

from google.protobuf import text_format
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
from torch import Tensor, nn
from torchvision.transforms.v2.functional import resize

from .base import legacy_callback
from .hooks import NoDefaultLayer, capture_activations, check_layers
from .layers import layer_roles
from .technique import FixedSetTechnique, RenderContext

__all__ = ["penultimate_layer", "embedding_features", "Embedding", "EmbeddingCallback"]

SPRITE_PX = 32  # thumbnails larger than this are shrunk: 5,000 of 224 px would make a 15,904 px sprite (the
# projector takes at most 8,192) and cost gigabytes


def penultimate_layer(net: nn.Module) -> str:
    """The name of the module whose output enters the net's last ``Linear`` layer (forward order of
    ``named_modules``)."""
    names = [n for n, _ in net.named_modules() if n]
    mods = dict(net.named_modules())
    linear = [i for i, n in enumerate(names) if isinstance(mods[n], nn.Linear)]
    if not linear or linear[-1] == 0:
        raise NoDefaultLayer(f"{type(net).__name__} has no layer before a final Linear; name one with `layer`")
    return names[linear[-1] - 1]


def embedding_features(net: nn.Module, x: Tensor, layer: str) -> Tensor:
    """``(N, D)`` the flattened output of ``layer`` for ``x``."""
    return capture_activations(net, x, [layer], stop_after_last=True)[layer].flatten(1)


def _keep_earlier_snapshots(writer) -> None:
    """A resumed fit gets a new writer, which would rewrite ``projector_config.pbtxt`` with its own snapshots only:
    start it from the file already in the run folder, so the earlier epochs stay listed."""
    if hasattr(writer, "_projector_config"):
        return
    path = Path(writer.get_logdir()) / "projector_config.pbtxt"
    if path.is_file():
        writer._projector_config = text_format.Parse(path.read_text(), ProjectorConfig())


class Embedding(FixedSetTechnique):
    """Log penultimate-layer features with sprites and labels for TensorBoard's Projector.

    Args:
        layer: the layer whose output is embedded (default: the input of the last Linear layer).
        per_class: points per class.
        every_n_epochs: write a snapshot every n epochs (and at the last epoch).
    """

    technique = "embedding"
    layer_args = ("layer",)
    layer_example = "{}"

    def __init__(self, layer: str | None = None, per_class: int = 50, every_n_epochs: int = 5, **kwargs) -> None:
        super().__init__(per_class=per_class, every_n_epochs=every_n_epochs, **kwargs)
        self.layer = layer

    def config(self):
        return {"layer": self.layer}

    def configure(self, net, shapes):
        if self.layer is None:  # what enters the logits, wherever the net sits (``layers.layer_roles``)
            self.layer_name = (layer_roles(net, shapes).penultimate(net, shapes) or [penultimate_layer(net)])[0]
        else:
            self.layer_name = check_layers(net, [self.layer])[0]
        # A vector per sample (the usual input of a classifier head): the per-sample unit activations that the
        # validation loop gathers for every fixed-set callback are these features, so no pass of its own.
        self.flat = math.prod(shapes.get(self.layer_name, (0, 0))[1:]) == 1
        if self.flat:
            self.share_layers([self.layer_name], self.per_class)

    def render(self, ctx: RenderContext) -> None:
        x, y = ctx.fixed_set(self.per_class)
        if self.flat:
            feats = ctx.fixed_set_activations([self.layer_name], self.per_class)[0][self.layer_name]
        else:
            feats = embedding_features(ctx.net, x, self.layer_name)
        feats = feats.float().cpu()
        lo, hi = ctx.pixel_range
        thumbs = ((x.float().cpu() - lo) / (hi - lo)).clamp(0, 1)  # (N, C, H, W) in [0, 1]
        if max(thumbs.shape[-2:]) > SPRITE_PX:  # the sprite holds every thumbnail; the projector shows them small
            scale = SPRITE_PX / max(thumbs.shape[-2:])
            size = [max(1, round(d * scale)) for d in thumbs.shape[-2:]]
            thumbs = resize(thumbs, size, antialias=True).clamp(0, 1)
        meta = [f"{ctx.classes[c]}" for c in y.tolist()]
        _keep_earlier_snapshots(ctx.writer)
        ctx.writer.add_embedding(
            feats, metadata=meta, label_img=thumbs, global_step=ctx.step, tag=f"{self.technique}/{self.layer_name}"
        )
        ctx.logged.append(f"{self.technique}/{self.layer_name}")


EmbeddingCallback = legacy_callback(Embedding, "EmbeddingCallback")
