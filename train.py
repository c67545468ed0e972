"""convscope's command line: the Lightning CLI over ``LitClassifier`` and ``MNISTDataModule``.

    python train.py fit --config configs/lenet5.yaml
    python train.py fit --config configs/mlp.yaml --data.dataset fashion_mnist --trainer.max_epochs 3
    python train.py validate --config configs/lenet5.yaml --ckpt_path path/to.ckpt
    python train.py fit --print_config

Logs, the saved config and checkpoints go to ``<trainer.default_root_dir>/lightning_logs/version_N/``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from callbacks import TECHNIQUES
from callbacks.checkpointing import InterruptCheckpoint
from callbacks.classes import ShownClasses, resolve_classes
from callbacks.drawing import MODES
from callbacks.scope import Convscope
from lit_modules.classifier import LitClassifier
from lit_modules.datamodule import MNISTDataModule

LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")  # --ckpt_path values the Trainer resolves itself


class ConvscopeCLI(LightningCLI):
    """LightningCLI with the project's defaults (seed 42, config saved with every run), ``classes`` (the classes
    per-class pictures show), ``drawing`` (where pictures are drawn: ``callbacks.drawing``) and the techniques,
    each under its own top-level key (``filters``, ``actmax``, ...), so one can be changed without repeating the
    others; they go to one ``Convscope`` callback."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ShownClasses, "classes")  # which classes per-class pictures show
        parser.add_argument(
            "--drawing",
            type=str,
            default="auto",
            help=f"where pictures are drawn: {', '.join(MODES)} (callbacks.drawing)",
        )
        parser.add_argument(
            "--drawing_device",
            type=str | None,
            default=None,
            help="where the background process draws: cpu, cuda:N (default: the trainer's device)",
        )
        for key, cls in TECHNIQUES.items():
            parser.add_class_arguments(cls, key)

    def _prepare_subcommand_parser(self, klass, subcommand, **kwargs):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if "weights_only" in self._subcommand_method_arguments.get(subcommand, []):
            parser.set_defaults(weights_only=True)  # PyTorch's safe loading: tensors and plain types only
        return parser

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        mode = self._get(self.config_init, "drawing", "auto")
        if mode not in MODES:
            raise ValueError(f"drawing: unknown mode {mode!r}; valid: {', '.join(MODES)}")
        device = self._get(self.config_init, "drawing_device", None)
        techniques = [self._get(self.config_init, key) for key in TECHNIQUES]
        # the one owner of every technique; before InterruptCheckpoint: an interrupted fit's epochs are drawn first
        trainer.callbacks.append(Convscope(techniques, drawing=mode, drawing_device=device))
        ckpt = trainer.checkpoint_callback
        if ckpt is not None:
            if ckpt.save_last is None and not trainer.fast_dev_run:
                ckpt.save_last = True  # last.ckpt: what `fit --ckpt_path` resumes from
            trainer.callbacks.append(InterruptCheckpoint())
        return trainer

    def _parse_ckpt_path(self) -> None:
        """Lightning replaces the model's settings with the checkpoint's hyperparameters. A checkpoint of another
        architecture than the config's is almost always a mistake (the wrong file or the wrong config), so it fails
        here, before anything is built, naming both."""
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if ckpt_path and ckpt_path not in LIGHTNING_CKPT_NAMES and not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"--ckpt_path {ckpt_path}: no such checkpoint file")
        before = _net_class(self.config[sub]) if ckpt_path else None
        super()._parse_ckpt_path()
        after = _net_class(self.config[sub]) if ckpt_path else None
        if before and after and before != after:
            raise ValueError(
                f"--ckpt_path {ckpt_path} holds a {after} but the config builds a {before}; use the config the "
                "checkpoint was trained with (its run folder has config.yaml)"
            )

    def _check_before(self, subcommand: str) -> None:
        _check_model_matches_data(self.model, self.datamodule)
        for cb in self.trainer.callbacks:  # the shown classes, against the data's class names, before any output
            if isinstance(cb, ShownClasses):
                resolve_classes(cb.names, cb.max_classes, tuple(self.datamodule.classes))
        ckpt_path = self.config_init[subcommand].get("ckpt_path")
        if ckpt_path:
            _check_checkpoint(ckpt_path, self.model)
            if subcommand == "fit":
                _resume_in_same_run(self.trainer, ckpt_path)

    def before_fit(self) -> None:
        self._check_before("fit")

    def before_validate(self) -> None:
        self._check_before("validate")

    def before_test(self) -> None:
        self._check_before("test")

    def after_fit(self) -> None:
        trainer = self.trainer
        log_dir = trainer.log_dir  # on every rank: under DDP this is a broadcast from rank zero
        if trainer.is_global_zero and log_dir:
            ckpt = getattr(trainer.checkpoint_callback, "best_model_path", "") or getattr(
                trainer.checkpoint_callback, "last_model_path", ""
            )
            print(f"\nLogs: {log_dir}")
            if ckpt:
                print(f"Checkpoint: {ckpt}")
            print(f"View: tensorboard --logdir {log_dir} --samples_per_plugin images=200 --host 127.0.0.1")


def _check_model_matches_data(model: LitClassifier, datamodule: MNISTDataModule) -> None:
    if model.num_classes != datamodule.num_classes:
        raise ValueError(
            f"model.num_classes={model.num_classes} but dataset {datamodule.dataset!r} has "
            f"{datamodule.num_classes} classes"
        )


def _net_class(config) -> str | None:
    """The class name (``LeNet5``) of the config's ``model.net``."""
    net = config.get("model", {}).get("net") if hasattr(config, "get") else None
    path = net.get("class_path") if hasattr(net, "get") else None
    return str(path).rsplit(".", 1)[-1] if path else None


def _check_checkpoint(ckpt_path: str, model: LitClassifier) -> None:
    """A checkpoint whose weights do not fit the model (one saved without hyperparameters, so Lightning could not
    rebuild its architecture) fails here with the names and shapes that differ, not deep inside state-dict loading.
    (A missing file and another architecture were refused earlier, in ``_parse_ckpt_path``.)"""
    if ckpt_path in LIGHTNING_CKPT_NAMES:
        return
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"--ckpt_path {ckpt_path}: not a readable Lightning checkpoint ({type(e).__name__}: {e})"
        ) from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ckpt.get("state_dict", {}).items()}
    if got and got != expected:
        missing, extra = sorted(set(expected) - set(got))[:5], sorted(set(got) - set(expected))[:5]
        shapes = [f"{k}: {got[k]} vs {expected[k]}" for k in expected if k in got and got[k] != expected[k]][:5]
        raise ValueError(
            f"--ckpt_path {ckpt_path} does not fit this model: missing {missing}, unexpected {extra}, "
            f"shapes (checkpoint vs config) {shapes}; use the config the checkpoint was trained with"
        )


def _resume_in_same_run(trainer, ckpt_path: str) -> None:
    """Resuming from ``<root>/lightning_logs/version_N/checkpoints/x.ckpt`` logs on into ``version_N`` (the image
    series continues at the next epoch in the same run), unless the logger's version was set explicitly."""
    m = re.fullmatch(r"version_(\d+)", Path(ckpt_path).resolve().parent.parent.name)
    logger = trainer.logger
    if m and isinstance(logger, TensorBoardLogger) and logger._version is None:
        run = Path(ckpt_path).resolve().parent.parent
        if run.parent == Path(logger.root_dir).resolve():
            logger._version = int(m.group(1))


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
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Every rank leaves together: a rank that exits while another still holds the gloo connections (rank zero
        # draws the pictures, so it finishes last) can make the other abort at exit.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
