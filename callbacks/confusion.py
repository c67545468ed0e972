"""Confusion matrix on the whole validation split: ``confusion_matrix``.

Rows are true classes, columns predicted ones; each cell prints the count and is coloured by the fraction of its
row (so a perfect classifier is a bright diagonal on a dark field, whatever the class sizes). Off-diagonal bright
cells name the pairs the net confuses (on Fashion-MNIST: shirt / T-shirt / pullover / coat). Computed with
torchmetrics from the predictions the validation loop already made (no extra forward pass); under DDP, where each
rank saw a share, rank zero recomputes them over the full validation split, which every rank holds, so the matrix
is the single-process answer. Scalar ``confusion_matrix/worst_class_recall``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.functional.classification import multiclass_confusion_matrix

from .base import RenderContext, VisualizationCallback
from .figures import SEQUENTIAL, colorbar
from .live_figure import LiveFigure, contrast_colours, draw_texts

__all__ = ["predictions", "confusion_matrix", "ConfusionChart", "ConfusionMatrixCallback"]


@torch.no_grad()
def predictions(net: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """``(N,)`` argmax class of ``net`` for every sample, in batches."""
    return torch.cat([net(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def confusion_matrix(net: nn.Module, x: Tensor, y: Tensor, num_classes: int, batch_size: int = 1000) -> Tensor:
    """``(K, K)`` counts: entry ``[t, p]`` is the number of samples of true class ``t`` predicted as ``p``."""
    return multiclass_confusion_matrix(predictions(net, x, batch_size), y, num_classes)


class ConfusionChart:
    """The confusion matrix: counts in the cells, colour = fraction of the true class (fixed 0..1 scale); built
    once, redrawn by ``draw`` (the counts are Pillow text, see ``callbacks.live_figure``)."""

    def __init__(self, classes: tuple[str, ...]) -> None:
        k = len(classes)
        cell = 30
        self.live = LiveFigure(min(720, 175 + cell * k), 105 + cell * k)
        with self.live.rc():
            self.ax = ax = self.live.fig.add_subplot()
            self.im = self.live.animate(ax.imshow(np.zeros((k, k)), cmap=SEQUENTIAL, vmin=0, vmax=1,
                                                  interpolation="nearest"))
            ax.set_xticks(range(k), [str(c) for c in range(k)])
            ax.set_yticks(range(k), [f"{name} {c}" for c, name in enumerate(classes)])
            ax.tick_params(length=0)
            ax.set_xlabel("predicted class")
            ax.set_ylabel("true class")
            colorbar(self.live.fig, self.im, ax, "fraction of the true class")
            self.note = self.live.slot(ax.set_title("00000 samples, accuracy 00.0%"))
            self.live.title("Confusion matrix, validation split")
        self.cells = np.array([(j, i) for i in range(k) for j in range(k)], dtype=np.float64)

    def draw(self, cm: Tensor, step: int) -> Tensor:
        """``(3, H, W)`` uint8 for the ``(K, K)`` counts ``cm``."""
        cm = cm.cpu()
        frac = (cm.double() / cm.sum(1, keepdim=True).clamp(min=1)).numpy()
        self.im.set_data(frac)
        acc = float(cm.diag().sum()) / max(1, int(cm.sum()))
        self.note.text = f"{int(cm.sum())} samples, accuracy {100 * acc:.1f}%"
        img = self.live.image(step)
        colours = contrast_colours(self.im.cmap(self.im.norm(frac)))
        return draw_texts(img, self.live.to_pixels(self.ax, self.cells), [str(int(v)) for v in cm.flatten()], colours)


class ConfusionMatrixCallback(VisualizationCallback):
    """Log a labelled confusion-matrix picture of the validation split.

    Args:
        batch_size: samples per forward pass.
    """

    technique = "confusion_matrix"

    def __init__(self, batch_size: int = 1000, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"ConfusionMatrixCallback: batch_size must be an integer >= 1, got {batch_size!r}")
        self.batch_size = batch_size

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        super().on_validation_epoch_start(trainer, pl_module)
        self._seen: list[tuple[Tensor, Tensor]] = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        if self.enabled and trainer.world_size == 1 and isinstance(outputs, dict) and "preds" in outputs:
            self._seen.append((outputs["preds"], batch[1]))

    def render(self, ctx: RenderContext) -> None:
        seen = getattr(self, "_seen", [])
        if seen and ctx.trainer.world_size == 1:  # the validation loop's own predictions
            preds, y = torch.cat([p for p, _ in seen]), torch.cat([t for _, t in seen])
            cm = multiclass_confusion_matrix(preds, y, len(ctx.classes)).cpu()
        else:  # the whole validation split, in batches
            facts = self.facts(ctx.trainer)
            device = next(ctx.net.parameters(), torch.empty(0)).device
            n = len(facts.labels())
            preds, labels = [], []
            for s in range(0, n, self.batch_size):
                x, y = facts.images(torch.arange(s, min(n, s + self.batch_size)))
                preds.append(predictions(ctx.net, x.to(device), self.batch_size).cpu())
                labels.append(y.cpu())
            cm = multiclass_confusion_matrix(torch.cat(preds), torch.cat(labels), len(ctx.classes))
        if ctx.classes not in self._charts:
            self._charts = {ctx.classes: ConfusionChart(ctx.classes)}
        ctx.add_image(self.technique, self._charts[ctx.classes].draw(cm, ctx.step))
        recall = cm.diag().float() / cm.sum(1).clamp(min=1)
        ctx.add_scalar(f"{self.technique}/worst_class_recall", float(recall.min()))
