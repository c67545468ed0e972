"""What the owner gathers from the validation loop's own forward passes, so that no technique needs a pass of its own.

capture = EpochCapture(net, stats, fixed_idx, labels, n, batch_size, key)   # at validation epoch start
capture.add(batch, batch_idx)                                             # each validation batch
capture.complete()                                                        # every fixed-set sample seen once?
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, SequentialSampler

from .data import DataFacts, val_loader
from .hooks import ActivationStats, LayerProbe

__all__ = ["Source", "EpochCapture", "sequential_batch_size"]


@dataclass(frozen=True)
class Source:
    """What a snapshot listener learns of the callback that drew a picture: facts of its class, not the callback."""

    technique: str
    evolves: bool = True  # drawn at several epochs (the evolution callback may stack its snapshots)
    class_tags: bool = False  # tags are <technique>/<class>, one picture per class

    @classmethod
    def of(cls, callback: Any) -> Source:
        return cls(
            str(callback.technique),
            bool(getattr(callback, "evolves", True)),
            bool(getattr(callback, "class_tags", False)),
        )


def sequential_batch_size(trainer: pl.Trainer, facts: DataFacts) -> int | None:
    """The validation loader's batch size when its batch ``b`` holds the validation samples ``b * size, ...`` in
    order, in one process (so a batch's samples are known by position); else None."""
    if trainer.world_size != 1:
        return None
    if facts.tensors is not None:  # the fast path: MNISTDataModule's TensorBatches over the same tensors
        loader = trainer.val_dataloaders
        ordered = getattr(loader, "shuffle", True) is False and getattr(loader, "x", None) is facts.tensors[0]
        return int(loader.batch_size) if ordered else None
    loader = val_loader(trainer)
    if isinstance(loader, DataLoader) and isinstance(loader.sampler, SequentialSampler) and loader.batch_size:
        return int(loader.batch_size)
    return None


class EpochCapture:
    """The fixed-set statistics of one epoch, gathered from the validation loop's own forward passes instead of a
    pass of their own: a ``LayerProbe`` on the shared layers keeps each validation batch's activations, and the
    samples of the fixed set among them go into an ``ActivationStats``. It gives up (and the callbacks make their own
    pass) unless every fixed-set sample was seen exactly once, with the label expected at its position, in the net's
    own dtype: under autocast (``bf16-mixed``) the loop's activations are bf16, and the pictures are float32."""

    def __init__(
        self,
        net: nn.Module,
        stats: ActivationStats,
        fixed_idx: Tensor,
        labels: Tensor,
        n: int,
        batch_size: int,
        key: tuple,
    ) -> None:
        self.stats, self.batch_size, self.key = stats, batch_size, key
        param = next(net.parameters(), None)
        self.dtype = param.dtype if param is not None else torch.get_default_dtype()
        self.where = torch.full((n,), -1, dtype=torch.long)  # validation index -> position in the fixed set
        self.where[fixed_idx.cpu()] = torch.arange(len(fixed_idx))
        self.labels = labels.cpu()  # of the fixed set, in its order
        self.probe: LayerProbe | None = LayerProbe(net, stats.layers)
        self.failed = False

    def add(self, batch: Any, batch_idx: int) -> None:
        if self.failed or self.probe is None:
            return
        acts, calls = self.probe.take()
        y = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        start = batch_idx * self.batch_size
        if not isinstance(y, Tensor) or any(c != 1 for c in calls.values()) or start + len(y) > len(self.where):
            return self.close(failed=True)  # not (x, y) batches, or the net did not run once per batch
        if any(a.dtype != self.dtype for a in acts.values() if isinstance(a, Tensor) and a.is_floating_point()):
            return self.close(failed=True)  # autocast: the callbacks' own pass gives the net's own dtype
        pos = self.where[start : start + len(y)]
        mask = pos >= 0
        pos = pos[mask]
        if not pos.numel():
            return
        y = y.detach().cpu().long()[mask]
        if not torch.equal(y, self.labels[pos]) or self.stats.seen[pos].any():
            return self.close(failed=True)  # the batches are not the samples we take them for
        if not bool(mask.all()):  # (a fixed set of the whole split takes every sample: no copy of every map)
            acts = {name: a[mask.to(a.device)] for name, a in acts.items()}
        self.stats.add(acts, y, pos)

    def complete(self) -> bool:
        return not self.failed and bool(self.stats.seen.all())

    def close(self, failed: bool = False) -> None:
        self.failed = self.failed or failed
        if self.probe is not None:
            self.probe.remove()
            self.probe = None
