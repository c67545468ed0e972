"""Never lose a run: a checkpoint is written when fit stops on an exception or Ctrl-C (SIGINT).

``InterruptCheckpoint`` is added by ``train.py`` whenever checkpointing is on. It writes
``<run>/checkpoints/interrupted.ckpt`` (a full checkpoint: weights, optimizer, loops, callback states such as the
probe sets and evolution snapshots) and prints the command that resumes from it; ``fit --ckpt_path`` on it
continues in the same run folder. It is not a visualization, so it is not in ``VISUALIZATIONS``.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

__all__ = ["InterruptCheckpoint"]


class InterruptCheckpoint(Callback):
    """Save ``interrupted.ckpt`` beside the run's other checkpoints when fit ends with an exception."""

    filename = "interrupted.ckpt"

    def __init__(self) -> None:
        self.path: Path | None = None

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if trainer.state.fn != "fit" or trainer.checkpoint_callback is None or trainer.fast_dev_run:
            return
        if trainer.global_step == 0:
            return  # nothing trained yet (e.g. a bad setting failed at setup): nothing to lose, nothing to resume
        # trainer.log_dir is not used here: under DDP it is a collective call, and an exception may stop one rank only
        run = getattr(trainer.logger, "log_dir", None) if trainer.logger is not None else None
        folder = trainer.checkpoint_callback.dirpath or str(Path(run or trainer.default_root_dir) / "checkpoints")
        self.path = Path(folder) / self.filename
        trainer.save_checkpoint(self.path)
        config = Path(run or "") / "config.yaml"
        config_arg = str(config) if run and config.is_file() else "<your config>"
        rank_zero_info(
            f"\n{type(exception).__name__} during epoch {trainer.current_epoch}: checkpoint saved to {self.path}\n"
            f"Resume: python train.py fit --config {config_arg} --ckpt_path {self.path}"
        )
