"""A callback the interrupt test passes to ``train.py`` on the command line: it slows training down and marks when
the second epoch is under way, so SIGINT can be sent mid-epoch at a known point; ``SlowDrawing`` keeps a drawing
process behind training (a technique the test puts first in the owner)."""

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from callbacks.technique import Technique


class SlowDown(Callback):
    def __init__(self, marker: str, seconds: float = 0.2) -> None:
        self.marker = marker
        self.seconds = seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch >= 1 and batch_idx >= 1:
            Path(self.marker).touch()
        time.sleep(self.seconds)


class SlowDrawing(Technique):
    """A picture that takes ``seconds`` to draw: a drawing process that lags behind training."""

    technique = "slow"

    def __init__(self, seconds: float = 3.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seconds_each = seconds

    def render(self, ctx) -> None:
        time.sleep(self.seconds_each)
