"""Where the callbacks' images come from: the Trainer's validation (and training) data, whatever its source.

    facts = data_facts(trainer, pl_module)       # classes, input shape (C, H, W), pixel range, label source
    x, y = facts.images(indices)                 # those validation samples, as tensors
    idx = choose_per_class(facts.labels(), 5, facts.num_classes)   # the first 5 of each class, class by class

A datamodule with ``split(name) -> (x, y)`` tensors (``MNISTDataModule``) is read directly (the fast path). Any
other source works through the Trainer's validation ``DataLoader``: its ``dataset`` is indexed (map-style), labels
come from ``dataset.targets`` (torchvision's convention) or one pass over the dataset, class names from the
datamodule's or the dataset's ``classes``, else the indices. The facts of one dataset are computed once and shared
by every callback (``data_facts`` caches them per dataset object), so the fixed images are chosen one way for all.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from .hooks import spread

__all__ = [
    "DataFacts",
    "data_facts",
    "choose_per_class",
    "default_shown",
    "set_budget",
    "val_loader",
    "train_samples",
    "MAX_SHOWN_CLASSES",
    "FIXED_SET_MAX",
]

PIXEL_RANGE_SAMPLES = 1000  # images scanned for the pixel range when the datamodule does not state it
MAX_SHOWN_CLASSES = 10  # classes a picture with a row or column per class shows, unless chosen (``ShownClasses``)
FIXED_SET_MAX = 5000  # images of a fixed set at most, whatever the class count: its per-class count is capped


def _first_loader(loaders: Any) -> DataLoader | None:
    """The first ``DataLoader`` of what Lightning holds (one loader, a list, a dict or a CombinedLoader)."""
    if loaders is None or isinstance(loaders, DataLoader):
        return loaders
    flattened = getattr(loaders, "flattened", None)  # CombinedLoader
    if flattened is not None:
        return _first_loader(flattened)
    if isinstance(loaders, dict):
        return _first_loader(next(iter(loaders.values()), None))
    if isinstance(loaders, (list, tuple)):
        return _first_loader(loaders[0] if loaders else None)
    return None


def _loader(trainer: pl.Trainer, stage: str) -> DataLoader | None:
    loaded = trainer.train_dataloader if stage == "train" else trainer.val_dataloaders
    if loaded is not None:
        return _first_loader(loaded)
    if stage == "train":
        loop = trainer.fit_loop
    else:
        loop = trainer.validate_loop if trainer.state.fn == "validate" else trainer.fit_loop.epoch_loop.val_loop
    # Before Lightning loads them, its loops record where the loaders come from (no public API for that yet).
    source = getattr(loop, "_data_source", None)
    if source is None or source.instance is None or not source.is_defined():
        return None
    return _first_loader(source.dataloader())


def val_loader(trainer: pl.Trainer) -> DataLoader | None:
    """The Trainer's (first) validation ``DataLoader``, loading it from its source if Lightning has not yet."""
    return _loader(trainer, "val")


def _labels_of(dataset: Dataset) -> Tensor:
    """All labels of a map-style dataset: ``targets``/``labels`` when it has them, else one pass over it."""
    for name in ("targets", "labels"):
        t = getattr(dataset, name, None)
        if t is not None:
            return torch.as_tensor(t).long().flatten()
    if isinstance(dataset, Subset):
        return _labels_of(dataset.dataset)[torch.as_tensor(dataset.indices).long()]
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))]).long()


def _stack(samples: list, what: str) -> tuple[Tensor, Tensor]:
    if not samples:
        raise RuntimeError(f"no {what} samples of the classes asked for (the {what} data has none of them)")
    try:
        x = torch.stack([torch.as_tensor(s[0]) for s in samples]).float()
        y = torch.as_tensor([int(s[1]) for s in samples]).long()
    except (TypeError, ValueError, RuntimeError, IndexError) as e:
        raise RuntimeError(
            f"convscope needs {what} samples as (image tensor (C, H, W), integer label) pairs, e.g. a torchvision "
            f"dataset with transform=ToTensor(); got {type(samples[0]).__name__} ({e})"
        ) from None
    if x.dim() != 4:
        raise RuntimeError(f"convscope needs {what} images shaped (C, H, W), got {tuple(x.shape[1:])}")
    return x, y


def choose_per_class(labels: Tensor, per_class: int, classes: int | Sequence[int]) -> Tensor:
    """The first ``per_class`` indices of each class, class by class (deterministic, no randomness); ``classes``:
    how many (all of ``0..classes-1``) or which."""
    labels = labels.cpu()
    classes = range(classes) if isinstance(classes, int) else classes
    if not len(classes):
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in classes])


def default_shown(num_classes: int, k: int = MAX_SHOWN_CLASSES) -> tuple[int, ...]:
    """``k`` class indices spread evenly over ``0..num_classes-1``, the first and the last included (all of them
    when there are at most ``k``): on ImageNet, fish, birds, dogs, objects and food rather than ten fish."""
    return tuple(spread(range(num_classes), k))


