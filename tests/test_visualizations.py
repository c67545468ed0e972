"""Pure functions of the visualizations (known answers) and the six callbacks through a real Trainer,
read back from the TensorBoard event file with TensorBoard's own reader."""

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks import VISUALIZATIONS, Convscope, Filters, figures
from callbacks.feature_maps import FeatureMapsCallback
from callbacks.filters import FiltersCallback, filter_tiles, first_layer
from callbacks.hooks import LayerError, capture_activations, check_units, layer_shapes
from callbacks.methods.feature_maps import class_mean_maps
from callbacks.technique import nice_ceil
from lit_modules.nets import MLP, LeNet5
from tests.conftest import ROOT, _fit, _images, has_colour, only_epoch_label_differs, render_once, techniques_of
from train import cli_main


# ------------------------------------------------------------------------------------------ pure functions
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


def test_layer_shapes_of_reused_and_tuple_returning_modules():
    """A module run twice keeps its first output's shape and counts both calls; a module returning a tuple has no
    shape (and does not break the pass); the order is the order of the first calls."""

    class Pair(torch.nn.Module):
        def forward(self, x):
            return x, x.sum()

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pair, self.pool, self.conv = Pair(), torch.nn.MaxPool2d(2), torch.nn.Conv2d(1, 3, 3)

        def forward(self, x):
            x, _ = self.pair(x)
            return self.pool(self.conv(self.pool(x)))  # pool: 28 -> 14, then 12 -> 6

    net, calls = Net(), {}
    shapes = layer_shapes(net, (1, 28, 28), calls)
    assert shapes == {"pool": (1, 14, 14), "conv": (3, 12, 12)}
    assert list(shapes) == ["pool", "conv"] and calls == {"pair": 1, "pool": 2, "conv": 1}
    assert all(not m._forward_hooks for m in net.modules())


def test_filter_tiles_and_first_layer():
    net = LeNet5()
    assert first_layer(net) == "conv_1"
    assert torch.equal(filter_tiles(net, "conv_1"), net.conv_1.weight.detach().view(6, 5, 5))
    mlp = MLP()
    assert first_layer(mlp) == "fc_1"
    assert torch.equal(filter_tiles(mlp, "fc_1")[7], mlp.fc_1.weight.detach()[7].view(28, 28))
    with pytest.raises(LayerError, match="not a Conv2d or Linear"):
        filter_tiles(net, "relu_1")


def test_colour_scales_never_produce_nan_pixels_and_zero_is_white():
    for x in (torch.zeros(4, 4), torch.full((4, 4), 3.0), torch.tensor([[float("nan"), float("inf")], [-1.0, 1.0]])):
        for img in (figures.to_rgb(x), figures.to_rgb(x, figures.SEQUENTIAL, 0.0, 1.0)):
            assert torch.isfinite(img).all() and img.min() >= 0 and img.max() <= 1
            assert figures.to_uint8(img).dtype == torch.uint8
    d = figures.to_rgb(torch.tensor([-1.0, 0.0, 1.0]), vmax=1.0)
    assert torch.allclose(d[:, 1], torch.ones(3), atol=0.04)  # zero is (nearly) white on RdBu_r
    assert d[2, 0] > d[0, 0] and d[0, 2] > d[2, 2]  # negative is blue, positive red
    assert torch.equal(figures.to_rgb(torch.tensor([float("nan")]))[:, 0], torch.ones(3))  # NaN: white


def test_nice_scale_is_kept_across_epochs_and_only_grows():
    assert [nice_ceil(v) for v in (0.83, 1.0, 1.01, 2.2, 0.031, 7.5, 9.1)] == [1.0, 1.0, 1.2, 2.5, 0.04, 8.0, 10.0]
    cb = FiltersCallback()
    assert cb.scale("a", 0.83) == 1.0 and cb.scale("a", 0.2) == 1.0  # kept while values fit under it
    assert cb.scale("a", 1.3) == 1.5  # raised, never lowered
    assert cb.get_state()["scales"] == {"a": 1.5}
    other = FiltersCallback()
    other.set_state(cb.get_state())
    assert other.scale("a", 0.1) == 1.5  # a resumed run keeps the scale


