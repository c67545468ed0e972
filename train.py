"""convscope's command line: the Lightning CLI over ``LitClassifier`` and ``MNISTDataModule``.

    python train.py fit --config configs/lenet5.yaml
    python train.py fit --config configs/mlp.yaml --data.dataset fashion_mnist --trainer.max_epochs 3
    python train.py validate --config configs/lenet5.yaml --ckpt_path path/to.ckpt
    python train.py fit --print_config

Logs, the saved config and checkpoints go to ``<trainer.default_root_dir>/lightning_logs/version_N/``.
"""

from __future__ import annotations

import sys

import torch
from lightning.pytorch.cli import LightningCLI

from callbacks import VISUALIZATIONS
from lit_modules.classifier import LitClassifier
from lit_modules.datamodule import MNISTDataModule


class ConvscopeCLI(LightningCLI):
    """LightningCLI with the project's defaults (seed 42, config saved with every run) and the six
    visualization callbacks, each under its own top-level key (``filters``, ``feature_maps``, ``fc_activations``,
    ``actmax``, ``deconv``, ``selectivity``), so one can be changed without repeating the others."""

    def add_arguments_to_parser(self, parser) -> None:
        for key, cls in VISUALIZATIONS.items():
            parser.add_lightning_class_args(cls, key)

    def before_fit(self) -> None:
        _check_model_matches_data(self.model, self.datamodule)

    def before_validate(self) -> None:
        _check_model_matches_data(self.model, self.datamodule)

    def after_fit(self) -> None:
        trainer = self.trainer
        if trainer.is_global_zero and trainer.log_dir:
            ckpt = getattr(trainer.checkpoint_callback, "best_model_path", "") or getattr(
                trainer.checkpoint_callback, "last_model_path", ""
            )
            print(f"\nLogs: {trainer.log_dir}")
            if ckpt:
                print(f"Checkpoint: {ckpt}")
            print(f"View: tensorboard --logdir {trainer.log_dir} --samples_per_plugin images=200 --host 127.0.0.1")


def _check_model_matches_data(model: LitClassifier, datamodule: MNISTDataModule) -> None:
    if model.num_classes != datamodule.num_classes:
        raise ValueError(
            f"model.num_classes={model.num_classes} but dataset {datamodule.dataset!r} has "
            f"{datamodule.num_classes} classes"
        )


def cli_main(args: list[str] | None = None, run: bool = True) -> ConvscopeCLI:
    torch.set_float32_matmul_precision("high")
    return ConvscopeCLI(
        LitClassifier,
        MNISTDataModule,
        seed_everything_default=42,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


if __name__ == "__main__":
    cli_main(sys.argv[1:] or None)