def set_budget(per_class: int, num_classes: int, total: int = FIXED_SET_MAX) -> int:
    """The per-class count of a fixed set of ``per_class`` samples per class: capped so that the set holds at most
    ``total`` images (``FIXED_SET_MAX``: at 10 classes nothing changes; at 100, 50 each; at 1,000, 5 each), so a
    drawing's cost does not grow with the class count."""
    return max(1, min(per_class, total // max(1, num_classes)))


@dataclass
class DataFacts:
    """What the callbacks need to know about the validation data."""

    classes: tuple[str, ...]
    input_shape: tuple[int, ...]
    pixel_range: tuple[float, float]
    tensors: tuple[Tensor, Tensor] | None = None  # the fast path: the whole split as tensors
    dataset: Dataset | None = None
    _labels: Tensor | None = field(default=None, repr=False)
    shown: tuple[int, ...] | None = None  # the classes that per-class pictures show (``ShownClasses``; default spread)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def shown_classes(self) -> tuple[int, ...]:
        """The classes that pictures with a row or column per class show, fixed for the run: those chosen with
        ``ShownClasses``, else ``default_shown``."""
        return self.shown if self.shown is not None else default_shown(self.num_classes)

    def labels(self) -> Tensor:
        if self.tensors is not None:
            return self.tensors[1]
        if self._labels is None:
            self._labels = _labels_of(self.dataset)
        return self._labels

    def images(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, y)`` of the validation samples at ``indices``."""
        if self.tensors is not None:
            x, y = self.tensors
            idx = indices.to(x.device)
            return x[idx], y[idx.to(y.device)]
        return _stack([self.dataset[int(i)] for i in indices], "validation")


_FACTS: weakref.WeakKeyDictionary[Any, DataFacts] = weakref.WeakKeyDictionary()


def data_facts(trainer: pl.Trainer, pl_module: pl.LightningModule | None = None) -> DataFacts:
    """The validation data's facts, computed once per dataset (or datamodule) and shared by every callback."""
    dm = getattr(trainer, "datamodule", None)
    split = getattr(dm, "split", None)
    key = dm if callable(split) else None
    dataset = None
    if key is None:
        loader = val_loader(trainer)
        if loader is None:
            raise RuntimeError(
                "convscope's callbacks draw from the validation data, but this Trainer has none: pass "
                "val_dataloaders to trainer.fit (or define val_dataloader in the LightningModule or datamodule)"
            )
        dataset = key = loader.dataset
    facts = _FACTS.get(key)
    if facts is not None:
        return facts
    if dataset is None:  # the fast path: a datamodule holding the split as tensors
        x, y = split("val")
        tensors = (x, y)
        shape = tuple(x.shape[1:])
        sample = x[:PIXEL_RANGE_SAMPLES]
    else:
        tensors = None
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise RuntimeError("convscope needs a map-style validation dataset (with __getitem__ and __len__)")
        sample, _ = _stack([dataset[i] for i in range(min(len(dataset), 64))], "validation")
        shape = tuple(sample.shape[1:])
    classes = getattr(dm, "classes", None) or getattr(dataset, "classes", None)
    if not classes:
        n = getattr(pl_module, "num_classes", None)
        if n is None:
            labels = tensors[1] if tensors is not None else _labels_of(dataset)
            n = int(labels.max()) + 1 if len(labels) else 1
        classes = [str(i) for i in range(int(n))]
    pixel_range = getattr(dm, "pixel_range", None)
    if pixel_range is None:
        lo, hi = float(sample.min()), float(sample.max())
        pixel_range = (lo, hi if hi > lo else lo + 1.0)
    facts = DataFacts(tuple(str(c) for c in classes), shape, tuple(float(v) for v in pixel_range), tensors, dataset)
    _FACTS[key] = facts
    return facts


def train_samples(
    trainer: pl.Trainer, facts: DataFacts, per_class: int, classes: Sequence[int] | None = None
) -> tuple[Tensor, Tensor]:
    """The first ``per_class`` training samples of each class of ``classes`` (default: every class), from the
    datamodule's ``split("train")`` when it has one, else the training ``DataLoader``'s dataset."""
    classes = facts.num_classes if classes is None else classes
    dm = getattr(trainer, "datamodule", None)
    if callable(getattr(dm, "split", None)):
        x, y = dm.split("train")
        idx = choose_per_class(y, per_class, classes).to(y.device)
        return x[idx.to(x.device)], y[idx]
    loader = _loader(trainer, "train")
    if loader is None:
        raise RuntimeError("no training data to draw samples from")
    dataset = loader.dataset
    idx = choose_per_class(_labels_of(dataset), per_class, classes)
    return _stack([dataset[int(i)] for i in idx], "training")