def test_feature_maps_scale_each_channel_on_its_own_kept_across_epochs_and_raised_only_when_outgrown():
    cb = FeatureMapsCallback()
    inputs = torch.zeros(2, 3, 4, 4)

    def draw(peaks, signed=True):  # (2 rows, C channels, 4 x 4) maps whose channel c peaks at peaks[c]
        maps = torch.zeros(2, len(peaks), 4, 4)
        for c, p in enumerate(peaks):
            maps[0, c, 1, 1] = p
            maps[1, c, 2, 2] = -p / 2 if signed else p / 2
        return cb.picture(maps, inputs, ["a", "b"], "conv_1", "what", 0)

    draw([8.0, 0.5])  # a background channel 16 times stronger than the other
    assert cb.scales == {"conv_1#0": 8.0, "conv_1#1": 0.5}
    img = draw([6.0, 0.4])  # the next epoch: both fit, both limits kept
    assert cb.scales == {"conv_1#0": 8.0, "conv_1#1": 0.5}
    # the weak channel is not washed out: its 0.4 of 0.5 is as dark a red as the strong channel's 6 of 8
    red = tuple(int(v * 255 + 0.5) for v in figures.to_rgb(torch.tensor([0.8]), vmax=1.0)[:, 0])
    white_then = figures.to_rgb(torch.tensor([0.4 / 8.0]), vmax=1.0)[:, 0]  # one shared scale: nearly white
    assert has_colour(img, red) and white_then.min() > 0.85
    draw([7.0, 1.3])  # channel 1 outgrows its limit: raised (to a round number), channel 0 kept
    assert cb.scales == {"conv_1#0": 8.0, "conv_1#1": 1.5}
    post_relu = draw([1.0, 1.0], signed=False)  # no negative value: white (0) to dark red (the limit)
    assert has_colour(
        post_relu, tuple(int(v * 255 + 0.5) for v in figures.to_rgb(torch.tensor([1.0]), "Reds", 0, 1)[:, 0])
    )
    assert not has_colour(post_relu, (5, 48, 97))  # no blue: the diverging scale's dark end is not used
    resumed = FeatureMapsCallback()
    resumed.set_state({**cb.get_state(), "scales": {"conv_1": 8.0, **cb.scales}})  # an old per-picture key too
    resumed.picture(torch.full((1, 2, 4, 4), 0.1), inputs[:1], ["a"], "conv_1", "what", 3)
    assert resumed.scales["conv_1#1"] == 1.5  # a resumed run keeps the per-channel limits


def test_text_uses_a_truetype_font_of_at_least_12_px():
    strip = figures.text("Ankle boot", 120)
    dark = (strip.float().mean(0) < 128).nonzero()
    assert figures.font().size >= 12 and figures.font().getname()[0] == "DejaVu Sans"
    assert 9 <= int(dark[:, 0].max() - dark[:, 0].min()) + 1 <= strip.shape[1]  # glyphs as tall as a 13 px font's


def test_class_mean_maps_equal_a_hand_computation():
    torch.manual_seed(0)
    net = LeNet5().eval()
    x, y = torch.randn(37, 1, 28, 28), torch.randint(0, 4, (37,))
    y[y == 3] = 2  # class 3 has no image
    means = class_mean_maps(net, x, y, ["conv_1", "relu_2", "fc_1"], num_classes=4, batch_size=8)
    for layer in ("conv_1", "relu_2", "fc_1"):
        acts = capture_activations(net, x, [layer])[layer]
        for c in range(3):
            assert torch.allclose(means[layer][c], acts[y == c].mean(0), atol=1e-5), (layer, c)
        assert torch.equal(means[layer][3], torch.zeros_like(means[layer][3]))
    assert means["conv_1"].shape == (4, 6, 28, 28) and means["fc_1"].shape == (4, 120)


