"""Reliability through the real CLI: exact resume, interrupts, DDP on 2 CPU processes, determinism, bad input."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import ROOT, _images, techniques_of
from train import cli_main

# Cheap settings: every callback on, small optimisation budgets.
FAST = ["--trainer.enable_progress_bar", "false", "--actmax.steps", "8", "--actmax.warm_steps", "4"]


def data(idx_dir):
    return ["--data.data_dir", str(idx_dir), "--data.val_size", "200", "--data.download", "false"]


def fit(idx_dir, root, *extra, config="lenet5"):
    return cli_main(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / f"{config}.yaml"),
            *data(idx_dir),
            *FAST,
            "--trainer.limit_train_batches",
            "3",
            "--trainer.default_root_dir",
            str(root),
            *extra,
        ]
    )


def events(run):
    ea = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    return ea


def steps(ea, tag):
    return [e.step for e in ea.Images(tag)]


def test_resume_continues_the_series_in_the_same_run(idx_dir, tmp_path):
    first = fit(idx_dir, tmp_path, "--trainer.max_epochs", "2")
    run = tmp_path / "lightning_logs" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file()
    probes = {
        cb.technique: cb.probe_idx for cb in techniques_of(first.trainer) if getattr(cb, "probe_idx", None) is not None
    }
    second = fit(idx_dir, tmp_path, "--trainer.max_epochs", "4", "--ckpt_path", str(last))
    assert second.trainer.log_dir == str(run)  # the same run folder, not version_1
    assert not (tmp_path / "lightning_logs" / "version_1").exists()
    ea = events(run)
    for tag in ("filters/conv_1", "feature_maps/conv_1", "selectivity", "confusion_matrix"):
        assert steps(ea, tag) == [0, 1, 2, 3], tag  # no duplicate, no missing step
    assert steps(ea, "decision") == [1, 3]  # every 2 epochs (the last epoch of each fit is one of them here)
    assert steps(ea, "samples/train") == [0]  # drawn once, not again on resume
    projector = (run / "projector_config.pbtxt").read_text()  # the projector still lists the first fit's snapshots
    assert all(f'"{step:05d}/' in projector for step in (1, 3)), projector  # every 5 epochs: each fit's last
    assert [e.step for e in ea.Scalars("val/acc")] == sorted({e.step for e in ea.Scalars("val/acc")})
    for cb in techniques_of(second.trainer):  # the same probe images after resuming
        if cb.technique in probes:
            assert torch.equal(cb.probe_idx, probes[cb.technique]), cb.technique
    evo = next(cb for cb in techniques_of(second.trainer) if type(cb).__name__ == "Evolution")
    assert sorted(evo.snapshots["filters/conv_1"]) == [1, 2, 4]  # epochs 1, 2 kept in the checkpoint, 4 the last


def test_an_exception_mid_epoch_leaves_a_checkpoint_and_readable_logs_then_resumes(idx_dir, tmp_path):
    from lightning.pytorch.callbacks import Callback

    class Crash(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 1:
                raise RuntimeError("simulated crash")

    cli = cli_main(
        [
            "--config",
            str(ROOT / "configs" / "lenet5.yaml"),
            *data(idx_dir),
            *FAST,
            "--trainer.max_epochs",
            "3",
            "--trainer.limit_train_batches",
            "3",
            "--trainer.default_root_dir",
            str(tmp_path),
        ],
        run=False,
    )
    cli.trainer.callbacks.append(Crash())
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli.trainer.fit(cli.model, cli.datamodule)
    run = tmp_path / "lightning_logs" / "version_0"
    ckpt = run / "checkpoints" / "interrupted.ckpt"
    state = torch.load(ckpt, weights_only=True)  # safe loading works on it
    assert state["epoch"] == 1 and state["global_step"] == 4  # 3 steps of epoch 0, 1 of epoch 1
    assert steps(events(run), "filters/conv_1") == [0]  # the event file is readable and holds epoch 0
    resumed = fit(idx_dir, tmp_path, "--trainer.max_epochs", "3", "--ckpt_path", str(ckpt))
    ea = events(run)
    assert steps(ea, "filters/conv_1") == [0, 1, 2] and steps(ea, "deconv") == [0, 1, 2]
    # Exact: the resumed run trained exactly the batches the crash skipped, so it ends where an uninterrupted run does.
    whole = fit(idx_dir, tmp_path / "whole", "--trainer.max_epochs", "3")
    assert resumed.trainer.global_step == whole.trainer.global_step == 9
    for (name, a), b in zip(resumed.model.state_dict().items(), whole.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_sigint_mid_epoch_saves_a_checkpoint(idx_dir, tmp_path):
    marker = tmp_path / "second-epoch-started"
    p = subprocess.Popen(
        [
            sys.executable,
            "train.py",
            "fit",
            "--config",
            "configs/lenet5.yaml",
            *data(idx_dir),
            *FAST,
            "--trainer.max_epochs",
            "5",
            "--trainer.limit_train_batches",
            "4",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.callbacks+=tests.slow_callback.SlowDown",
            f"--trainer.callbacks.marker={marker}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    t0 = time.time()
    while not marker.exists() and p.poll() is None and time.time() - t0 < 240:
        time.sleep(0.05)
    assert marker.exists(), "training did not reach its second epoch"
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=240)
    run = tmp_path / "lightning_logs" / "version_0"
    ckpt = run / "checkpoints" / "interrupted.ckpt"
    assert ckpt.is_file(), out[-2000:]
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    assert f"--ckpt_path {ckpt}" in out and f"--config {run / 'config.yaml'}" in out  # how to resume is printed
    assert steps(events(run), "filters/conv_1") == [0]


def test_same_seed_and_config_give_the_same_metrics_and_images(idx_dir, tmp_path):
    runs = []
    for name in ("a", "b"):
        fit(idx_dir, tmp_path / name, "--trainer.max_epochs", "2", "--importance.every_n_epochs", "1")
        runs.append(events(tmp_path / name / "lightning_logs" / "version_0"))
    a, b = runs
    assert set(a.Tags()["images"]) == set(b.Tags()["images"])
    for tag in a.Tags()["images"]:
        ia, ib = _images(a, tag), _images(b, tag)
        assert ia.keys() == ib.keys() and all(np.array_equal(ia[s], ib[s]) for s in ia), tag
    for tag in (
        "val/acc",
        "val/loss",
        "train/loss_epoch",
        "selectivity/relu_3/mean_index",
        "importance/relu_3/max_acc_drop",
    ):
        assert [e.value for e in a.Scalars(tag)] == [e.value for e in b.Scalars(tag)], tag


def test_ddp_on_two_cpu_processes_draws_once_and_matches_one_process(idx_dir, tmp_path):
    """Fit with DDP (gloo, 2 processes): every picture written once per epoch by rank zero. Then validate one
    checkpoint with 1 and with 2 processes: the statistics over validation data are identical."""
    common = [
        "--config",
        "configs/lenet5.yaml",
        *data(idx_dir),
        *FAST,
        "--trainer.accelerator",
        "cpu",
        "--trainer.limit_train_batches",
        "2",
    ]
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run(
        [
            sys.executable,
            "train.py",
            "fit",
            *common,
            *ddp,
            "--trainer.max_epochs",
            "2",
            "--trainer.default_root_dir",
            str(tmp_path / "fit"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "fit" / "lightning_logs" / "version_0"
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # only rank zero writes
    ea = events(run)
    for tag in ("filters/conv_1", "selectivity", "confusion_matrix"):
        assert steps(ea, tag) == [0, 1], tag
    for tag in ("decision", "importance/relu_3"):  # every 2 and 5 epochs: the last epoch only
        assert steps(ea, tag) == [1], tag
    ckpt = run / "checkpoints" / "last.ckpt"
    results = {}
    for name, extra in (("one", ["--trainer.devices", "1"]), ("two", ddp)):
        r = subprocess.run(
            [
                sys.executable,
                "train.py",
                "validate",
                *common,
                *extra,
                "--ckpt_path",
                str(ckpt),
                "--trainer.default_root_dir",
                str(tmp_path / name),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        results[name] = events(tmp_path / name / "lightning_logs" / "version_0")
    one, two = results["one"], results["two"]
    assert [e.value for e in one.Scalars("val/acc")] == pytest.approx([e.value for e in two.Scalars("val/acc")])
    for tag in ("selectivity", "fc_activations/fc_1", "confusion_matrix", "layer_responses", "importance/relu_3"):
        assert np.array_equal(_images(one, tag)[1], _images(two, tag)[1]), tag
    for tag in ("selectivity/relu_3/mean_index", "confusion_matrix/worst_class_recall"):
        assert one.Scalars(tag)[-1].value == two.Scalars(tag)[-1].value, tag


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--feature_maps.layers", "[]"], "FeatureMaps: empty layer list"),
        (["--selectivity.layers", "[]"], "Selectivity: empty layer list"),
        (["--evolution.epochs", "[0]"], "epochs must be a non-empty list of 1-based epochs"),
    ],
    ids=["empty-layers", "empty-layers-fixed-set", "evolution-epochs"],
)
def test_more_bad_settings_fail_before_training(args, expected, idx_dir, tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "train.py",
            "fit",
            "--config",
            "configs/lenet5.yaml",
            *data(idx_dir),
            "--trainer.default_root_dir",
            str(tmp_path),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0 and expected in r.stderr, r.stderr[-2000:]
    assert not list(tmp_path.rglob("*.ckpt")) and "Epoch 0" not in r.stdout + r.stderr


def test_a_checkpoint_of_another_architecture_is_refused_clearly(lenet_run, idx_dir, tmp_path):
    _, _, run = lenet_run
    ckpt = run / "checkpoints" / "last.ckpt"
    for sub in ("validate", "fit"):
        r = subprocess.run(
            [
                sys.executable,
                "train.py",
                sub,
                "--config",
                "configs/mlp.yaml",
                *data(idx_dir),
                "--trainer.default_root_dir",
                str(tmp_path),
                "--ckpt_path",
                str(ckpt),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode != 0
        assert "holds a LeNet5 but the config builds a MLP" in r.stderr, r.stderr[-2000:]
    r = subprocess.run(
        [
            sys.executable,
            "train.py",
            "validate",
            "--config",
            "configs/lenet5.yaml",
            *data(idx_dir),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--ckpt_path",
            str(tmp_path / "nope.ckpt"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0 and "no such checkpoint file" in r.stderr


def test_ddp_background_drawing_starts_one_drawer_on_rank_zero_and_draws_each_picture_once(idx_dir, tmp_path):
    """DDP with 2 CPU processes and the background drawer: one drawing process (rank zero's), one event file of its
    own, every picture once per drawn epoch."""
    r = subprocess.run(
        [
            sys.executable,
            "train.py",
            "fit",
            "--config",
            "configs/lenet5.yaml",
            *data(idx_dir),
            *FAST,
            "--trainer.accelerator",
            "cpu",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.strategy",
            "ddp",
            "--trainer.devices",
            "2",
            "--trainer.max_epochs",
            "2",
            "--drawing",
            "background",
            "--trainer.default_root_dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert out.count("drawing: background on cpu (asked for)") == 1  # said by rank zero, which alone starts it
    run = tmp_path / "lightning_logs" / "version_0"
    assert len(list(run.glob("events.out.tfevents.*.convscope-drawer"))) == 1  # one drawing process wrote
    assert len([p for p in run.glob("events.out.tfevents.*") if not p.name.endswith(".convscope-drawer")]) == 1
    ea = events(run)
    images = ea.Tags()["images"]
    assert len(images) > 20
    for tag in images:
        found = [e.step for e in ea.Images(tag)]
        assert found == sorted(set(found)), tag  # no picture twice
    for tag in ("filters/conv_1", "selectivity", "confusion_matrix"):
        assert steps(ea, tag) == [0, 1], tag
