"""What changed since the last epoch: known answers of the per-unit changes, default layers, and the callback in
real fits (and across a resume) read back from the event file."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import torchvision
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks import VISUALIZATIONS
from callbacks.changes import ChangesCallback, default_change_layers
from callbacks.hooks import LayerError, collect_activations, layer_shapes
from callbacks.methods.changes import (
    compare_snapshots,
    incoming_weights,
    profile_change,
    unit_snapshot,
    weight_change,
    weight_layer,
)
from lit_modules.nets import MLP, DeepCNN, LeNet5, SimpleCNN
from tests.conftest import _fit, _images, render_once, synthetic_digits, techniques_of


def digits(n: int = 200, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = synthetic_digits(n, seed)
    return (torch.from_numpy(x).float()[:, None] / 255 - 0.1307) / 0.3081, torch.from_numpy(y).long()


def snapshots(net, x, y, layers):
    acts = collect_activations(net, x, layers)
    return {layer: unit_snapshot(net, layer, acts[layer], y, 10) for layer in layers}


# --------------------------------------------------------------------------------------------- known answers
def test_weight_and_profile_change_by_hand():
    then = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    now = torch.tensor([[3.3, 4.4], [1.0, 1.0], [5.0, 0.0]])
    wc = weight_change(then, now)
    assert torch.allclose(wc[:2], torch.tensor([0.1, 1.0])) and math.isnan(wc[2])  # a zero row has no relative size
    means_then = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0], [2.0, 2.0, 2.0, 1.0, 0.0], [3.0, 3.0, 3.0, 1.0, 0.0]])
    means_now = torch.tensor([[2.0, 3.0, 1.0, 5.0, 1.0], [4.0, 2.0, 3.0, 6.0, 2.0], [6.0, 1.0, 2.0, 7.0, 3.0]])
    pc = profile_change(means_then, means_now)  # columns: scaled, reversed, r = 0.5, flat then, silent then
    assert torch.allclose(pc[:3], torch.tensor([0.0, 2.0, 0.5]), atol=1e-6)
    assert math.isnan(pc[3]) and math.isnan(pc[4])


def test_unchanged_weights_give_no_change(lenet):
    x, y = digits()
    layers = ["relu_1", "max_pool_1", "relu_2", "relu_4", "fc_3"]
    then, now = snapshots(lenet, x, y, layers), snapshots(lenet, x, y, layers)
    for layer in layers:
        ch = compare_snapshots(then[layer], now[layer])
        assert torch.equal(ch.weight_change, torch.zeros_like(ch.weight_change)), layer
        alive = ~ch.dead
        assert torch.allclose(ch.profile_change[alive], torch.zeros(int(alive.sum())), atol=1e-9), layer
        assert not (ch.switched.any() or ch.came_alive.any() or ch.died.any()), layer
        assert torch.equal(ch.preferred_then, ch.preferred_now), layer


@pytest.mark.parametrize("layer, weights", [("relu_4", "fc_2"), ("relu_1", "conv_1"), ("max_pool_1", "conv_1")])
def test_a_unit_zeroed_between_two_epochs_is_reported_dead(lenet, layer, weights):
    x, y = digits()
    then = snapshots(lenet, x, y, [layer])[layer]
    unit = int(torch.nonzero(then["alive"])[-1])  # some relu_4 units of an untrained net are silent already
    with torch.no_grad():  # the unit's incoming weights and bias set to zero: it is silent on every input
        getattr(lenet, weights).weight[unit] = 0
        getattr(lenet, weights).bias[unit] = 0
    now = snapshots(lenet, x, y, [layer])[layer]
    ch = compare_snapshots(then, now)
    assert torch.nonzero(ch.died).flatten().tolist() == [unit]
    assert torch.equal(ch.dead, ~then["alive"] | (torch.arange(len(ch.dead)) == unit))
    assert ch.weight_change[unit] == pytest.approx(1.0)  # ||0 - W|| / ||W||
    assert torch.equal(ch.weight_change[torch.arange(len(ch.dead)) != unit], torch.zeros(len(ch.dead) - 1))
    assert math.isnan(ch.profile_change[unit]) and not ch.switched[unit]
    back = compare_snapshots(now, then)  # and the other way round: it came alive
    assert torch.nonzero(back.came_alive).flatten().tolist() == [unit] and not back.died.any()
    assert math.isnan(back.weight_change[unit])  # a zero row has no relative size


def test_preferred_class_switches_counted_for_units_alive_both_times():
    then = {"means": torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), "alive": torch.tensor([True, True, False])}
    now = {"means": torch.tensor([[0.0, 0.0, 1.0], [1.0, 1.0, 2.0]]), "alive": torch.tensor([True, True, True])}
    ch = compare_snapshots(then, now)
    assert ch.preferred_then.tolist() == [0, 1, 0] and ch.preferred_now.tolist() == [1, 1, 1]
    assert ch.switched.tolist() == [True, False, False]  # unit 2 was dead then: it came alive, it did not switch
    assert ch.came_alive.tolist() == [False, False, True]
    assert all(math.isnan(v) for v in ch.weight_change.tolist())  # no weights in these snapshots


def test_incoming_weights_are_the_feeding_layer_rows(lenet):
    assert [
        weight_layer(lenet, layer, n)
        for layer, n in (
            ("relu_1", 6),
            ("max_pool_1", 6),
            ("conv_2", 16),
            ("relu_4", 84),
            ("fc_3", 10),
            ("flatten", 400),
        )
    ] == ["conv_1", "conv_1", "conv_2", "fc_2", "fc_3", None]
    assert torch.equal(incoming_weights(lenet, "relu_2", 16), lenet.conv_2.weight.detach().flatten(1))
    with pytest.raises(LayerError, match="relu_9"):
        weight_layer(lenet, "relu_9", 3)


def test_default_layers():
    assert default_change_layers(LeNet5()) == ["relu_2", "relu_4"]
    assert default_change_layers(SimpleCNN()) == ["relu_2", "relu_3"]
    assert default_change_layers(DeepCNN()) == ["relu_1", "relu_4"]  # no hidden fully-connected layer
    assert default_change_layers(MLP()) == ["relu_1"]
    resnet, calls = torchvision.models.resnet18(), {}
    shapes = layer_shapes(resnet, (3, 32, 32), calls)
    # torchvision's ResNet reuses its ReLUs (no single output): the first and the last stage outputs stand for them
    once = {name: shape for name, shape in shapes.items() if calls[name] == 1}
    assert default_change_layers(resnet, once) == ["layer1", "layer4"]


# ---------------------------------------------------------------------------------------------- the callback
def test_callback_draws_from_the_second_drawing_on(lenet):
    x, y = digits()
    with pytest.raises(ValueError, match="top must be an integer >= 1"):
        ChangesCallback(top=0)
    cb = ChangesCallback(layers=["relu_1", "relu_9"])
    with pytest.raises(LayerError, match=r"ChangesCallback: unknown layer name.*relu_9.*valid: conv_1, relu_1"):
        cb.configure_for(lenet, (1, 28, 28))
    cb = ChangesCallback(per_class=20, top=4)
    cb.configure(lenet, layer_shapes(lenet))
    assert cb.layer_names == ["relu_2", "relu_4"] and cb.layers is None
    assert render_once(cb, lenet, x, y, step=0).images == {}  # nothing to compare with: nothing logged
    with torch.no_grad():
        lenet.fc_2.weight[7] = 0
        lenet.fc_2.bias[7] = 0
        lenet.fc_2.weight[:3] *= 1.5
    w = render_once(cb, lenet, x, y, step=1)
    assert sorted(w.images) == ["changes/relu_2", "changes/relu_4"]
    for img, step in w.images.values():
        assert step == 1 and img.shape[0] == 3 and img.shape[2] == 400 < img.shape[1]
    dead = (collect_activations(lenet, x, ["relu_4"])["relu_4"] == 0).all(0)
    assert dead[7] and w.scalars["changes/relu_4/dead_units"][0] == int(dead.sum())
    assert w.scalars["changes/relu_4/weight_change"][0] == pytest.approx((1.0 + 3 * 0.5) / 84)
    assert w.scalars["changes/relu_2/weight_change"][0] == 0
    assert cb.previous_step == 1 and sorted(cb.previous) == cb.layer_names
    assert render_once(cb, lenet, x, y, step=1).images == {}  # the same epoch again: nothing to compare


# ---------------------------------------------------------------------------------------------- real fits
def test_fit_logs_from_the_second_epoch_read_back(lenet_run):
    cli, ea, _ = lenet_run
    cb = next(c for c in techniques_of(cli.trainer) if type(c).__name__ == "Changes")
    assert cb.layer_names == ["relu_2", "relu_4"]
    for layer in cb.layer_names:
        imgs = _images(ea, f"changes/{layer}")
        assert sorted(imgs) == [1], layer  # epoch 0 had nothing to compare with
        assert imgs[1].shape[1] == 400 < imgs[1].shape[0]
        for what in ("weight_change", "dead_units", "preferred_class_switches"):
            assert [e.step for e in ea.Scalars(f"changes/{layer}/{what}")] == [1], (layer, what)
    # dead units of the final net over the fixed set, recomputed here
    x, y = cli.datamodule.split("val")
    idx = cb.fixed_idx.to(x.device)
    acts = collect_activations(cli.model.net.eval(), x[idx], cb.layer_names)
    for layer in cb.layer_names:
        dead = int((acts[layer] == 0).all(0).sum())
        assert ea.Scalars(f"changes/{layer}/dead_units")[0].value == dead, layer


def test_resume_continues_the_series_without_a_gap(idx_dir, tmp_path):
    only = [a for key in VISUALIZATIONS if key not in ("changes", "invariance") for a in (f"--{key}.enabled", "false")]
    only += ["--changes.every_n_epochs", "1"]  # every epoch, so each epoch's comparison is checked
    _fit(idx_dir, tmp_path, extra=only)  # epochs 0, 1
    run = tmp_path / "lightning_logs" / "version_0"
    first = tmp_path / "epoch1.ckpt"
    shutil.copy(run / "checkpoints" / "last.ckpt", first)
    owner = next(v for k, v in torch.load(first, weights_only=True)["callbacks"].items() if k.startswith("Convscope"))
    state = owner["techniques"]["changes"]
    assert state["changes_previous_step"] == 1 and sorted(state["changes_previous"]) == ["relu_2", "relu_4"]
    cli = _fit(
        idx_dir,
        tmp_path,
        extra=[*only, "--trainer.max_epochs", "3", "--ckpt_path", str(run / "checkpoints" / "last.ckpt")],
    )  # epoch 2, in the same run
    ea = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    for layer in ("relu_2", "relu_4"):
        assert sorted(_images(ea, f"changes/{layer}")) == [1, 2], layer
        assert [e.step for e in ea.Scalars(f"changes/{layer}/weight_change")] == [1, 2], layer
    assert [e.step for e in ea.Scalars("invariance/rotate/relu_1")] == [1, 2]  # every 2 epochs and the last: no gap
    # epoch 2 was compared with epoch 1's weights, kept in the checkpoint: recompute from the two checkpoints
    w1 = torch.load(first, weights_only=True)["state_dict"]["net.fc_2.weight"]
    w2 = cli.model.net.fc_2.weight.detach().cpu()
    expected = float(weight_change(w1, w2).double().mean())
    assert ea.Scalars("changes/relu_4/weight_change")[-1].value == pytest.approx(expected, rel=1e-5)