def test_feature_maps_one_picture_per_layer_with_a_row_per_class():
    torch.manual_seed(1)
    net = LeNet5().eval()
    x, y = torch.rand(60, 1, 28, 28), torch.arange(60) % 10
    cb = FeatureMapsCallback(per_class=6)
    cb.configure_for(net, (1, 28, 28))
    w = render_once(cb, net, x, y)
    layers = ["conv_1", "relu_1", "conv_2", "relu_2"]
    assert sorted(w.images) == sorted(
        ["feature_maps/conv_1", "feature_maps/conv_2"] + [f"feature_maps/{name}/class_mean" for name in layers]
    )
    assert (
        cb.layers is None and cb.layer_names == ["conv_1", "conv_2"] and cb.mean_names == layers
    )  # args kept as given
    for tag, (img, _) in w.images.items():
        assert img.dtype == torch.uint8 and img.shape[2] <= 450 and img.shape[1] <= 760, (tag, img.shape)
        assert has_colour(img, (103, 0, 31)) or has_colour(img, (5, 48, 97)), tag  # the colour bar's ends
    per_class = FeatureMapsCallback(layers=["relu_2"], class_mean=False, per_class_tags=True)
    per_class.configure_for(net, (1, 28, 28))
    assert sorted(render_once(per_class, net, x, y).images) == sorted(f"feature_maps/relu_2/{c}_{c}" for c in range(10))


def test_filters_of_an_rgb_first_layer_are_drawn_in_colour():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[1, 0] = 1.0  # unit 1: red only
    cb = FiltersCallback()
    net(torch.zeros(1, 3, 8, 8))
    cb.configure_for(net, (3, 8, 8))
    img, _ = render_once(cb, net, torch.rand(10, 3, 8, 8), torch.arange(10)).images["filters/0"]
    assert has_colour(img, (255, 128, 128))  # unit 1: +1 in red, 0 (grey) elsewhere
    assert has_colour(img, (128, 128, 128))  # the zero filters are grey


# ---------------------------------------------------------------------------------- through a real Trainer
def test_every_tag_is_logged_at_both_epochs_and_changes(lenet_run):
    """Trained weights give changed pictures: more than the title's epoch number changed (actmax starts every
    drawing from the same noise, so its change is the weights'; tests/test_frozen_net.py checks the converse)."""
    cli, ea, _ = lenet_run
    tags = set(ea.Tags()["images"])
    expected = {"filters/conv_1", "actmax/conv_1", "actmax/conv_2", "actmax/fc_3", "deconv"}
    expected |= {f"feature_maps/{layer}/class_mean" for layer in ("conv_1", "relu_1", "conv_2", "relu_2")}
    expected |= {"feature_maps/conv_1", "feature_maps/conv_2"}
    assert expected <= tags
    for tag in expected:
        imgs = _images(ea, tag)
        assert sorted(imgs) == [0, 1], tag  # step = epoch
        assert imgs[0].std() > 0 and imgs[1].std() > 0, f"{tag} is constant"
        assert imgs[0].shape == imgs[1].shape, tag
        if tag in ("filters/conv_1", "actmax/conv_1"):  # 4 steps at lr 1e-3 move conv_1 by less than a palette
            continue  # level; test_frozen_net's lr-0.05 fit checks that these change beyond the epoch label
        assert not only_epoch_label_differs(imgs[0], imgs[1]), f"{tag} did not change between epochs"
    scalars = set(ea.Tags()["scalars"])
    assert {"sparsity/relu_3", "sparsity/relu_4", "selectivity/relu_3/mean_index"} <= scalars
    for tag in ("sparsity/relu_3", "selectivity/relu_3/mean_index"):
        values = [e.value for e in ea.Scalars(tag)]
        assert len(values) == 2 and all(0 <= v <= 1 for v in values)
    assert "selectivity/relu_3/index" in ea.Tags()["histograms"]


