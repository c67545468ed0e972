"""Pure functions of the visualizations (known answers) and the six callbacks through a real Trainer,
read back from the TensorBoard event file with TensorBoard's own reader."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks import VISUALIZATIONS
from callbacks.fc_activations import following_relu, sparsity
from callbacks.filters import filter_tiles, first_layer
from callbacks.hooks import LayerError, capture_activations, check_units, layer_shapes
from callbacks.render import bar_chart, diverging, grey, sequential, to_uint8
from callbacks.selectivity import class_means, selectivity_index
from lit_modules.nets import MLP, LeNet5
from tests.conftest import ROOT, _fit, _images
from train import cli_main


# ------------------------------------------------------------------------------------------ pure functions
def test_selectivity_index_known_answers():
    means = torch.zeros(10, 3)
    means[4, 0] = 2.0  # unit 0 fires for class 4 only
    means[:, 1] = 0.7  # unit 1 is uniform
    # unit 2 is silent
    si = selectivity_index(means)
    assert si.tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-6)
    m = torch.tensor([[3.0], [1.0], [1.0]])  # mu_max 3, mu_rest 1 -> (3 - 1) / (3 + 1)
    assert float(selectivity_index(m)) == pytest.approx(0.5)


def test_class_means_average_spatially_and_per_class():
    acts = torch.arange(4 * 2 * 2 * 2, dtype=torch.float32).view(4, 2, 2, 2)
    labels = torch.tensor([0, 1, 0, 2])
    means = class_means(acts, labels, num_classes=4)
    per_sample = acts.flatten(2).mean(2)
    assert torch.allclose(means[0], (per_sample[0] + per_sample[2]) / 2)
    assert torch.allclose(means[2], per_sample[3])
    assert torch.equal(means[3], torch.zeros(2))  # no samples of class 3


def test_capture_activations_and_hooks_removed():
    net = LeNet5().eval()
    x = torch.randn(2, 1, 28, 28)
    acts = capture_activations(net, x, ["conv_1", "relu_1", "fc_3"])
    assert torch.equal(acts["relu_1"], torch.relu(acts["conv_1"]))
    assert torch.allclose(acts["fc_3"], net(x))
    assert all(not m._forward_hooks for m in net.modules())
    with pytest.raises(LayerError, match="unknown layer name.*conv_9.*valid: conv_1, relu_1"):
        capture_activations(net, x, ["conv_9"])
    with pytest.raises(LayerError, match="out of range for layer 'conv_2': it has 16 units, valid 0..15"):
        check_units(net, "conv_2", [3, 16])
    assert layer_shapes(net)["max_pool_2"] == (16, 5, 5)


def test_filter_tiles_and_first_layer():
    net = LeNet5()
    assert first_layer(net) == "conv_1"
    assert torch.equal(filter_tiles(net, "conv_1"), net.conv_1.weight.detach().view(6, 5, 5))
    mlp = MLP()
    assert first_layer(mlp) == "fc_1"
    assert torch.equal(filter_tiles(mlp, "fc_1")[7], mlp.fc_1.weight.detach()[7].view(28, 28))
    with pytest.raises(LayerError, match="not a Conv2d or Linear"):
        filter_tiles(net, "relu_1")


def test_fc_helpers():
    net = LeNet5()
    assert following_relu(net, "fc_1") == "relu_3" and following_relu(net, "fc_3") is None
    assert sparsity(torch.tensor([0.0, 1.0, 0.0, 2.0])) == 0.5


def test_colour_scales_never_produce_nan_pixels():
    for x in (torch.zeros(4, 4), torch.full((4, 4), 3.0), torch.tensor([[float("nan"), float("inf")], [-1.0, 1.0]])):
        for img in (diverging(x), sequential(x), grey(x, -1, 1), bar_chart(x.flatten())):
            assert torch.isfinite(img).all() and img.min() >= 0 and img.max() <= 1
            assert to_uint8(img).dtype == torch.uint8
    d = diverging(torch.tensor([-1.0, 0.0, 1.0]), vmax=1.0)
    assert torch.equal(d[:, 1], torch.ones(3))  # zero is white
    assert d[2, 0] > d[0, 0] and d[0, 2] > d[2, 2]  # negative is blue, positive red


# ---------------------------------------------------------------------------------- through a real Trainer
def test_every_tag_is_logged_at_both_epochs_and_changes(lenet_run):
    cli, ea, _ = lenet_run
    tags = set(ea.Tags()["images"])
    expected = {"filters/conv_1", "fc_activations/fc_1", "fc_activations/fc_2", "fc_activations/fc_3",
                "actmax/conv_1", "actmax/conv_2", "actmax/fc_3", "deconv/max_pool_1", "deconv/max_pool_2",
                "selectivity/relu_1", "selectivity/relu_2", "selectivity/relu_3", "selectivity/relu_4"}
    expected |= {f"feature_maps/{layer}/{c}_{c}" for layer in ("conv_1", "relu_1", "conv_2", "relu_2")
                 for c in range(10)}
    assert expected <= tags
    for tag in expected:
        imgs = _images(ea, tag)
        assert sorted(imgs) == [0, 1], tag  # step = epoch
        assert imgs[0].std() > 0 and imgs[1].std() > 0, f"{tag} is constant"
        assert imgs[0].shape == imgs[1].shape, tag
        assert not np.array_equal(imgs[0], imgs[1]), f"{tag} did not change between epochs"
    scalars = set(ea.Tags()["scalars"])
    assert {"sparsity/relu_3", "sparsity/relu_4", "selectivity/relu_3/mean_index"} <= scalars
    for tag in ("sparsity/relu_3", "selectivity/relu_3/mean_index"):
        values = [e.value for e in ea.Scalars(tag)]
        assert len(values) == 2 and all(0 <= v <= 1 for v in values)
    assert "selectivity/relu_3/index" in ea.Tags()["histograms"]


def test_no_pictures_in_the_sanity_check_and_probes_are_fixed(lenet_run):
    cli, ea, _ = lenet_run
    assert [e.step for e in ea.Images("filters/conv_1")] == [0, 1]  # the sanity check ran but drew nothing
    cbs = {type(cb).__name__: cb for cb in cli.trainer.callbacks}
    fm = cbs["FeatureMapsCallback"]
    x, y = cli.datamodule.split("val")
    assert y[fm.probe_idx].tolist() == list(range(10))  # one probe per class, class order
    assert int(fm.probe_idx[0]) == int(torch.nonzero(y == 0)[0])  # the first validation image of class 0
    sel = cbs["SelectivityCallback"]
    assert torch.bincount(y[sel.fixed_idx], minlength=10).tolist() == torch.bincount(y, minlength=10).tolist()
    assert cli.model.training  # train mode restored


def test_probe_sets_are_kept_in_the_checkpoint(lenet_run):
    cli, _, run = lenet_run
    ckpt = torch.load(next((run / "checkpoints").glob("*.ckpt")), weights_only=False)
    states = {k: v for k, v in ckpt["callbacks"].items() if "FeatureMapsCallback" in k}
    assert len(states) == 1
    fm = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "FeatureMapsCallback")
    assert torch.equal(next(iter(states.values()))["probe_idx"], fm.probe_idx)


def test_mlp_gets_weight_comparison_and_fc_pictures(idx_dir, tmp_path):
    _fit(idx_dir, tmp_path, "mlp")
    ea = EventAccumulator(str(tmp_path / "lightning_logs" / "version_0"), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    tags = set(ea.Tags()["images"])
    assert {"filters/fc_1", "actmax/fc_1", "actmax/fc_1/vs_weights", "actmax/fc_2", "deconv/relu_1",
            "fc_activations/fc_1", "selectivity/relu_1", "feature_maps/relu_1/3_3"} <= tags
    r = [e.value for e in ea.Scalars("actmax/fc_1/vs_weights/mean_r")]
    assert len(r) == 2 and all(-1 <= v <= 1 for v in r)


def test_turning_one_visualization_off_leaves_the_others(idx_dir, tmp_path):
    _fit(idx_dir, tmp_path, extra=["--actmax.enabled", "false", "--deconv.layers", "[relu_2]",
                                   "--feature_maps.layers", "[conv_1]", "--trainer.max_epochs", "1"])
    ea = EventAccumulator(str(tmp_path / "lightning_logs" / "version_0"), size_guidance={"images": 0})
    ea.Reload()
    tags = set(ea.Tags()["images"])
    assert not any(t.startswith("actmax/") for t in tags)
    assert {t for t in tags if t.startswith("deconv/")} == {"deconv/relu_2"}
    assert {t.split("/")[1] for t in tags if t.startswith("feature_maps/")} == {"conv_1"}
    assert "filters/conv_1" in tags


def test_a_failing_visualization_warns_and_training_goes_on(idx_dir, tmp_path):
    from callbacks.filters import FiltersCallback

    def boom(self, ctx):
        raise RuntimeError("render exploded")

    original = FiltersCallback.render
    FiltersCallback.render = boom
    try:
        with pytest.warns(UserWarning, match=r"FiltersCallback \(filters/...\) failed at epoch 0.*render exploded"):
            cli = _fit(idx_dir, tmp_path, extra=["--trainer.max_epochs", "1"])
    finally:
        FiltersCallback.render = original
    assert cli.trainer.current_epoch == 1  # training finished
    assert list((tmp_path / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt"))


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--feature_maps.layers", "[conv_9]"], "FeatureMapsCallback: unknown layer name(s) ['conv_9']"),
        (["--actmax.layers", "{conv_2: [16]}"], "out of range for layer 'conv_2': it has 16 units, valid 0..15"),
        (["--selectivity.every_n_epochs", "0"], "every_n_epochs must be an integer >= 1"),
    ],
    ids=["layer", "unit", "every_n_epochs"],
)
def test_bad_visualization_settings_fail_before_training(args, expected, idx_dir, tmp_path):
    r = subprocess.run([sys.executable, "train.py", "fit", "--config", "configs/lenet5.yaml", "--data.data_dir", str(idx_dir),
                        "--data.val_size", "200", "--data.download", "false", "--trainer.default_root_dir", str(tmp_path),
                        *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert expected in r.stderr
    assert "Epoch 0" not in r.stdout + r.stderr and not list(tmp_path.rglob("*.ckpt"))
    if "valid" in expected and "layer name" in expected:
        assert "valid: conv_1, relu_1, max_pool_1" in r.stderr


def test_validate_on_a_checkpoint_renders_the_same_pictures(lenet_run, idx_dir, tmp_path):
    _, _, run = lenet_run
    ckpt = next((run / "checkpoints").glob("*.ckpt"))
    cli_main(["validate", "--config", str(ROOT / "configs" / "lenet5.yaml"), "--data.data_dir", str(idx_dir),
              "--data.val_size", "200", "--data.download", "false", "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", str(tmp_path), "--ckpt_path", str(ckpt), "--actmax.steps", "16"])
    ea = EventAccumulator(str(tmp_path / "lightning_logs" / "version_0"), size_guidance={"images": 0})
    ea.Reload()
    tags = set(ea.Tags()["images"])
    assert {"filters/conv_1", "deconv/max_pool_2", "selectivity/relu_3", "actmax/fc_3"} <= tags
    # Logged at the checkpoint's epoch (1), and identical to what training drew then: same weights, same probe images.
    fit_ea = EventAccumulator(str(run), size_guidance={"images": 0})
    fit_ea.Reload()
    for tag in ("deconv/max_pool_2", "feature_maps/relu_1/4_4", "selectivity/relu_3"):
        assert sorted(_images(ea, tag)) == [1], tag
        assert np.array_equal(_images(ea, tag)[1], _images(fit_ea, tag)[1]), tag


def test_nan_weights_and_dead_layers_draw_without_nan_pixels_or_errors(idx_dir, tmp_path):
    """All six in strict mode (errors would end the fit): after epoch 0, conv_2 is zeroed (constant, all-zero maps
    downstream) and one conv_1 filter becomes NaN (which spreads through training); every picture of epoch 1 must
    still be drawn."""
    from lightning.pytorch.callbacks import Callback

    class Break(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0:
                with torch.no_grad():
                    pl_module.net.conv_2.weight.zero_()
                    pl_module.net.conv_2.bias.zero_()
                    pl_module.net.conv_1.weight[0] = float("nan")

    strict = [a for key in VISUALIZATIONS for a in (f"--{key}.strict", "true")]
    cli = cli_main(["--config", str(ROOT / "configs" / "lenet5.yaml"), "--data.data_dir", str(idx_dir),
                    "--data.val_size", "200", "--data.download", "false", "--trainer.max_epochs", "2",
                    "--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar", "false",
                    "--trainer.default_root_dir", str(tmp_path), "--actmax.steps", "8", *strict], run=False)
    cli.trainer.callbacks.append(Break())
    cli.trainer.fit(cli.model, cli.datamodule)
    assert torch.isnan(cli.trainer.callback_metrics["val/loss"])  # the net really was broken at epoch 1
    ea = EventAccumulator(str(tmp_path / "lightning_logs" / "version_0"), size_guidance={"images": 0})
    ea.Reload()
    for tag in ("filters/conv_1", "feature_maps/relu_2/0_0", "feature_maps/conv_2/3_3", "deconv/max_pool_2",
                "selectivity/relu_2", "fc_activations/fc_1", "actmax/conv_2"):
        imgs = _images(ea, tag)
        assert sorted(imgs) == [0, 1], tag  # drawn at the broken epoch too
