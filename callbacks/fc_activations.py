"""Fully-connected activations per class: ``fc_activations/<layer>`` and ``sparsity/<layer>``.

Class-wise average activations over a fixed, class-balanced validation set (default 500 samples per class, as the
source project used), one row of bars per class: the layer's pre-ReLU output on the left (red up, blue down), its
post-ReLU output (the ReLU that follows it) on the right. Scalar ``sparsity/<post layer>``: the fraction of zero
post-ReLU activations over the set. Default: every ``Linear`` layer (the last one is the logits, without ReLU).
"""

from __future__ import annotations

from torch import Tensor, nn

from callbacks.base import FixedSetCallback, RenderContext
from callbacks.hooks import check_layers
from callbacks.render import abs_max, bar_chart, hstack, label, vstack
from callbacks.selectivity import class_means

__all__ = ["following_relu", "sparsity", "FCActivationsCallback"]


def following_relu(net: nn.Module, layer: str) -> str | None:
    """The ReLU module that directly follows ``layer`` in the net's order, if any."""
    names = [n for n, _ in net.named_modules() if n]
    mods = dict(net.named_modules())
    i = names.index(layer)
    if i + 1 < len(names) and isinstance(mods[names[i + 1]], nn.ReLU):
        return names[i + 1]
    return None


def sparsity(acts: Tensor) -> float:
    """Fraction of exactly-zero activations."""
    return float((acts == 0).float().mean()) if acts.numel() else 0.0


class FCActivationsCallback(FixedSetCallback):
    """Log per-class mean activations of fully-connected layers, pre- and post-ReLU side by side.

    Args:
        layers: ``Linear`` layers (their following ReLU is found automatically).
        per_class: samples per class in the fixed validation set.
    """

    technique = "fc_activations"

    def configure(self, net, shapes):
        if self.layers is None:
            self.layers = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
        check_layers(net, self.layers)
        self.post = {layer: following_relu(net, layer) for layer in self.layers}
        self.names = list(dict.fromkeys([*self.layers, *[p for p in self.post.values() if p]]))
        self.share_layers(self.names, self.per_class)

    def render(self, ctx: RenderContext) -> None:
        acts, y = self.fixed_set_activations(ctx, self.names, self.per_class)
        k = len(ctx.classes)
        for layer in self.layers:
            pre = class_means(acts[layer].flatten(1), y, k)  # (K, U)
            post_name = self.post[layer]
            post = class_means(acts[post_name].flatten(1), y, k) if post_name else None
            bw = max(1, 240 // pre.shape[1])
            vmax_pre = abs_max(pre)
            vmax_post = abs_max(post) if post is not None else 1.0
            rows = []
            for c in range(k):
                parts = [label(bar_chart(pre[c], vmax_pre, height=32, bar_width=bw), f"{c} {ctx.classes[c]}")]
                if post is not None:
                    parts.append(label(bar_chart(post[c], vmax_post, height=32, bar_width=bw), post_name))
                rows.append(hstack(parts, gap=8))
            title = f"{layer} (pre, +-{vmax_pre:.3g})" + (f" | {post_name} (post, 0..{vmax_post:.3g})" if post is not None else "")
            ctx.add_image(f"{self.technique}/{layer}", label(vstack(rows, gap=3), f"{title}, epoch {ctx.step}"))
            if post_name:
                ctx.add_scalar(f"sparsity/{post_name}", sparsity(acts[post_name]))
