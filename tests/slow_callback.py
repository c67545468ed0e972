"""A callback the interrupt test passes to ``train.py`` on the command line: it slows training down and marks when
the second epoch is under way, so SIGINT can be sent mid-epoch at a known point."""

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class SlowDown(Callback):
    def __init__(self, marker: str, seconds: float = 0.2) -> None:
        self.marker = marker
        self.seconds = seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch >= 1 and batch_idx >= 1:
            Path(self.marker).touch()
        time.sleep(self.seconds)
