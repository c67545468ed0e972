"""Confusion matrices (the numbers behind ``callbacks.confusion``): the net's predictions, their counts per
(true, predicted) class, and the sub-matrix of the classes a picture shows.

    cm = confusion_matrix(net, x, y, num_classes=10)     # (10, 10) counts, [true, predicted]
    sub = sub_confusion(cm, [0, 3, 7])                   # (3, 4): their rows and columns, then "other"

Plain PyTorch and torchmetrics (no Lightning).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics.functional.classification import multiclass_confusion_matrix

__all__ = ["predictions", "confusion_counts", "confusion_matrix", "sub_confusion"]


@torch.no_grad()
def predictions(net: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """``(N,)`` argmax class of ``net`` for every sample, in batches."""
    return torch.cat([net(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def confusion_counts(preds: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``(K, K)`` counts of the predicted classes ``preds`` ``(N,)`` against the true ``labels`` ``(N,)``: entry
    ``[t, p]`` is the number of samples of true class ``t`` predicted as ``p``."""
    return multiclass_confusion_matrix(preds, labels, num_classes)


def confusion_matrix(net: nn.Module, x: Tensor, y: Tensor, num_classes: int, batch_size: int = 1000) -> Tensor:
    """``(K, K)`` counts: entry ``[t, p]`` is the number of samples of true class ``t`` predicted as ``p``."""
    return confusion_counts(predictions(net, x, batch_size), y, num_classes)


def sub_confusion(cm: Tensor, shown: list[int]) -> Tensor:
    """The rows and columns of the ``shown`` classes of a ``(K, K)`` confusion matrix, plus, when some classes are
    not shown, a last column of the predictions of any other class: ``(S, S)`` or ``(S, S + 1)``. Each row then
    still sums to its class's count."""
    idx = torch.as_tensor(shown, dtype=torch.long)
    sub = cm[idx][:, idx]
    if len(shown) == cm.shape[0]:
        return sub
    return torch.cat([sub, (cm[idx].sum(1) - sub.sum(1))[:, None]], dim=1)
