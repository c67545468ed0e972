"""Pictures off the training path (``callbacks.drawing``, ``callbacks.watch``): the same LeNet-5 fit drawn inline, by
a background process and by the sidecar watcher gives byte-identical pictures; Ctrl-C loses no finished epoch's
pictures; a watcher killed mid-epoch and restarted draws each epoch exactly once. Real fits through ``train.py``'s
Lightning CLI on small IDX files, real event files read back."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import callbacks.drawing as drawing_module
from callbacks.drawing import SNAPSHOT_DIR, Drawing, auto_mode, fit_start_line, resolve_mode
from callbacks.watch import STATE, watch

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def lightning_lines():
    """The lines Lightning's logger (``rank_zero_info``) prints meanwhile."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("lightning.pytorch")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def fit_args(idx_dir, root, mode, epochs=2, batches=4):
    return [
        "fit",
        "--config",
        str(ROOT / "configs" / "lenet5.yaml"),
        "--data.data_dir",
        str(idx_dir),
        "--data.val_size",
        "200",
        "--data.download",
        "false",
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.limit_train_batches",
        str(batches),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(root),
        "--actmax.steps",
        "16",
        "--drawing",
        mode,
    ]


def fit(idx_dir, root, mode, extra=()):
    from train import cli_main

    cli_main([*fit_args(idx_dir, root, mode), *extra])
    return root / "lightning_logs" / "version_0"


def images(run: Path) -> dict[tuple[str, int], list[bytes]]:
    """Every PNG logged in the run folder (all its event files), by (tag, step); a list, to see duplicates."""
    ea = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    out: dict[tuple[str, int], list[bytes]] = {}
    for tag in ea.Tags()["images"]:
        for e in ea.Images(tag):
            out.setdefault((tag, e.step), []).append(e.encoded_image_string)
    return out


def file_tags(path: Path) -> tuple[set[str], set[str]]:
    """(image tags, scalar tags) of one event file."""
    ea = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    return set(ea.Tags()["images"]), set(ea.Tags()["scalars"])


@pytest.fixture(scope="module")
def three_runs(idx_dir, tmp_path_factory):
    """The same 2-epoch fit, drawn inline, in the background, and by the watcher after training."""
    root = tmp_path_factory.mktemp("drawing")
    inline = fit(idx_dir, root / "inline", "inline")
    with lightning_lines() as said:
        background = fit(idx_dir, root / "background", "background", ["--drawing_device", "cpu"])
    watched = fit(idx_dir, root / "watch", "watch")
    before = images(watched)
    drawn = watch(watched, poll=0.2, timeout=120, log=lambda *a: None)
    return inline, background, watched, before, drawn, said


def test_background_and_watch_pictures_equal_inline_byte_for_byte(three_runs):
    """A drawer on ``cpu`` (asked for by name) and the watcher draw the inline pictures, byte for byte."""
    inline, background, watched, before, drawn, said = three_runs
    assert [line for line in said if line.startswith("drawing:")] == ["drawing: background on cpu (asked for)"]
    expected = images(inline)
    assert ("actmax/fc_3", 1) in expected and ("evolution/actmax/fc_3", 1) in expected
    for run in (background, watched):
        got = images(run)
        assert set(got) == set(expected)
        assert all(len(v) == 1 for v in got.values())  # each picture once
        assert [k for k in expected if got[k] != expected[k]] == []
    # the watch-mode training drew only what is drawn at fit start; the watcher drew every epoch, in order
    assert {tag for tag, _ in before} == {"samples/train"}
    assert drawn == [0, 1]


def test_background_pictures_come_from_another_process(three_runs):
    """The training process's event file holds its metrics and the fit-start samples only; every other picture is
    in the drawing process's event file, beside it in the run folder."""
    _, background, _, _, _, _ = three_runs
    files = sorted(background.glob("events.out.tfevents.*"))
    assert len(files) == 2
    tags = {f: file_tags(f) for f in files}
    training = next(f for f in files if "val/loss" in tags[f][1])
    drawer = next(f for f in files if f != training)
    assert tags[training][0] == {"samples/train"}
    assert "actmax/fc_3" in tags[drawer][0] and "importance/relu_4/max_loss_rise" in tags[drawer][1]
    assert not {"val/loss", "val/acc", "epoch"} & tags[drawer][1]  # the metrics are the training process's only


