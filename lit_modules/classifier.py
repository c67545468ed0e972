"""``LitClassifier``: any architecture from ``nets.py`` trained with cross-entropy."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

__all__ = ["LitClassifier"]


class LitClassifier(pl.LightningModule):
    """Wraps a plain network as ``self.net``; logs ``train/loss``, ``val/loss``, ``val/acc``, ``test/{loss,acc}``.

    Args:
        net: the architecture (``model.net.class_path`` in YAML), input ``(N, 1, 28, 28)``, output logits.
        optimizer: a callable that takes the parameters, e.g. ``torch.optim.Adam`` or, in YAML,
            ``{class_path: torch.optim.SGD, init_args: {lr: 0.01}}``.
        lr_scheduler: optional callable that takes the optimizer (stepped once per epoch), e.g.
            ``{class_path: torch.optim.lr_scheduler.ExponentialLR, init_args: {gamma: 0.774}}``.
        num_classes: number of output classes.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        # Under the Lightning CLI the hyperparameters are the config (class paths included), so
        # LitClassifier.load_from_checkpoint(path) rebuilds the same net; outside it the net object is not pickled.
        self.save_hyperparameters(ignore=["net"] if not _in_cli_context() else None)
        self.net = net
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.num_classes = num_classes
        self.checkpoint_epoch: int | None = None  # set when weights are loaded from a checkpoint
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def __getstate__(self) -> dict:
        # A copy (a drawing process's: ``callbacks.drawing``) only validates; the CLI's optimizer factories refer to
        # the script that trains and need not be pickled.
        return {**super().__getstate__(), "optimizer": None, "lr_scheduler": None}

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (N, num_classes) logits

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str, acc: MulticlassAccuracy) -> dict[str, Tensor]:
        x, y = batch
        logits = self.net(x)
        acc.update(logits, y)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), on_epoch=True, prog_bar=stage == "val")
        self.log(f"{stage}/acc", acc, on_epoch=True, prog_bar=stage == "val")
        return {"preds": logits.argmax(1).detach()}  # for callbacks (the confusion matrix reuses them)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "test", self.test_acc)

    def predict_step(self, batch: tuple[Tensor, Tensor] | Tensor, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return torch.softmax(self.net(x), dim=1)  # (N, num_classes) class probabilities

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # The epoch the weights come from, so `train.py validate --ckpt_path` logs its pictures at that step.
        self.checkpoint_epoch = checkpoint.get("epoch")

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def _in_cli_context() -> bool:
    """True while the Lightning CLI instantiates the model (it then supplies the config as hyperparameters)."""
    from lightning.pytorch.core.mixins import hparams_mixin

    given = getattr(hparams_mixin, "_given_hyperparameters", None)
    return given is not None and given.get() is not None
