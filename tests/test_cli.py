"""The real Lightning CLI (train.py) on small IDX files the tests write."""

import subprocess
import sys

import pytest
import torch
import yaml

from lit_modules.classifier import LitClassifier
from lit_modules.nets import MLP, DeepCNN, LeNet5, SimpleCNN
from tests.conftest import ROOT
from train import cli_main

CONFIGS = {"mlp": MLP, "simple_cnn": SimpleCNN, "lenet5": LeNet5, "deep_cnn": DeepCNN}


def data_args(idx_dir):
    return ["--data.data_dir", str(idx_dir), "--data.val_size", "100", "--data.download", "false"]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_each_config_runs_through_the_cli_with_fast_dev_run(name, idx_dir):
    cli = cli_main(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / f"{name}.yaml"),
            *data_args(idx_dir),
            "--trainer.fast_dev_run",
            "true",
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    assert isinstance(cli.model.net, CONFIGS[name])
    assert cli.trainer.global_step == 1
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss_step"])
    assert 0.0 <= float(cli.trainer.callback_metrics["val/acc"]) <= 1.0


def test_config_hyperparameters_are_the_sources(tmp_path):
    lenet = yaml.safe_load((ROOT / "configs" / "lenet5.yaml").read_text())
    assert lenet["trainer"]["max_epochs"] == 15 and lenet["data"]["batch_size"] == 128
    assert lenet["model"]["optimizer"]["init_args"]["lr"] == 0.001 and lenet["seed_everything"] == 42
    mlp = yaml.safe_load((ROOT / "configs" / "mlp.yaml").read_text())
    gamma = mlp["model"]["lr_scheduler"]["init_args"]["gamma"]
    assert mlp["data"]["batch_size"] == 50 and mlp["trainer"]["max_epochs"] == 10
    assert 0.01 * gamma**9 == pytest.approx(0.001)


def test_mlp_learning_rate_decays_exponentially_to_a_tenth(idx_dir, tmp_path):
    lrs = []
    from lightning.pytorch.callbacks import Callback

    class Record(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    cli = cli_main(
        [
            "--config",
            str(ROOT / "configs" / "mlp.yaml"),
            *data_args(idx_dir),
            "--trainer.limit_train_batches",
            "1",
            "--trainer.limit_val_batches",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger",
            "false",
            "--trainer.enable_checkpointing",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
        ],
        run=False,
    )
    cli.trainer.callbacks.append(Record())
    cli.trainer.fit(cli.model, cli.datamodule)
    assert len(lrs) == 10
    assert lrs[0] == pytest.approx(0.01) and lrs[-1] == pytest.approx(0.001)
    assert all(b / a == pytest.approx(lrs[1] / lrs[0]) for a, b in zip(lrs, lrs[1:]))


def test_fit_writes_logs_config_and_checkpoint_under_default_root_dir_then_validate(idx_dir, tmp_path):
    root = tmp_path / "runs"
    cli = cli_main(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "lenet5.yaml"),
            *data_args(idx_dir),
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.limit_val_batches",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(root),
        ]
    )
    run = root / "lightning_logs" / "version_0"
    assert (run / "config.yaml").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["seed_everything"] == 42
    ckpts = [p for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    assert len(ckpts) == 1 and (run / "checkpoints" / "last.ckpt").is_file()
    assert list(run.glob("events.out.tfevents.*"))
    # The checkpoint rebuilds the same architecture without the config (hyperparameters hold the class path).
    model = LitClassifier.load_from_checkpoint(ckpts[0], weights_only=False)
    assert isinstance(model.net, LeNet5)
    assert torch.equal(model.net.conv_1.weight, cli.model.net.conv_1.weight)
    # Post-hoc: validate on that checkpoint reproduces the accuracy fit reported for the same weights.
    fit_acc = float(cli.trainer.callback_metrics["val/acc"])
    val = cli_main(
        [
            "validate",
            "--config",
            str(ROOT / "configs" / "lenet5.yaml"),
            *data_args(idx_dir),
            "--trainer.limit_val_batches",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(root),
            "--ckpt_path",
            str(ckpts[0]),
        ]
    )
    assert float(val.trainer.callback_metrics["val/acc"]) == pytest.approx(fit_acc)


def test_predict_step_returns_probabilities():
    model = LitClassifier(LeNet5())
    p = model.predict_step((torch.randn(4, 1, 28, 28), torch.zeros(4)), 0)
    assert p.shape == (4, 10) and torch.allclose(p.sum(1), torch.ones(4)) and (p >= 0).all()


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_print_config_through_the_real_entry_point():
    r = run_cli("fit", "--config", "configs/lenet5.yaml", "--print_config")
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(r.stdout)
    assert cfg["model"]["net"]["class_path"] == "lit_modules.nets.LeNet5"
    assert cfg["data"]["dataset"] == "mnist" and cfg["seed_everything"] == 42


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--data.batch_size", "0"], "batch_size must be an integer >= 1, got 0"),
        (["--data.dataset", "cifar"], "cifar"),
        (["--model.net.class_path", "lit_modules.nets.ResNet"], "ResNet"),
        (["--classes.names", "[Dog]"], "ShownClasses: unknown class 'Dog'; valid: class names (0, 1, 2, 3"),
        (["--classes.names", "[3, 3]"], "ShownClasses: a class is named twice"),
    ],
    ids=["batch_size", "dataset", "architecture", "class_name", "class_twice"],
)
def test_bad_config_values_fail_before_training(args, expected, idx_dir, tmp_path):
    r = run_cli(
        "fit",
        "--config",
        "configs/lenet5.yaml",
        *data_args(idx_dir),
        *args,
        "--trainer.default_root_dir",
        str(tmp_path),
    )
    assert r.returncode != 0
    assert expected in r.stderr
    assert "Epoch 0" not in r.stderr + r.stdout
    assert not (tmp_path / "lightning_logs").exists()


def test_missing_data_fails_before_training_with_remedies(tmp_path):
    r = run_cli(
        "fit",
        "--config",
        "configs/lenet5.yaml",
        "--data.data_dir",
        str(tmp_path / "empty"),
        "--data.download",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path),
    )
    assert r.returncode != 0
    assert "mnist data not found" in r.stderr and "Remedies" in r.stderr