def test_no_pictures_in_the_sanity_check_and_probes_are_fixed(lenet_run):
    cli, ea, _ = lenet_run
    assert [e.step for e in ea.Images("filters/conv_1")] == [0, 1]  # the sanity check ran but drew nothing
    cbs = {type(cb).__name__: cb for cb in techniques_of(cli.trainer)}
    fm = cbs["FeatureMaps"]
    x, y = cli.datamodule.split("val")
    assert y[fm.probe_idx].tolist() == list(range(10))  # one probe per class, class order
    assert int(fm.probe_idx[0]) == int(torch.nonzero(y == 0)[0])  # the first validation image of class 0
    sel = cbs["Selectivity"]
    assert torch.bincount(y[sel.fixed_idx], minlength=10).tolist() == torch.bincount(y, minlength=10).tolist()
    assert cli.model.training  # train mode restored


def test_probe_sets_are_kept_in_the_checkpoint(lenet_run):
    cli, _, run = lenet_run
    ckpt = torch.load(next((run / "checkpoints").glob("*.ckpt")), weights_only=False)
    states = {k: v for k, v in ckpt["callbacks"].items() if k.startswith("Convscope")}
    assert len(states) == 1  # one entry: the owner's
    fm = next(cb for cb in techniques_of(cli.trainer) if type(cb).__name__ == "FeatureMaps")
    assert torch.equal(next(iter(states.values()))["sets"]["probe:1"], fm.probe_idx)


