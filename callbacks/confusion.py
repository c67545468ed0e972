"""Confusion matrix on the whole validation split: ``confusion_matrix``.

Rows are true classes, columns predicted ones; each cell prints the count and is coloured by the fraction of its
row on a square-root scale (so a perfect classifier is a bright diagonal on a dark field, whatever the class sizes,
and a confusion of a few percent already shows). Off-diagonal lighter
cells name the pairs the net confuses (on Fashion-MNIST: shirt / T-shirt / pullover / coat). Computed with
torchmetrics from the predictions the validation loop already made (returned as ``preds``, or else read from the
net's output by a forward hook during the loop; no extra forward pass); under DDP, where each
rank saw a share, rank zero recomputes them over the full validation split, which every rank holds, so the matrix
is the single-process answer. Scalar ``confusion_matrix/worst_class_recall`` (over every class).

With more classes than the pictures show (``ShownClasses``), the picture is the shown classes' sub-matrix
(``sub_confusion``, in ``callbacks.methods.confusion``): their rows, their columns and one column "other" for
predictions of any class not shown, so every row still sums to its class's count; the title gives the accuracy and the
median and worst recall over every class.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.colors import PowerNorm
from torch import Tensor

from .base import legacy_callback
from .figures import SEQUENTIAL, colorbar
from .live_figure import LiveFigure, contrast_colours, draw_texts
from .methods.confusion import confusion_counts, predictions, sub_confusion
from .technique import RenderContext, Technique, positive_int

__all__ = ["ConfusionChart", "ConfusionMatrix", "ConfusionMatrixCallback"]


class ConfusionChart:
    """The confusion matrix of the shown classes: counts in the cells, colour = fraction of the true class (fixed
    0..1 scale, square-root: a confusion of 5% already shows, one of 15% stands out), a last column "other" when
    classes are left out; built once, redrawn by ``draw`` (the counts are Pillow text, see
    ``callbacks.live_figure``)."""

    def __init__(self, classes: tuple[str, ...], shown: list[int]) -> None:
        k = len(shown)
        other = k < len(classes)
        cols = k + other
        cell = 30
        self.live = LiveFigure(min(720, 175 + cell * cols), 105 + cell * k)
        with self.live.rc():
            self.ax = ax = self.live.fig.add_subplot()
            self.im = self.live.animate(
                ax.imshow(np.zeros((k, cols)), cmap=SEQUENTIAL, norm=PowerNorm(0.5, 0, 1), interpolation="nearest")
            )
            ax.set_xticks(
                range(cols),
                [str(c) for c in shown] + (["other"] if other else []),
                rotation=45 if other else 0,
                ha="right" if other else "center",
                rotation_mode="anchor",
            )
            ax.set_yticks(range(k), [f"{classes[c]} {c}" for c in shown])
            ax.tick_params(length=0)
            ax.set_xlabel("predicted class")
            ax.set_ylabel("true class")
            bar = colorbar(self.live.fig, self.im, ax, "fraction of the true class (square-root scale)")
            bar.set_ticks(
                [0, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1],
                labels=["0", ".02", ".05", ".1", ".2", ".4", ".6", ".8", "1"],
            )
            note = (
                "00000 samples, accuracy 00.0%" if not other else "acc. 00.0% of 00000; recall median 00.0%, min 00.0%"
            )
            self.note = self.live.slot(ax.set_title(note, fontsize=9 if other else None))
            self.live.title(
                "Confusion matrix, validation split" + (f" ({k} of {len(classes)} classes)" if other else "")
            )
        self.shown, self.other = shown, other
        self.cells = np.array([(j, i) for i in range(k) for j in range(cols)], dtype=np.float64)

    def draw(self, cm: Tensor, step: int) -> Tensor:
        """``(3, H, W)`` uint8 for the ``(K, K)`` counts ``cm`` (the shown classes' part of it)."""
        cm = cm.cpu()
        sub = sub_confusion(cm, self.shown)
        frac = (sub.double() / sub.sum(1, keepdim=True).clamp(min=1)).numpy()
        self.im.set_data(frac)
        acc = float(cm.diag().sum()) / max(1, int(cm.sum()))
        note = f"{int(cm.sum())} samples, accuracy {100 * acc:.1f}%"
        if self.other:  # over every class, not only those shown
            recall = cm.diag().double() / cm.sum(1).clamp(min=1)
            note = (
                f"acc. {100 * acc:.1f}% of {int(cm.sum())}; recall median {100 * float(recall.median()):.1f}%, "
                f"min {100 * float(recall.min()):.1f}%"
            )
        self.note.text = note
        img = self.live.image(step)
        colours = contrast_colours(self.im.cmap(self.im.norm(frac)))
        return draw_texts(img, self.live.to_pixels(self.ax, self.cells), [str(int(v)) for v in sub.flatten()], colours)


class ConfusionMatrix(Technique):
    """Log a labelled confusion-matrix picture of the validation split.

    Args:
        batch_size: samples per forward pass.
    """

    technique = "confusion_matrix"
    wants_predictions = True
    layer_args = ()  # names no layer

    def __init__(self, batch_size: int = 1000, **kwargs) -> None:
        super().__init__(**kwargs)
        positive_int(self, "batch_size", batch_size)
        self.batch_size = batch_size

    def render(self, ctx: RenderContext) -> None:
        seen = ctx.val_predictions()
        if seen is not None:  # the validation loop's own predictions, gathered by the owner
            cm = confusion_counts(seen[0], seen[1], len(ctx.classes)).cpu()
        else:  # the whole validation split, in batches
            facts = ctx.facts
            device = next(ctx.net.parameters(), torch.empty(0)).device
            n = len(facts.labels())
            preds, labels = [], []
            for s in range(0, n, self.batch_size):
                x, y = facts.images(torch.arange(s, min(n, s + self.batch_size)))
                preds.append(predictions(ctx.net, x.to(device), self.batch_size).cpu())
                labels.append(y.cpu())
            cm = confusion_counts(torch.cat(preds), torch.cat(labels), len(ctx.classes))
        key = (ctx.classes, ctx.shown)
        if key not in self._charts:
            self._charts = {key: ConfusionChart(ctx.classes, list(ctx.shown))}
        ctx.add_image(self.technique, self._charts[key].draw(cm, ctx.step))
        recall = cm.diag().float() / cm.sum(1).clamp(min=1)
        ctx.add_scalar(f"{self.technique}/worst_class_recall", float(recall.min()))


ConfusionMatrixCallback = legacy_callback(ConfusionMatrix, "ConfusionMatrixCallback")
