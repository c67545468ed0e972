"""Invariance curves: known answers of the transformations and the distance, default layers, and the callback in a
real fit read back from its event file."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from callbacks.hooks import LayerError, layer_shapes
from callbacks.invariance import InvarianceCallback
from callbacks.methods.invariance import (
    IDENTITY,
    TRANSFORMATIONS,
    background,
    default_layers,
    invariance_sweeps,
    sweep_amounts,
    transform,
)
from lit_modules.nets import MLP, DeepCNN, LeNet5, SimpleCNN
from tests.conftest import _images, render_once, synthetic_digits, techniques_of


def digits(n: int = 10, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic digit-like images, normalized as the datamodule does (background far from zero)."""
    x, y = synthetic_digits(n, seed)
    x = (torch.from_numpy(x).float()[:, None] / 255 - 0.1307) / 0.3081
    return x, torch.from_numpy(y).long()


def sweeps_of(x, names=TRANSFORMATIONS):
    return {name: (transform(x, name, a), a) for name in names for a in [sweep_amounts(name, x.shape[-2:])]}


# ------------------------------------------------------------------------------------------- transformations
def test_background_is_the_median_of_the_border_per_image_and_channel():
    x = torch.randn(2, 3, 6, 9)
    border = torch.ones(2, 3, 6, 9, dtype=torch.bool)
    border[..., 1:-1, 1:-1] = False
    expected = torch.stack([torch.stack([x[i, c][border[i, c]].median() for c in range(3)]) for i in range(2)])
    assert torch.equal(background(x).flatten(1), expected)
    x[:, 1] = -0.42  # a flat channel: its background is its value
    x[:, 1, 2:4, 3:6] = 2.0
    assert torch.equal(background(x)[:, 1].flatten(), torch.full((2,), -0.42))


def test_shifts_are_exact_whole_pixel_moves_filled_with_the_background():
    x = torch.randn(2, 3, 20, 24)  # neither square nor one channel
    fill = torch.tensor([[-1.0, 0.5, 2.0], [0.0, 1.0, -3.0]])[..., None, None]
    out = transform(x, "translate_x", [3, -2], fill=fill)
    assert torch.equal(out[0, ..., 3:], x[..., :-3]) and torch.equal(out[0, ..., :3], fill.expand(2, 3, 20, 3))
    assert torch.equal(out[1, ..., :-2], x[..., 2:]) and torch.equal(out[1, ..., -2:], fill.expand(2, 3, 20, 2))
    out = transform(x, "translate_y", [4], fill=fill)[0]  # + is down
    assert torch.equal(out[..., 4:, :], x[..., :-4, :]) and torch.equal(out[..., :4, :], fill.expand(2, 3, 4, 24))
    assert torch.equal(transform(x, "translate_x", [30], fill=fill)[0], fill.expand_as(x))  # moved out entirely


def test_rotation_is_counter_clockwise_and_scale_enlarges_about_the_centre():
    x = torch.randn(3, 2, 9, 9)
    assert torch.allclose(transform(x, "rotate", [90.0])[0], torch.rot90(x, 1, (-2, -1)), atol=1e-5)
    assert torch.allclose(transform(x, "rotate", [-90.0])[0], torch.rot90(x, -1, (-2, -1)), atol=1e-5)
    ramp = (torch.arange(9.0) - 4).expand(1, 1, 9, 9)  # value = column - centre; bilinear is exact on a ramp
    assert torch.allclose(transform(ramp, "scale", [2.0])[0], ramp / 2, atol=1e-5)  # twice as big: half the slope
    small = transform(ramp, "scale", [0.5], fill=torch.tensor(7.0))[0, 0, 0]
    assert torch.allclose(small[2:7, 2:7], 2 * ramp[0, 0, 2:7, 2:7], atol=1e-5)  # half as big: twice the slope
    outside = torch.ones(9, 9, dtype=torch.bool)
    outside[2:7, 2:7] = False
    assert torch.equal(small[outside], torch.full((int(outside.sum()),), 7.0))  # uncovered: the fill
    blank = torch.full((2, 1, 12, 12), -0.4242)  # all background: any transformation leaves it as it is
    for name in TRANSFORMATIONS:
        out = transform(blank, name, sweep_amounts(name, (12, 12)))
        assert torch.allclose(out, blank.expand_as(out), atol=1e-6), name


def test_sweep_amounts_scale_with_the_image_and_hold_the_identity():
    assert sweep_amounts("translate_x", (28, 28)).tolist() == list(range(-8, 9))
    assert sweep_amounts("translate_y", (56, 20)).tolist()[::8] == [-17, 0, 17]  # 0.3 of the height
    assert sweep_amounts("translate_x", (56, 20)).tolist() == list(range(-6, 7))  # 0.3 of the width
    assert [round(v, 4) for v in sweep_amounts("scale", (28, 28)).tolist()] == [
        0.6,
        0.7,
        0.8,
        0.9,
        1.0,
        1.1,
        1.2,
        1.3,
        1.4,
    ]
    assert sweep_amounts("rotate", (28, 28)).tolist() == list(range(-90, 91, 15))
    assert 1.0 in sweep_amounts("scale", (28, 28), scale_range=(0.75, 1.5)).tolist()
    for name in TRANSFORMATIONS:
        a = sweep_amounts(name, (32, 32))
        assert IDENTITY[name] in a.tolist() and torch.all(a[1:] > a[:-1]), name