def test_background_checkpoint_holds_the_drawing_state_of_inline(three_runs):
    """The callbacks' states (fixed sets, colour scales, evolution snapshots) in the last checkpoint are those of
    inline drawing: a fit resumed from it goes on with the same pictures."""
    inline, background, _, _, _, _ = three_runs

    def states(run):
        ckpt = torch.load(next((run / "checkpoints").glob("epoch=*.ckpt")), map_location="cpu", weights_only=False)
        owner = next(v for k, v in ckpt["callbacks"].items() if k.startswith("Convscope"))
        return {**owner["techniques"], "sets": owner["sets"]}  # the techniques' states, the fixed sets

    a, b = states(inline), states(background)
    assert set(a) == set(b) and len(a) >= 15
    assert [key for key in a if not same(a[key], b[key])] == []
    assert any(state.get("scales") for state in a.values()) and any(state.get("snapshots") for state in a.values())


def same(a, b) -> bool:
    """Equal, with tensors compared exactly, inside dicts and lists."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_watcher_state_records_each_epoch(three_runs):
    _, _, watched, _, _, _ = three_runs
    state = torch.load(watched / SNAPSHOT_DIR / STATE, weights_only=False)
    assert state["drawn"] == [0, 1] and state["finished"]
    assert watch(watched, poll=0.2, timeout=5, log=lambda *a: None) == []  # a finished run: nothing more to draw


def test_drawing_modes_and_bad_mode():
    with pytest.raises(ValueError, match="unknown mode 'sideways'; valid: auto, inline, background, watch"):
        Drawing("sideways")
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        Drawing("background", threads=0)
    with pytest.raises(ValueError, match="device 'gpu0' is not a device"):
        Drawing("background", device="gpu0")
    with pytest.raises(ValueError, match="memory_fraction must be in"):
        Drawing("background", memory_fraction=0)
    cores = len(os.sched_getaffinity(0))
    assert resolve_mode("auto") == ("background" if cores >= 8 else "inline")  # no trainer: a CPU one
    assert resolve_mode("watch") == "watch"


def test_auto_rule_background_only_where_the_drawer_has_resources_of_its_own():
    """A GPU trainer: background from 4 CPU cores (a core for the drawer beside the trainer and its loader); a CPU
    trainer: from 8 (the drawer's thread takes at most an eighth); a run a drawing process cannot load: inline."""
    assert [auto_mode("cuda", n)[0] for n in (1, 2, 3, 4, 16)] == ["inline"] * 3 + ["background"] * 2
    assert [auto_mode("cpu", n)[0] for n in (2, 4, 7, 8, 64)] == ["inline"] * 3 + ["background"] * 2
    assert auto_mode("mps", 8)[0] == "background"
    mode, why = auto_mode("cuda", 16, "PicklingError: Can't pickle <function <lambda>>")
    assert (
        mode == "inline"
        and why == "a drawing process cannot load this run: PicklingError: Can't pickle <function <lambda>>"
    )
    assert auto_mode("cuda", 16)[1] == (
        "a cuda trainer with 16 CPU cores, 4 or more: the drawer has cores of its own and draws on the trainer's device"
    )
    assert "2 cores, fewer than 8" in auto_mode("cpu", 2)[1]
    line = fit_start_line("background", "cuda:0", "auto: " + auto_mode("cuda", 16)[1])
    assert line.startswith("drawing: background on cuda:0 (auto: a cuda trainer with 16 CPU cores")
    assert fit_start_line("inline", "cpu", "auto: x") == "drawing: inline (auto: x)"


def test_auto_on_this_machine_says_what_it_chose(idx_dir, tmp_path):
    from train import cli_main

    with lightning_lines() as said:
        cli_main(fit_args(idx_dir, tmp_path, "auto", epochs=1, batches=2))
    cores = len(os.sched_getaffinity(0))
    mode = auto_mode("cpu", cores)[0]
    where = " on cpu" if mode == "background" else ""
    assert [line for line in said if line.startswith("drawing:")] == [
        f"drawing: {mode}{where} (auto: {auto_mode('cpu', cores)[1]})"
    ]


def _unpicklable_fit(idx_dir, root, mode):
    """A fit whose module holds a lambda (as a script's quick hack would): it cannot be pickled for a drawer."""
    from train import cli_main

    cli = cli_main(fit_args(idx_dir, root, mode, epochs=1, batches=2)[1:], run=False)  # (no subcommand)
    cli.model.transform = lambda x: x
    cli.trainer.fit(cli.model, cli.datamodule)
    return root / "lightning_logs" / "version_0"


def test_auto_draws_inline_a_run_a_drawer_cannot_load_and_only_background_fails(idx_dir, tmp_path, monkeypatch):
    """Where ``auto`` would choose background (16 cores here, as on a GPU machine), a run that cannot be pickled
    draws inline, saying why, every picture in the training process's own event file; an explicit ``background``
    stops at fit start, before any training."""
    monkeypatch.setattr(drawing_module, "cpu_cores", lambda: 16)
    with lightning_lines() as said:
        run = _unpicklable_fit(idx_dir, tmp_path / "auto", "auto")
    line = next(line for line in said if line.startswith("drawing:"))
    assert line.startswith("drawing: inline (auto: a drawing process cannot load this run: ") and "lambda" in line
    files = list(run.glob("events.out.tfevents.*"))
    assert len(files) == 1 and {"actmax/fc_3", "filters/conv_1"} <= file_tags(files[0])[0]
    with pytest.raises(RuntimeError, match="cannot be pickled.*use drawing mode 'inline'"):
        _unpicklable_fit(idx_dir, tmp_path / "background", "background")
    assert not list((tmp_path / "background").glob("**/*.ckpt"))


def test_cli_bad_drawing_mode_fails_before_training(idx_dir, tmp_path):
    from train import cli_main

    with pytest.raises(ValueError, match="drawing: unknown mode 'later'; valid: auto, inline, background, watch"):
        cli_main(fit_args(idx_dir, tmp_path, "later"))
    assert not (tmp_path / "lightning_logs").exists()


def _train_process(idx_dir, root, mode, epochs, batches):
    """``train.py fit`` in a process group of its own (a terminal's Ctrl-C reaches the whole group), every callback
    drawing at every epoch."""
    from callbacks import VISUALIZATIONS

    every = [a for key in VISUALIZATIONS if key != "evolution" for a in (f"--{key}.every_n_epochs", "1")]
    args = [*fit_args(idx_dir, root, mode, epochs, batches), *every]
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _wait_for(condition, seconds: float, proc=None) -> None:
    end = time.monotonic() + seconds
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended early:\n{proc.stdout.read().decode()[-3000:]}")
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_mid_fit_keeps_every_finished_epochs_pictures(sig, idx_dir, tmp_path):
    """Ctrl-C (SIGINT to the process group, drawing process included), or SIGTERM to the group as a job scheduler
    sends it, during the third epoch: the fit stops with interrupted.ckpt (Lightning turns SIGTERM into an exception
    at the next step), and every epoch submitted for drawing has all its pictures."""
    proc = _train_process(idx_dir, tmp_path, "background", epochs=50, batches=4)
    run = tmp_path / "lightning_logs" / "version_0"
    try:
        _wait_for(lambda: len(list((run / "checkpoints").glob("epoch=1-*.ckpt"))) == 1, 300, proc)
        os.killpg(proc.pid, sig)
        out = proc.communicate(timeout=300)[0].decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert (run / "checkpoints" / "interrupted.ckpt").is_file(), out[-3000:]
    got = images(run)
    steps = {tag: sorted(s for t, s in got if t == tag) for tag, _ in got}
    assert all(len(v) == 1 for v in got.values())
    assert len(steps["actmax/fc_3"]) >= 2  # epochs 0 and 1 at least
    # (samples: at fit start; evolution: at fit end; changes: from the second epoch on, against the one before)
    per_epoch = {tag: s for tag, s in steps.items() if not tag.startswith(("samples", "evolution", "changes"))}
    assert len({tuple(s) for s in per_epoch.values()}) == 1  # every tag at every drawn epoch: none half drawn
    assert steps["actmax/fc_3"] == list(range(len(steps["actmax/fc_3"])))


def test_watcher_killed_mid_epoch_and_restarted_draws_each_epoch_once(idx_dir, tmp_path):
    from train import cli_main

    cli_main(fit_args(idx_dir, tmp_path, "watch", epochs=3))
    run = tmp_path / "lightning_logs" / "version_0"
    state_path = run / SNAPSHOT_DIR / STATE

    def mid_epoch() -> bool:  # epoch 0 recorded, and the watcher has written part of epoch 1 after it
        if not state_path.is_file():
            return False
        state = torch.load(state_path, weights_only=False)
        return state["drawn"] == [0] and Path(state["event"][0]).stat().st_size > state["event"][1]

    proc = subprocess.Popen(
        [sys.executable, "-m", "callbacks.watch", str(run), "--poll", "0.2", "--timeout", "60"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for(mid_epoch, 300, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert watch(run, poll=0.2, timeout=60, log=lambda *a: None) == [1, 2]
    got = images(run)
    assert all(len(v) == 1 for v in got.values()), [k for k, v in got.items() if len(v) > 1]
    assert sorted(s for t, s in got if t == "actmax/fc_3") == [0, 1, 2]
    assert ("evolution/actmax/fc_3", 2) in got


def _epoch_of(ckpt: Path) -> int | None:
    try:
        return torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"]
    except Exception:  # not written yet, or being written
        return None


def test_background_fit_killed_and_resumed_draws_each_epoch_once(idx_dir, tmp_path):
    """SIGKILL to training and its drawing process right after epoch 1's checkpoint (epoch 1 submitted, maybe half
    drawn), then ``fit --ckpt_path last.ckpt``: the resumed fit cuts the killed drawer's unfinished epoch off its
    event file, draws epoch 1 from the checkpoint's weights, and goes on; every picture of epochs 0-3 is there once."""
    proc = _train_process(idx_dir, tmp_path, "background", epochs=4, batches=4)
    run = tmp_path / "lightning_logs" / "version_0"
    try:
        _wait_for(lambda: _epoch_of(run / "checkpoints" / "last.ckpt") == 1, 300, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    last = run / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    drawing = next(v for k, v in state["callbacks"].items() if k.startswith("Convscope"))["drawing"]
    # epoch 0 drawn, or pending with its weights (checkpoints do not wait); epoch 1 drawn or pending
    assert state["epoch"] == 1 and (drawing["event"] is not None or 0 in drawing["weights"])
    from callbacks import VISUALIZATIONS
    from train import cli_main

    every = [a for key in VISUALIZATIONS if key != "evolution" for a in (f"--{key}.every_n_epochs", "1")]
    cli_main([*fit_args(idx_dir, tmp_path, "background", epochs=4), *every, "--ckpt_path", str(last)])
    got = images(run)
    assert [k for k, v in got.items() if len(v) > 1] == []
    steps = {tag: sorted(s for t, s in got if t == tag) for tag, _ in got}
    assert steps["actmax/fc_3"] == [0, 1, 2, 3] and steps["filters/conv_1"] == [0, 1, 2, 3]
    assert ("evolution/actmax/fc_3", 3) in got


def test_watcher_on_a_run_without_snapshots_says_what_is_missing(tmp_path):
    said = []
    with pytest.raises(TimeoutError, match="nothing new"):
        watch(tmp_path, poll=0.05, timeout=0.2, log=said.append)
    assert said and "--drawing watch" in said[0] and str(tmp_path / SNAPSHOT_DIR / "spec.pt") in said[0]


def test_checkpoints_do_not_wait_for_a_lagging_drawer_and_a_resumed_fit_draws_what_it_lagged(idx_dir, tmp_path):
    """A drawer that lags (4 s a drawing) behind a fast fit: epoch 1's checkpoint is written without waiting, with
    epoch 0 still pending and its weights kept (epoch 1's are the checkpoint's). A fit resumed from it draws
    epochs 0 and 1 first, from their weights: their pictures are the uninterrupted fit's, byte for byte; every
    picture of every epoch is there once."""
    from tests.conftest import owner_of
    from tests.slow_callback import SlowDrawing
    from train import cli_main

    def run(root, ckpt_path=None):
        cli = cli_main(fit_args(idx_dir, root, "background", epochs=3, batches=2)[1:], run=False)
        owner_of(cli.trainer).techniques.insert(0, SlowDrawing(seconds=4.0))
        cli.trainer.checkpoint_callback.save_top_k = -1  # every epoch's checkpoint
        cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=ckpt_path)
        return root / "lightning_logs" / "version_0"

    whole = run(tmp_path / "whole")
    ckpts = {int(p.name[6]): p for p in (whole / "checkpoints").glob("epoch=*.ckpt")}
    assert sorted(ckpts) == [0, 1, 2]
    first, second = (torch.load(ckpts[e], map_location="cpu", weights_only=False) for e in (0, 1))
    state = next(v for k, v in second["callbacks"].items() if k.startswith("Convscope"))["drawing"]
    assert [e for e, _ in state["pending"]][:1] == [0] and 1 in [e for e, _ in state["pending"]]
    assert set(state["weights"]) == {e for e, _ in state["pending"]} - {1}
    assert same(state["weights"][0], first["state_dict"])  # epoch 0's weights, kept for the resumed fit
    resumed = run(tmp_path / "resumed", ckpts[1])
    expected = {k: v for k, v in images(whole).items() if not k[0].startswith("samples")}
    got = {k: v for k, v in images(resumed).items() if not k[0].startswith("samples")}
    assert set(got) == set(expected) and all(len(v) == 1 for v in got.values())
    # (epoch 2 trains on from the checkpoint, which Lightning does not make bit-identical to training straight on)
    lagged = [k for k in expected if k[1] <= 1]
    assert len(lagged) > 30 and [k for k in lagged if got[k] != expected[k]] == []
