"""Which classes the per-class pictures show: ``ShownClasses``.

A picture with a row or column per class (probe images, class-mean maps, fc activations, selectivity, layer
responses, decision, deconv, occlusion, the confusion matrix, actmax's logits, samples) shows at most
``max_classes`` classes, the same ones at every epoch so the step slider compares like with like. Without this
callback the default is ``data.default_shown``: ten classes spread evenly over the class indices. Scalars (accuracy,
worst-class recall, selectivity index) still cover every class.

    trainer = Trainer(callbacks=[ShownClasses(names=["tabby cat", "goldfish", 207]), *visualizations])
    python train.py fit --config ... --classes.names '[Coat, Bag]'
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from typing_extensions import override

from .data import DataFacts, data_facts, default_shown
from .technique import positive_int

__all__ = ["ShownClasses", "resolve_classes", "class_columns", "shown_probs", "shown_positions"]


def resolve_classes(names: list[str | int] | None, max_classes: int, classes: tuple[str, ...]) -> tuple[int, ...]:
    """Class indices for ``names`` (class names, or indices as ints or digit strings), or the default spread of
    ``max_classes``; ``ValueError`` for an unknown name, an index out of range, a repeat, or too many names."""
    positive_int("ShownClasses", "max_classes", max_classes)
    if names is None:
        return default_shown(len(classes), max_classes)
    if not names:
        raise ValueError("ShownClasses: empty class list; leave `names` unset for the default spread")
    if len(names) > max_classes:
        raise ValueError(
            f"ShownClasses: {len(names)} classes named but max_classes is {max_classes}; raise max_classes"
        )
    index = {name: i for i, name in enumerate(classes)}
    chosen = []
    for name in names:
        if isinstance(name, str) and name in index:
            chosen.append(index[name])
        elif isinstance(name, int) and not isinstance(name, bool) or isinstance(name, str) and name.isdigit():
            i = int(name)
            if not 0 <= i < len(classes):
                raise ValueError(
                    f"ShownClasses: class index {i} out of range; the data has {len(classes)} classes, "
                    f"valid 0..{len(classes) - 1}"
                )
            chosen.append(i)
        else:
            some = ", ".join(classes[:20]) + (f", ... ({len(classes)} in all)" if len(classes) > 20 else "")
            raise ValueError(
                f"ShownClasses: unknown class {name!r}; valid: class names ({some}) or indices 0..{len(classes) - 1}"
            )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"ShownClasses: a class is named twice in {names}")
    return tuple(chosen)


class ShownClasses(Callback):
    """Choose the classes that every per-class picture shows, for the whole run (checked at ``setup``).

    Args:
        names: class names or indices, in the order the rows show them (default: ``max_classes`` spread evenly).
        max_classes: how many classes the default shows, and the most that ``names`` may list.
    """

    def __init__(self, names: list[str | int] | None = None, max_classes: int = 10) -> None:
        positive_int(self, "max_classes", max_classes)  # a bad max_classes fails at once, not at setup
        self.names = names
        self.max_classes = max_classes

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        facts: DataFacts = data_facts(trainer, pl_module)
        facts.shown = resolve_classes(self.names, self.max_classes, facts.classes)


def class_columns(classes: Sequence[str], shown: Sequence[int]) -> list[str]:
    """Names of the class columns of a picture: ``"<index> <name>"`` of each shown class, then ``"other"`` when
    some classes are not shown (the columns of ``shown_probs`` and the values of ``shown_positions``)."""
    return [f"{c} {classes[c]}" for c in shown] + (["other"] if len(shown) < len(classes) else [])


def shown_probs(probs: Tensor, shown: Sequence[int]) -> Tensor:
    """``(N, K)`` class probabilities -> ``(N, S)``, the shown classes', or ``(N, S + 1)`` with the sum of all the
    others last when some are not shown (each row still sums to 1)."""
    sub = probs[:, list(shown)]
    if len(shown) == probs.shape[1]:
        return sub
    return torch.cat([sub, (probs.sum(1) - sub.sum(1)).clamp(min=0)[:, None]], dim=1)


def shown_positions(labels: Tensor, shown: Sequence[int], num_classes: int) -> Tensor:
    """Class indices -> their position in ``shown``, and ``len(shown)`` ("other") for a class not shown."""
    where = torch.full((num_classes,), len(shown), dtype=torch.long)
    where[torch.as_tensor(list(shown), dtype=torch.long)] = torch.arange(len(shown))
    return where[labels.long().cpu()].reshape(labels.shape)