def test_bad_transformations_are_refused():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="unknown transformation 'shear'.*translate_x"):
        transform(x, "shear", [1.0])
    with pytest.raises(ValueError, match="whole pixels"):
        transform(x, "translate_x", [1.5])
    with pytest.raises(ValueError, match="scale factors must be > 0"):
        transform(x, "scale", [0.0])
    with pytest.raises(ValueError, match="4-D"):
        transform(x[0], "rotate", [10.0])


# ------------------------------------------------------------------------------------------------ the curves
def test_amount_zero_gives_distance_zero_and_the_unchanged_probability(lenet):
    x, y = digits()
    res = invariance_sweeps(lenet, x, y, ["relu_1", "max_pool_1", "relu_4"], sweeps_of(x))
    with torch.no_grad():
        p = lenet(x).softmax(1)[torch.arange(len(y)), y]
    for name, sw in res.items():
        k = sw.amounts.tolist().index(IDENTITY[name])
        for layer, d in sw.distance.items():
            assert torch.allclose(d[k], torch.zeros(len(x)), atol=1e-6), (name, layer)
            assert (d.abs().sum(1) > 0).sum() == len(sw.amounts) - 1, (name, layer)  # every other amount moves it
        assert torch.allclose(sw.p_true[k], p, atol=1e-6) and torch.allclose(sw.p_original, p, atol=1e-6), name


def test_distance_is_the_normalized_euclidean_distance_by_hand(lenet):
    x, y = digits(4)
    sw = sweeps_of(x, ["rotate"])
    res = invariance_sweeps(lenet, x, y, ["max_pool_1"], sw, chunk_size=7)  # several chunks
    images = sw["rotate"][0]
    with torch.no_grad():
        stage = nn.Sequential(*list(lenet)[:3])  # conv_1, relu_1, max_pool_1
        ref = stage(x).flatten(1)
        for k in (0, 5, 12):
            f = stage(images[k]).flatten(1)
            expected = (f - ref).norm(dim=1) / ref.norm(dim=1)
            assert torch.allclose(res["rotate"].distance["max_pool_1"][k], expected, atol=1e-5)
            p = lenet(images[k]).softmax(1)[torch.arange(4), y]
            assert torch.allclose(res["rotate"].p_true[k], p, atol=1e-6)


def test_global_average_pool_is_exactly_invariant_to_circular_shifts():
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("conv", nn.Conv2d(2, 6, 3, padding=1, padding_mode="circular"))
    net.add_module("relu", nn.ReLU())
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flatten", nn.Flatten())
    net.add_module("fc", nn.Linear(6, 3))
    x, y = torch.randn(5, 2, 12, 10), torch.tensor([0, 1, 2, 0, 1])
    shifts = torch.arange(-4.0, 5.0)
    sweeps = {
        "translate_x": (torch.stack([torch.roll(x, int(s), dims=-1) for s in shifts]), shifts),
        "translate_y": (torch.stack([torch.roll(x, int(s), dims=-2) for s in shifts]), shifts),
    }
    res = invariance_sweeps(net, x, y, ["relu", "pool"], sweeps)
    for name, sw in res.items():
        assert torch.allclose(sw.distance["pool"], torch.zeros(9, 5), atol=1e-5), name  # invariant
        assert torch.allclose(sw.p_true, sw.p_original.expand(9, 5), atol=1e-6), name
        moved = sw.distance["relu"][shifts != 0]
        assert (moved > 0.1).all(), name  # the maps themselves move (equivariant, not invariant)


def test_default_layers_of_the_seed_nets_and_a_torchvision_net():
    x = torch.rand(3, 1, 28, 28)
    assert default_layers(LeNet5(), x) == ["relu_1", "max_pool_1", "relu_4"]
    assert default_layers(SimpleCNN(), x) == ["relu_1", "max_pool_1", "relu_3"]
    assert default_layers(DeepCNN(), x) == ["relu_1", "max_pool_1", "max_pool_4"]  # Flatten, Dropout skipped back
    assert default_layers(MLP(), x) == ["relu_1"]
    resnet = torchvision.models.resnet18(num_classes=10).eval()  # in-place ReLUs, a functional flatten before fc
    assert default_layers(resnet, torch.rand(2, 3, 64, 64)) == ["relu", "maxpool", "avgpool"]
    resnet.maxpool = nn.Identity()  # no pooling right after the stem: the global pool is not "its pooled output"
    assert default_layers(resnet, torch.rand(2, 3, 64, 64)) == ["relu", "avgpool"]
    with pytest.raises(ValueError, match="neither a Conv2d nor a Linear"):
        default_layers(nn.Sequential(nn.Flatten(), nn.Tanh()), x)


