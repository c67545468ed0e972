"""The decision pipeline of each class's probe image in one picture: ``decision/<class>``.

Top to bottom: the input; the feature maps after each stage (default: every max-pool output, i.e. what the next
stage sees; a net without convolutions starts at its hidden layers); each hidden fully-connected layer's
activations as bars; and the final class probabilities as bars, the true class marked. Read it as the net's
argument for its answer: early stages still look like the input, late ones are a sparse code, and the last bars show
how sure the net is and what it hesitates between.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from callbacks.base import RenderContext, VisualizationCallback, tag_part
from callbacks.hooks import check_layers, forward_with_activations
from callbacks.render import abs_max, bar_chart, grey, hstack, label, sequential, text_cell, tile_grid, upscale, vstack

__all__ = ["decision_pipeline", "default_stages", "DecisionCallback"]


def default_stages(net: nn.Module, shapes: dict[str, tuple[int, ...]]) -> tuple[list[str], list[str]]:
    """``(stages, fc)``: every max-pool layer (or, without one, every ReLU with a spatial output), and every ReLU
    with a vector output (the post-activation hidden fully-connected layers)."""
    mods = dict(net.named_modules())
    stages = [n for n, s in shapes.items() if len(s) == 3 and isinstance(mods[n], nn.MaxPool2d)]
    stages = stages or [n for n, s in shapes.items() if len(s) == 3 and isinstance(mods[n], nn.ReLU)]
    fc = [n for n, s in shapes.items() if len(s) == 1 and isinstance(mods[n], nn.ReLU)]
    return stages, fc


def decision_pipeline(net: nn.Module, images: Tensor, layers: list[str]) -> tuple[dict[str, Tensor], Tensor]:
    """``({layer: activations}, probabilities (N, K))`` for ``images``: one forward pass."""
    logits, acts = forward_with_activations(net, images, layers)
    return acts, torch.softmax(logits.float(), dim=1)


class DecisionCallback(VisualizationCallback):
    """Log, for each class's probe image, input -> stage feature maps -> fc activations -> probabilities.

    Args:
        stages: spatial layers whose maps are shown (default: every max-pool layer).
        fc_layers: vector layers shown as bars (default: every ReLU after a Linear layer).
        every_n_epochs: draw every n epochs (default 2, and always at the last epoch: ten pictures cost about
            0.19 s on a 2-core CPU, and every other epoch keeps all analyses within 15% of a LeNet-5 epoch).
    """

    technique = "decision"
    class_tags = True

    def __init__(self, stages: list[str] | None = None, fc_layers: list[str] | None = None, every_n_epochs: int = 2,
                 **kwargs) -> None:
        super().__init__(every_n_epochs=every_n_epochs, **kwargs)
        self.stages = stages
        self.fc_layers = fc_layers

    def _state_config(self):
        return {"stages": self.stages, "fc_layers": self.fc_layers}

    def configure(self, net, shapes):
        stages, fc = default_stages(net, shapes)
        self.stages = stages if self.stages is None else check_layers(net, self.stages)
        self.fc_layers = fc if self.fc_layers is None else check_layers(net, self.fc_layers)

    def render(self, ctx: RenderContext) -> None:
        x, y = self.probe_images(ctx.trainer)
        acts, probs = decision_pipeline(ctx.net, x, [*self.stages, *self.fc_layers])
        lo, hi = ctx.pixel_range
        k = len(ctx.classes)
        for i, c in enumerate(y.tolist()):
            rows = [label(upscale(grey(x[i, 0], lo, hi), 3), f"input: {ctx.classes[c]}")]
            for layer in self.stages:
                maps = acts[layer][i].float().cpu()  # (C, h, w)
                tiles = sequential(maps, 0.0, abs_max(maps)).movedim(0, 1)  # (C, 3, h, w)
                tiles = upscale(tiles, max(1, 28 // maps.shape[-1]))
                grid = tile_grid(tiles, nrow=min(16, len(tiles)), padding=2)
                rows.append(label(grid, f"{layer} {tuple(maps.shape)}, 0..{abs_max(maps):.3g}"))
            for layer in self.fc_layers:
                v = acts[layer][i].float().cpu().flatten()
                bw = max(1, 320 // len(v))
                rows.append(label(bar_chart(v, height=32, bar_width=bw), f"{layer} ({len(v)} units), 0..{abs_max(v):.3g}"))
            p = probs[i].cpu()
            bars = bar_chart(p, vmax=1.0, height=48, bar_width=24, gap=4)
            names = hstack([text_cell(str(j) + ("*" if j == c else ""), 28, 14) for j in range(k)], gap=0)
            pred = int(p.argmax())
            rows.append(label(vstack([bars, names], gap=0),
                              f"probabilities: {ctx.classes[pred]} {float(p[pred]):.2f} (true: {ctx.classes[c]} {float(p[c]):.2f})"))
            img = label(vstack(rows, gap=6), f"decision of class {c} probe, epoch {ctx.step}")
            ctx.add_image(f"{self.technique}/{c}_{tag_part(ctx.classes[c])}", img)
