"""Confusion matrix on the whole validation split: ``confusion_matrix``.

Rows are true classes, columns predicted ones; each cell prints the count and is coloured by the fraction of its
row (so a perfect classifier is a bright diagonal on a dark field, whatever the class sizes). Off-diagonal bright
cells name the pairs the net confuses (on Fashion-MNIST: shirt / T-shirt / pullover / coat). Computed with
torchmetrics from the predictions the validation loop already made (no extra forward pass); under DDP, where each
rank saw a share, rank zero recomputes them over the full validation split, which every rank holds, so the matrix
is the single-process answer. Scalar ``confusion_matrix/worst_class_recall``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics.functional.classification import multiclass_confusion_matrix

from callbacks.base import RenderContext, VisualizationCallback
from callbacks.render import annotated_heatmap, label

__all__ = ["predictions", "confusion_matrix", "ConfusionMatrixCallback"]


@torch.no_grad()
def predictions(net: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """``(N,)`` argmax class of ``net`` for every sample, in batches."""
    return torch.cat([net(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def confusion_matrix(net: nn.Module, x: Tensor, y: Tensor, num_classes: int, batch_size: int = 1000) -> Tensor:
    """``(K, K)`` counts: entry ``[t, p]`` is the number of samples of true class ``t`` predicted as ``p``."""
    return multiclass_confusion_matrix(predictions(net, x, batch_size), y, num_classes)


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
        self._seen: list[tuple[Tensor, Tensor]] = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.enabled and trainer.world_size == 1 and isinstance(outputs, dict) and "preds" in outputs:
            self._seen.append((outputs["preds"], batch[1]))

    def render(self, ctx: RenderContext) -> None:
        seen = getattr(self, "_seen", [])
        if seen and ctx.trainer.world_size == 1:  # the validation loop's own predictions
            preds, y = torch.cat([p for p, _ in seen]), torch.cat([t for _, t in seen])
            cm = multiclass_confusion_matrix(preds, y, len(ctx.classes)).cpu()
        else:
            x, y = self._val_split(ctx.trainer)
            cm = confusion_matrix(ctx.net, x, y, len(ctx.classes), self.batch_size).cpu()
        rows = cm.sum(1, keepdim=True).clamp(min=1)
        frac = cm.float() / rows
        names = [f"{c} {name}" for c, name in enumerate(ctx.classes)]
        texts = [[str(int(v)) for v in row] for row in cm]
        img = annotated_heatmap(frac, names, [str(c) for c in range(len(ctx.classes))], texts, lo=0.0, hi=1.0)
        acc = float(cm.diag().sum()) / max(1, int(cm.sum()))
        ctx.add_image(self.technique, label(img, f"true (rows) x predicted (columns), accuracy {acc:.4f}, epoch {ctx.step}"))
        recall = cm.diag().float() / cm.sum(1).clamp(min=1)
        ctx.add_scalar(f"{self.technique}/worst_class_recall", float(recall.min()))