# ---------------------------------------------------------------------------------------------- the callback
def test_callback_arguments_and_layer_names_checked_at_setup(lenet):
    for kwargs, match in (
        ({"transformations": ["shear"]}, r"transformations must be a non-empty list of translate_x, .*got \['shear'\]"),
        ({"transformations": []}, r"transformations must be a non-empty list of .*got \[\]"),
        ({"per_class": 0}, "per_class must be an integer >= 1"),
        ({"max_shift": 1.5}, "max_shift"),
        ({"scale_range": (1.2, 1.4)}, "scale_range"),
        ({"max_angle": 0}, "max_angle"),
    ):
        with pytest.raises(ValueError, match=match):
            InvarianceCallback(**kwargs)
    cb = InvarianceCallback(layers=["relu_1", "relu_9"])
    with pytest.raises(LayerError, match=r"InvarianceCallback: unknown layer name.*relu_9.*valid: conv_1, relu_1"):
        cb.configure_for(lenet, (1, 28, 28))
    cb = InvarianceCallback()
    cb.configure(lenet, layer_shapes(lenet))
    assert cb.layer_names == ["relu_1", "max_pool_1", "relu_4"] and cb.layers is None  # the user's args kept


def test_callback_pictures_and_scalars_on_rgb_images_of_another_size():
    torch.manual_seed(0)
    net = nn.Sequential()
    for name, m in (
        ("conv", nn.Conv2d(3, 4, 3, padding=1)),
        ("act", nn.ReLU()),
        ("pool", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(4 * 10 * 18, 16)),
        ("act2", nn.ReLU()),
        ("out", nn.Linear(16, 3)),
    ):
        net.add_module(name, m)
    x, y = torch.rand(9, 3, 20, 36), torch.arange(9) % 3
    cb = InvarianceCallback(per_class=3, transformations=["translate_x", "translate_y", "rotate"])
    w = render_once(cb, net.eval(), x, y, classes=("a", "b", "c"), step=4)
    assert cb.layer_names == ["act", "pool", "act2"]
    assert sorted(w.images) == ["invariance/rotate", "invariance/translate"]  # x and y shifts share a picture
    for img, step in w.images.values():
        assert step == 4 and img.dtype == torch.uint8 and img.shape[0] == 3 and img.shape[2] <= 400 < img.shape[1]
    assert {t for t in w.scalars} == {
        f"invariance/{t}/{name}"
        for t in ("translate_x", "translate_y", "rotate")
        for name in ("act", "pool", "act2", "p_true")
    }
    res = invariance_sweeps(net, x, y, cb.layer_names, sweeps_of(x, ["rotate"]))["rotate"]
    assert w.scalars["invariance/rotate/pool"][0] == pytest.approx(
        float(res.distance["pool"][[0, -1]].mean()), abs=1e-6
    )
    assert w.scalars["invariance/rotate/p_true"][0] == pytest.approx(float(res.p_true[[0, -1]].mean()), abs=1e-6)


def test_fit_logs_the_pictures_and_scalars_read_back(lenet_run):
    cli, ea, _ = lenet_run
    cb = next(c for c in techniques_of(cli.trainer) if type(c).__name__ == "Invariance")
    tags = ea.Tags()
    assert {t for t in tags["images"] if t.startswith("invariance/")} == {
        "invariance/translate",
        "invariance/scale",
        "invariance/rotate",
    }
    for tag in ("invariance/translate", "invariance/scale", "invariance/rotate"):
        imgs = _images(ea, tag)
        assert sorted(imgs) == [0, 1], tag
        h, w = imgs[1].shape[:2]
        assert w == 400 and h > w, tag
    # The last step's scalars are those of the final net on the fixed probe images, recomputed here.
    x, y = cli.datamodule.split("val")
    probes = cb.probe_idx.to(x.device)
    net = cli.model.net.eval()
    res = invariance_sweeps(net, x[probes], y[probes], cb.layer_names, sweeps_of(x[probes]))
    assert cb.layer_names == ["relu_1", "max_pool_1", "relu_4"] and len(probes) == 2 * 10
    for name, sw in res.items():
        for layer, d in sw.distance.items():
            logged = ea.Scalars(f"invariance/{name}/{layer}")
            assert [e.step for e in logged] == [0, 1]
            assert logged[-1].value == pytest.approx(float(d[[0, -1]].double().nanmean()), abs=1e-5), (name, layer)
        assert ea.Scalars(f"invariance/{name}/p_true")[-1].value == pytest.approx(
            float(sw.p_true[[0, -1]].mean()), abs=1e-5
        )
    assert len(cb.seconds) == 2