def test_mlp_gets_weight_comparison_and_fc_pictures(idx_dir, tmp_path):
    _fit(idx_dir, tmp_path, "mlp")
    ea = EventAccumulator(str(tmp_path / "lightning_logs" / "version_0"), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    tags = set(ea.Tags()["images"])
    assert {
        "filters/fc_1",
        "actmax/fc_1",
        "actmax/fc_1/vs_weights",
        "actmax/fc_2",
        "deconv",
        "feature_maps/relu_1",
        "feature_maps/fc_1/class_mean",
        "feature_maps/relu_1/class_mean",
    } <= tags
    r = [e.value for e in ea.Scalars("actmax/fc_1/vs_weights/mean_r")]
    assert len(r) == 2 and all(-1 <= v <= 1 for v in r)


def test_turning_one_visualization_off_leaves_the_others(idx_dir, tmp_path):
    cli = _fit(
        idx_dir,
        tmp_path,
        extra=[
            "--actmax.enabled",
            "false",
            "--deconv.layers",
            "[relu_2]",
            "--feature_maps.layers",
            "[conv_1]",
            "--trainer.max_epochs",
            "1",
        ],
    )
    ea = EventAccumulator(str(tmp_path / "lightning_logs" / "version_0"), size_guidance={"images": 0})
    ea.Reload()
    tags = set(ea.Tags()["images"])
    assert not any(t.startswith("actmax/") for t in tags)
    deconv = next(cb for cb in techniques_of(cli.trainer) if type(cb).__name__ == "Deconv")
    assert "deconv" in tags and deconv.layer_names == ["relu_2"]
    assert {t.split("/")[1] for t in tags if t.startswith("feature_maps/")} == {"conv_1"}
    assert "filters/conv_1" in tags


def test_a_failing_visualization_warns_and_training_goes_on(idx_dir, tmp_path):

    def boom(self, ctx):
        raise RuntimeError("render exploded")

    original = Filters.render
    Filters.render = boom
    try:
        with pytest.warns(UserWarning, match=r"Filters \(filters/...\) failed at epoch 0.*render exploded"):
            cli = _fit(idx_dir, tmp_path, extra=["--trainer.max_epochs", "1"])
    finally:
        Filters.render = original
    assert cli.trainer.current_epoch == 1  # training finished
    assert list((tmp_path / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt"))


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--feature_maps.layers", "[conv_9]"], "FeatureMaps: unknown layer name(s) ['conv_9']"),
        (["--actmax.layers", "{conv_2: [16]}"], "out of range for layer 'conv_2': it has 16 units, valid 0..15"),
        (["--selectivity.every_n_epochs", "0"], "every_n_epochs must be an integer >= 1"),
    ],
    ids=["layer", "unit", "every_n_epochs"],
)
def test_bad_visualization_settings_fail_before_training(args, expected, idx_dir, tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "train.py",
            "fit",
            "--config",
            "configs/lenet5.yaml",
            "--data.data_dir",
            str(idx_dir),
            "--data.val_size",
            "200",
            "--data.download",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0
    assert expected in r.stderr
    assert "Epoch 0" not in r.stdout + r.stderr and not list(tmp_path.rglob("*.ckpt"))
    if "valid" in expected and "layer name" in expected:
        assert "valid: conv_1, relu_1, max_pool_1" in r.stderr


def test_validate_on_a_checkpoint_renders_the_same_pictures(lenet_run, idx_dir, tmp_path):
    _, _, run = lenet_run
    ckpt = next((run / "checkpoints").glob("*.ckpt"))
    cli_main(
        [
            "validate",
            "--config",
            str(ROOT / "configs" / "lenet5.yaml"),
            "--data.data_dir",
            str(idx_dir),
            "--data.val_size",
            "200",
            "--data.download",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--ckpt_path",
            str(ckpt),
            "--actmax.steps",
            "16",
        ]
    )
    ea = EventAccumulator(str(tmp_path / "lightning_logs" / "version_0"), size_guidance={"images": 0})
    ea.Reload()
    tags = set(ea.Tags()["images"])
    assert {"filters/conv_1", "deconv", "actmax/fc_3", "feature_maps/relu_1/class_mean"} <= tags
    # Logged at the checkpoint's epoch (1), and identical to what training drew then: same weights, same probe images.
    fit_ea = EventAccumulator(str(run), size_guidance={"images": 0})
    fit_ea.Reload()
    for tag in ("deconv", "feature_maps/conv_1", "feature_maps/relu_1/class_mean", "selectivity"):
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
    cli = cli_main(
        [
            "--config",
            str(ROOT / "configs" / "lenet5.yaml"),
            "--data.data_dir",
            str(idx_dir),
            "--data.val_size",
            "200",
            "--data.download",
            "false",
            "--trainer.max_epochs",
            "2",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--actmax.steps",
            "8",
            *strict,
        ],
        run=False,
    )
    cli.trainer.callbacks.append(Break())
    cli.trainer.fit(cli.model, cli.datamodule)
    assert torch.isnan(cli.trainer.callback_metrics["val/loss"])  # the net really was broken at epoch 1
    ea = EventAccumulator(str(tmp_path / "lightning_logs" / "version_0"), size_guidance={"images": 0})
    ea.Reload()
    for tag in (
        "filters/conv_1",
        "feature_maps/conv_2",
        "feature_maps/relu_2/class_mean",
        "deconv",
        "selectivity",
        "fc_activations/fc_1",
        "actmax/conv_2",
    ):
        imgs = _images(ea, tag)
        assert sorted(imgs) == [0, 1], tag  # drawn at the broken epoch too


def test_every_n_epochs_draws_after_every_n_epochs_and_at_the_last_one():
    def drawn(cb, max_epochs, fn="fit"):
        owner = Convscope([cb], drawing="inline")
        owner.fit_last = max_epochs - 1 if fn == "fit" else None
        trainer = SimpleNamespace(sanity_checking=False, state=SimpleNamespace(fn=fn), current_epoch=0)
        found = []
        for e in range(max_epochs):
            trainer.current_epoch = e
            found += [e] if cb in owner.due(trainer) else []
        return found

    assert drawn(FiltersCallback(every_n_epochs=3), 8) == [2, 5, 7]  # after epochs 3 and 6 (1-based), and the last
    assert drawn(FiltersCallback(every_n_epochs=5), 3) == [2]  # a short run still gets its one picture
    assert drawn(FiltersCallback(), 3) == [0, 1, 2]
    assert drawn(FiltersCallback(every_n_epochs=5), 2, fn="validate") == [0, 1]  # asked for: always drawn
    assert drawn(FiltersCallback(enabled=False), 3) == []
