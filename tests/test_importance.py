"""Unit importance by ablation (callbacks/methods/importance.py, callbacks/importance.py): known answers from
hand-made nets, the batched path against the one-forward-per-unit hook path, chunking, variance and rank
correlation, errors, mode and hook hygiene, and the callback's pictures and scalars."""

from __future__ import annotations

import inspect
import math
from collections import OrderedDict

import matplotlib
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import callbacks.methods.importance as importance
from callbacks.hooks import LayerError, capture_activations, eval_mode, layer_shapes
from callbacks.importance import RED, ImportanceCallback
from callbacks.methods.importance import Ablation, ablation_importance, rank_correlation, variance_importance
from lit_modules.nets import DeepCNN, LeNet5
from tests.conftest import has_colour, render_once


# ------------------------------------------------------------------------------------------------------ helpers
class Wrapper(nn.Module):
    """Not an nn.Sequential: ablation splits it with torch.fx (layer names get a ``body.`` prefix)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x)


def no_hooks(net: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def lenet(seed: int = 0) -> LeNet5:
    torch.manual_seed(seed)
    return LeNet5().eval()


def data(n: int, seed: int = 1, k: int = 10):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, k, (n,), generator=g)


def mlp_one_unit() -> nn.Sequential:
    """logits = [h0, 0.5] with h = relu(fc_1(x)) = relu([x0, x1, 3 - x0]): only unit 0 of relu_1 matters."""
    net = nn.Sequential(OrderedDict(fc_1=nn.Linear(2, 3), relu_1=nn.ReLU(), fc_2=nn.Linear(3, 2)))
    with torch.no_grad():
        net.fc_1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
        net.fc_1.bias.copy_(torch.tensor([0.0, 0.0, 3.0]))
        net.fc_2.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
        net.fc_2.bias.copy_(torch.tensor([0.0, 0.5]))
    return net


def conv_one_channel() -> nn.Sequential:
    """logits = [mean of channel 1 of relu_1, 0.5]: only channel 1 matters, through its whole map."""
    net = nn.Sequential(
        OrderedDict(
            conv_1=nn.Conv2d(1, 3, kernel_size=1),
            relu_1=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc_1=nn.Linear(3, 2),
        )
    )
    with torch.no_grad():
        net.conv_1.weight.fill_(1.0)
        net.conv_1.bias.zero_()
        net.fc_1.weight.copy_(torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
        net.fc_1.bias.copy_(torch.tensor([0.0, 0.5]))
    return net


def hooked(net, x, y, layer, units=None, chunk_size=2048) -> Ablation:
    """The fallback for nets torch.fx cannot trace: a forward hook zeroes the unit, the whole net runs per unit."""
    with eval_mode(net), torch.no_grad():
        return importance._ablate_hooked(net, x, torch.as_tensor(y).long(), layer, units, chunk_size, len(x))


def both_paths(net, x, y, layer, **kw) -> tuple[Ablation, Ablation, Ablation]:
    """The same ablation three ways: the torch.fx split of the net and of the net wrapped, and the hook."""
    return (
        ablation_importance(net, x, y, layer, **kw),
        ablation_importance(Wrapper(net), x, y, f"body.{layer}", **kw),
        hooked(net, x, y, layer, **kw),
    )


# ------------------------------------------------------------------------------------------------ known answers
def test_single_unit_net_gives_that_unit_the_full_drop():
    x = torch.stack([torch.linspace(1, 2, 8), torch.linspace(-1, 1, 8)], 1)  # x0 in [1, 2]: h0 = x0 > 0.5
    y = torch.zeros(8, dtype=torch.long)
    for abl in both_paths(mlp_one_unit(), x, y, "relu_1"):
        assert abl.base_acc == 1.0
        assert abl.acc_drop.tolist() == [1.0, 0.0, 0.0]
        base_loss = float(torch.log1p(torch.exp(0.5 - x[:, 0].double())).mean())
        assert abl.base_loss == pytest.approx(base_loss, abs=1e-6)
        assert abl.loss_rise[0].item() == pytest.approx(math.log1p(math.exp(0.5)) - base_loss, abs=1e-6)
        assert abl.loss_rise[1:].abs().max() <= 1e-6
        assert abl.units.tolist() == [0, 1, 2]


def test_conv_ablation_zeroes_the_whole_channel():
    g = torch.Generator().manual_seed(0)
    x = 1 + torch.rand(6, 1, 5, 5, generator=g)  # every position > 0.5, so zeroing part of a map changes nothing
    y = torch.zeros(6, dtype=torch.long)
    for abl in both_paths(conv_one_channel(), x, y, "relu_1"):
        assert abl.base_acc == 1.0
        assert abl.acc_drop.tolist() == [0.0, 1.0, 0.0]
        assert abl.loss_rise[1].item() == pytest.approx(math.log1p(math.exp(0.5)) - abl.base_loss, abs=1e-6)
        assert abl.loss_rise[[0, 2]].abs().max() <= 1e-6


def test_unit_with_zero_outgoing_weights_changes_nothing():
    net = lenet()
    with torch.no_grad():
        net.conv_2.weight[:, 2] = 0  # relu_1 channel 2 -> max_pool_1 -> conv_2: no effect
        net.fc_2.weight[:, 7] = 0  # relu_3 unit 7
        net.fc_3.weight[:, 5] = 0  # relu_4 unit 5
    x, y = data(200)
    for layer, unit in (("relu_1", 2), ("relu_3", 7), ("relu_4", 5)):
        for abl in both_paths(net, x, y, layer):
            assert abl.acc_drop[unit].item() == 0.0, layer
            assert abs(abl.loss_rise[unit].item()) <= 1e-6, layer
            assert abl.loss_rise.abs().max() > 1e-4, layer  # the other units do matter: the test can tell


def test_loss_rise_and_its_standard_error_equal_a_hand_computation():
    # logit 0 = h0 = x0: class-0 samples (x0 in [1, 2]) lose sample i's loss log1p(e^(0.5 - x0)) -> log1p(e^0.5)
    # when unit 0 is zeroed; class-1 samples (x0 = 0, so h0 = 0 already) lose nothing
    x0 = [1.0, 1.25, 1.5, 1.75, 2.0, 0.0, 0.0, 0.0]
    x = torch.stack([torch.tensor(x0), torch.ones(8)], 1)
    y = torch.tensor([0] * 5 + [1] * 3)
    diffs = [
        math.log1p(math.exp(0.5)) - math.log1p(math.exp(0.5 - v)) if c == 0 else 0.0 for v, c in zip(x0, y.tolist())
    ]
    mean = sum(diffs) / 8
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 7 / 8)  # sample SD (n - 1) / sqrt(n)
    for abl in both_paths(mlp_one_unit(), x, y, "relu_1"):
        assert abl.loss_rise[0].item() == pytest.approx(mean, abs=1e-6)
        assert abl.loss_rise_se[0].item() == pytest.approx(se, rel=1e-5)
        assert abl.loss_rise_se[0].item() > 0.01  # the test can tell a wrong SE from none
        # units 1 and 2 feed nothing (zero outgoing weights): no rise, and no spread of the per-sample differences
        assert abl.loss_rise[1:].abs().max() <= 1e-7 and abl.loss_rise_se[1:].abs().max() <= 1e-7
        assert abl.dead.tolist() == [False, False, False]
    one = ablation_importance(mlp_one_unit(), x[:1], y[:1], "relu_1")
    assert math.isnan(one.loss_rise_se[0].item())  # one sample: no standard error


def test_dead_units_are_flagged_and_get_exactly_zero():
    net = mlp_one_unit()
    with torch.no_grad():
        net.fc_2.weight[0, 1] = 2.0  # unit 1 would matter ...
    x = torch.stack([torch.linspace(1, 2, 6), -torch.linspace(1, 3, 6)], 1)  # ... but x1 < 0: relu_1 unit 1 is dead
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    for abl in both_paths(net, x, y, "relu_1"):
        assert abl.dead.tolist() == [False, True, False]
        assert abl.loss_rise[1].item() == 0.0 and abl.loss_rise_se[1].item() == 0.0 and abl.acc_drop[1].item() == 0.0
        assert abl.loss_rise[0].item() != 0.0
    conv = conv_one_channel()
    with torch.no_grad():
        conv.conv_1.bias.copy_(torch.tensor([0.0, 0.0, -10.0]))  # channel 2 negative everywhere: dead after the ReLU
    for abl in both_paths(conv, 1 + torch.rand(4, 1, 5, 5), torch.zeros(4, dtype=torch.long), "relu_1"):
        assert abl.dead.tolist() == [False, False, True]


# ------------------------------------------------------------------------------------ batched == hook fallback
def test_batched_traced_and_hook_paths_agree_on_lenet():
    net = lenet(3)
    x, y = data(300, seed=4)
    for layer, units in (
        ("relu_1", None),
        ("relu_2", None),
        ("conv_2", [15, 0, 3]),
        ("relu_3", [5, 0, 119, 7]),
        ("relu_4", [83, 1]),
        ("fc_3", [9, 2]),
    ):
        a, *others = both_paths(net, x, y, layer, units=units)
        for b in others:
            assert a.units.tolist() == b.units.tolist() == (units or list(range(len(a.units))))
            assert a.base_acc == pytest.approx(b.base_acc, abs=1e-9) and a.base_loss == pytest.approx(
                b.base_loss, abs=1e-6
            )
            assert torch.allclose(a.acc_drop, b.acc_drop, atol=1e-6), layer
            assert torch.allclose(a.loss_rise, b.loss_rise, atol=1e-6), layer
            assert torch.allclose(a.loss_rise_se, b.loss_rise_se, atol=1e-6), layer
            assert torch.equal(a.dead, b.dead), layer
        assert a.loss_rise.abs().max() > 1e-4, layer


def test_batched_path_runs_few_forward_passes():
    net = lenet()
    x, y = data(300)
    calls = {"conv_1": 0, "fc_3": 0}
    handles = [
        getattr(net, name).register_forward_pre_hook(lambda m, i, name=name: calls.__setitem__(name, calls[name] + 1))
        for name in calls
    ]
    try:
        ablation_importance(net, x, y, "relu_3", chunk_size=4096)  # 120 units x 300 samples = 36000 = 9 passes
    finally:
        for h in handles:
            h.remove()
    assert calls == {"conv_1": 1, "fc_3": 1 + 9}  # the head once; the tail once for the base and 9 times ablated


def test_split_follows_a_custom_forward_and_nested_layers():
    class Custom(LeNet5):  # an nn.Sequential whose forward is its own: splitting its children would drop the * 2
        def forward(self, x):
            return super().forward(x) * 2

    torch.manual_seed(0)
    custom = Custom().eval()
    x, y = data(40)
    head, tail = importance._traced_split(custom, "relu_3")
    torch.testing.assert_close(tail(*head(x)), custom(x))  # the traced tail keeps the custom forward's * 2
    nested = nn.Sequential(OrderedDict(body=custom))
    a = ablation_importance(nested, x, y, "body.relu_2")
    b = ablation_importance(Wrapper(custom), x, y, "body.relu_2")
    c = hooked(custom, x, y, "relu_2")
    assert torch.equal(a.acc_drop, b.acc_drop) and torch.equal(a.loss_rise, b.loss_rise)
    assert torch.equal(a.acc_drop, c.acc_drop) and torch.allclose(a.loss_rise, c.loss_rise, atol=1e-6)


def test_traced_split_of_a_resnet_equals_the_hook_and_runs_the_head_once():
    """torchvision's ResNet-18 is no nn.Sequential: torch.fx splits it at the layer, carrying over what crosses it
    (the block input that a residual add needs, for a conv inside a block), and the head runs once."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    x, y = torch.randn(12, 3, 32, 32), torch.arange(12) % 10
    for layer, units in (("layer4", [0, 7, 511]), ("layer2.0.conv1", [3, 100])):
        split = importance._traced_split(net, layer)
        assert split is not None and len(split[0](x[:2])) == (1 if layer == "layer4" else 2), layer
        a, b = ablation_importance(net, x, y, layer, units=units), hooked(net, x, y, layer, units=units)
        assert a.units.tolist() == b.units.tolist() == units
        assert torch.allclose(a.acc_drop, b.acc_drop, atol=1e-6) and torch.allclose(a.loss_rise, b.loss_rise, atol=1e-5)
        assert a.loss_rise.abs().max() > 1e-4, layer
    stem = []
    handle = net.conv1.register_forward_pre_hook(lambda m, i: stem.append(len(i[0])))
    try:
        ablation_importance(net, x, y, "layer4", units=list(range(64)))
    finally:
        handle.remove()
    assert stem == [12]  # the stem ran once over the 12 samples, not once per unit
    assert no_hooks(net)


def test_a_net_torch_fx_cannot_trace_falls_back_to_the_hook():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = lenet()

        def forward(self, x):
            out = self.body(x)
            return out if bool(out.sum() > -1e9) else -out  # data-dependent control flow: torch.fx cannot trace it

    net = Branchy().eval()
    x, y = data(30)
    assert importance._traced_split(net, "body.relu_3") is None
    a, b = ablation_importance(net, x, y, "body.relu_3", units=[0, 5]), hooked(net, x, y, "body.relu_3", units=[0, 5])
    assert torch.equal(a.acc_drop, b.acc_drop) and torch.equal(a.loss_rise, b.loss_rise)


@pytest.mark.parametrize("layer", ["relu_1", "relu_3"])
def test_chunk_size_does_not_change_the_result(layer):
    net = lenet(5)
    x, y = data(50, seed=6)
    ref = ablation_importance(net, x, y, layer, chunk_size=100_000)  # every unit in one pass
    for chunk in (7, 50, 64, 333):  # fewer samples than the set, exactly the set, across unit boundaries
        abl = ablation_importance(net, x, y, layer, chunk_size=chunk)
        assert torch.equal(abl.acc_drop, ref.acc_drop), chunk
        assert torch.allclose(abl.loss_rise, ref.loss_rise, atol=1e-6, rtol=0), chunk
        assert abl.base_acc == ref.base_acc and abl.base_loss == pytest.approx(ref.base_loss, abs=1e-7)


# --------------------------------------------------------------------------------- variance and correlation
def test_variance_importance_known_answers():
    acts = torch.tensor([[1.0, 0.0], [3.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    assert variance_importance(acts).tolist() == [1.0, 0.0]  # population variance: mean 2, deviations +-1
    conv = torch.zeros(2, 2, 2, 2)
    conv[0, 0] = 0.0  # channel 0: spatial means 0 and 2 -> variance 1
    conv[1, 0] = 2.0
    conv[0, 1] = torch.tensor([[1.0, 3.0], [0.0, 0.0]])  # channel 1: different maps, the same mean 1 -> 0
    conv[1, 1] = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    assert variance_importance(conv).tolist() == [1.0, 0.0]
    assert variance_importance(torch.ones(1, 3)).tolist() == [0.0, 0.0, 0.0]  # one sample: 0, not NaN
    assert variance_importance(acts.double()).dtype == torch.float64
    assert variance_importance(acts.half()).dtype == torch.float32
    with pytest.raises(ValueError, match="non-empty tensor"):
        variance_importance(torch.ones(3))


def test_rank_correlation_known_answers():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert rank_correlation(a, a**3) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    # ties share their average rank: ranks [3, 1, 2] and [3, 1.5, 1.5] -> 1.5 / sqrt(2 * 1.5)
    assert rank_correlation(torch.tensor([1.0, 0.0, 1 / 3]), torch.tensor([0.5, 0.0, 0.0])) == pytest.approx(
        math.sqrt(3) / 2
    )
    # ranks [1.5, 1.5, 3, 4] and [1, 2, 3, 4]: centred [-1, -1, .5, 1.5] and [-1.5, -.5, .5, 1.5] -> 4.5 / sqrt(4.5 * 5)
    assert rank_correlation(torch.tensor([1.0, 1.0, 2.0, 3.0]), a) == pytest.approx(3 / math.sqrt(10))
    assert math.isnan(rank_correlation(a, torch.zeros(4)))  # constant: undefined
    assert math.isnan(rank_correlation(a[:1], a[:1]))
    assert rank_correlation(
        torch.tensor([1.0, float("nan"), 2.0, 3.0]), torch.tensor([3.0, 0.0, 2.0, 1.0])
    ) == pytest.approx(-1.0)


# -------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "wrapped"])
@pytest.mark.parametrize(
    "layer, units, match",
    [
        ("conv_9", None, r"unknown layer name.*conv_9.*valid: .*conv_1"),
        ("relu_1", [2, 6], r"unit index\(es\) \[6\] out of range for layer '.*relu_1': it has 6 units, valid 0..5"),
        ("relu_3", [-1], r"out of range for layer '.*relu_3': it has 120 units, valid 0..119"),
        ("relu_1", [], r"empty unit list for layer '.*relu_1'; give indices in 0..5"),
    ],
)
def test_bad_layer_or_unit(wrap, layer, units, match):
    net = lenet()
    x, y = data(4)
    model, name = (Wrapper(net), f"body.{layer}") if wrap else (net, layer)
    with pytest.raises(LayerError, match=match):
        ablation_importance(model, x, y, name, units=units)
    assert no_hooks(model)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"y": torch.zeros(3, dtype=torch.long)}, r"y must have shape \(4,\)"),
        ({"y": torch.zeros(4)}, "y must be integer class indices"),
        ({"y": torch.tensor([0, 1, 10, 2])}, r"class indices in 0..9 \(the net has 10 classes\), got \[10\]"),
        ({"x": torch.zeros(0, 1, 28, 28), "y": torch.zeros(0, dtype=torch.long)}, "x is empty"),
        ({"chunk_size": 0}, "chunk_size must be an integer >= 1"),
    ],
)
def test_argument_errors(kwargs, match):
    net = lenet().train()
    x, y = data(4)
    args = {"x": x, "y": y, **kwargs}
    for model, layer in ((net, "relu_2"), (Wrapper(net), "body.relu_2")):
        with pytest.raises(ValueError, match=match):
            ablation_importance(model, args["x"], args["y"], layer, chunk_size=kwargs.get("chunk_size", 64))
        assert no_hooks(model) and net.training and all(m.training for m in net.modules())


# ------------------------------------------------------------------------------------------ mode hygiene
@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode, torch.enable_grad])
def test_modes_restored_no_hooks_left_and_dropout_off(context):
    torch.manual_seed(0)
    net = DeepCNN(dropout=0.5)
    net.train()
    net.conv_2.eval()  # a mixed state, restored module by module
    modes = {m: m.training for m in net.modules()}
    x, y = data(24)
    with context():
        a = ablation_importance(net, x, y, "relu_4", units=[0, 100, 255])
        b = ablation_importance(Wrapper(net), x, y, "body.relu_4", units=[0, 100, 255])
    assert {m: m.training for m in net.modules()} == modes
    assert no_hooks(net)
    assert torch.allclose(a.acc_drop, b.acc_drop, atol=1e-6) and torch.allclose(a.loss_rise, b.loss_rise, atol=1e-6)
    assert not a.acc_drop.requires_grad


def test_hooks_removed_when_the_forward_pass_fails():
    class Fails(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = LeNet5()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("boom")
            return self.body(x)

    net = Fails().train()
    x, y = data(4)
    with pytest.raises(RuntimeError, match="boom"):  # the hook path (a net torch.fx cannot trace): its third pass
        hooked(net, x, y, "body.relu_2")
    assert no_hooks(net) and all(m.training for m in net.modules())


# ------------------------------------------------------------------------------------------------ the callback
def render(cb, net, x, y, classes, step=3):
    cb.configure(net, layer_shapes(net, x.shape[1:]))  # as setup does (resolves the default layers)
    return render_once(cb, net, x, y, classes, step=step, callbacks=[cb])


def toy_set():
    """Class 0: x0 in [1, 2] (unit 0 fires, the net says 0); class 1: x0 = 0 (unit 0 silent, the net says 1)."""
    x0 = torch.cat([torch.linspace(1, 2, 5), torch.zeros(5)])
    x = torch.stack([x0, torch.ones(10)], 1)
    return x, torch.tensor([0] * 5 + [1] * 5)


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


def test_callback_known_scalars_and_picture():
    x, y = toy_set()
    cb = ImportanceCallback(per_class=5)
    w = render(cb, mlp_one_unit(), x, y, ("a", "b"))
    assert cb.layer_names == ["relu_1"] and cb.layers is None  # the user's argument is kept as given
    assert set(w.images) == {"importance/relu_1"}
    img, step = w.images["importance/relu_1"]
    assert step == 3 and img.dtype == torch.uint8 and img.shape[0] == 3
    assert img.shape[2] <= 720 and img.shape[1] > img.shape[2]  # composed for a card: taller than wide
    chart = next(iter(cb._charts.values()))
    (bar0, bar1, bar2), ax = chart.bars, chart.bars_ax
    # unit 0's loss rise: class-0 samples (x0 = 1 .. 2) go from log1p(e^(0.5 - x0)) to log1p(e^0.5), class 1 nothing
    diffs = [math.log1p(math.exp(0.5)) - math.log1p(math.exp(0.5 - v)) for v in x[:5, 0].tolist()] + [0.0] * 5
    rise = sum(diffs) / 10
    se = math.sqrt(sum((d - rise) ** 2 for d in diffs) / 9 / 10)
    assert bar0.get_height() == pytest.approx(rise, abs=1e-6) and bar1.get_height() == bar2.get_height() == 0
    assert rise > 2 * se and bar0.get_facecolor()[:3] == pytest.approx(matplotlib.colors.to_rgb(RED))  # filled
    assert bar1.get_facecolor()[:3] == (1.0, 1.0, 1.0)  # 0 is within 2 SE (of 0): hollow
    (lo, hi) = chart.whiskers.get_segments()[0][:, 1]
    assert (lo, hi) == pytest.approx((rise - 2 * se, rise + 2 * se), abs=1e-6)  # the whisker: +-2 SE
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]  # unit 0 first, then by index (stable)
    # the bar is drawn filled: a pixel inside it, off the whisker, has the bar colour
    ((cx, cy),) = chart.live.to_pixels(ax, [(0.25, rise / 2)]).round().astype(int)
    assert tuple(img[:, cy, cx].tolist()) == rgb(RED)
    assert chart.dead_note.text == "no dead units"
    s = {tag: v for tag, (v, _) in w.scalars.items()}
    # unit 0 drop 0.5 (class 0 lost), units 1 and 2 nothing; selectivity [1, 0, 1/3] (unit 2 = relu(3 - x0))
    assert s["importance/relu_1/max_acc_drop"] == pytest.approx(0.5)
    assert s["importance/relu_1/mean_acc_drop"] == pytest.approx(0.5 / 3)
    assert s["importance/relu_1/max_loss_rise"] == pytest.approx(rise, abs=1e-6)
    assert s["importance/relu_1/mean_loss_rise"] == pytest.approx(rise / 3, abs=1e-6)
    # selectivity [1, 0, 1/3] against loss rise [rise, 0, 0]: ranks [3, 1, 2] and [3, 1.5, 1.5]
    assert s["importance/relu_1/selectivity_corr"] == pytest.approx(math.sqrt(3) / 2)
    assert chart.scatters[0][0].get_title() == f"Spearman r {math.sqrt(3) / 2:+.2f}"  # the picture says the same
    assert -1 <= s["importance/relu_1/variance_corr"] <= 1
    assert all(v[1] == 3 for v in w.scalars.values())


def test_callback_picture_changes_with_the_net_and_keeps_its_size():
    x, y = data(60, seed=2)
    y = torch.arange(60) % 10
    cb = ImportanceCallback(per_class=3, top=4)
    first = render(cb, lenet(0), x, y, tuple(str(c) for c in range(10)), step=0).images["importance/relu_3"][0]
    again = render(cb, lenet(1), x, y, tuple(str(c) for c in range(10)), step=1).images["importance/relu_3"][0]
    assert first.shape == again.shape and not torch.equal(first, again)
    assert has_colour(first, rgb(RED))


def test_callback_skips_undefined_correlations():
    x, y = toy_set()
    net = mlp_one_unit()
    with torch.no_grad():
        net.fc_2.weight.zero_()  # nothing matters: every drop is 0, the correlations are undefined
    w = render(ImportanceCallback(per_class=5), net, x, y, ("a", "b"))
    assert set(w.scalars) == {
        f"importance/relu_1/{s}" for s in ("max_acc_drop", "mean_acc_drop", "max_loss_rise", "mean_loss_rise")
    }
    assert w.scalars["importance/relu_1/max_acc_drop"][0] == 0.0
    assert w.scalars["importance/relu_1/max_loss_rise"][0] == 0.0


def test_callback_renders_the_last_two_relus_by_default_and_any_layers_asked_for():
    x, y = data(60, seed=2)
    y = torch.arange(60) % 10
    classes = tuple(str(c) for c in range(10))
    w = render(ImportanceCallback(per_class=3, top=4), lenet(), x, y, classes)
    assert set(w.images) == {"importance/relu_3", "importance/relu_4"}
    relus = [f"relu_{i}" for i in range(1, 5)]
    w = render(ImportanceCallback(layers=relus, per_class=3, top=4), lenet(), x, y, classes)
    assert set(w.images) == {f"importance/{n}" for n in relus}
    for n in relus:
        assert {f"importance/{n}/max_acc_drop", f"importance/{n}/mean_acc_drop"} <= set(w.scalars)
        assert w.images[f"importance/{n}"][0].shape[2] <= 720


def test_callback_arguments_and_defaults():
    cb = ImportanceCallback()
    assert (cb.layers, cb.top, cb.per_class, cb.every_n_epochs, cb.enabled, cb.strict) == (None, 16, 50, 5, True, False)
    assert ImportanceCallback(every_n_epochs=1, enabled=False, strict=True).every_n_epochs == 1
    doc = inspect.getdoc(ImportanceCallback)
    for arg in ("layers", "top", "per_class", "chunk_size", "max_units", "max_samples", "every_n_epochs"):
        assert f"    {arg}: " in doc.split("Args:")[1], arg
    # the ablation's samples are capped in all (units x samples passes): 50 per class at 10 classes, 5 at 100
    assert [cb.samples_per_class(k) for k in (10, 100, 1000)] == [50, 5, 1]
    assert ImportanceCallback(per_class=3, max_samples=20).samples_per_class(10) == 2
    for kwargs, match in (
        ({"top": 0}, "top must be an integer >= 1, got 0"),
        ({"top": True}, "top must be an integer >= 1, got True"),
        ({"chunk_size": 2.5}, "chunk_size must be an integer >= 1, got 2.5"),
        ({"max_units": 0}, "max_units must be an integer >= 1, got 0"),
        ({"per_class": 0}, "per_class must be an integer >= 1, got 0"),
        ({"max_samples": 0}, r"max_samples must be an integer in 1..5000 \(the fixed set's budget\), got 0"),
        ({"max_samples": 5001}, r"max_samples must be an integer in 1..5000 \(the fixed set's budget\), got 5001"),
        ({"every_n_epochs": 0}, "every_n_epochs must be an integer >= 1, got 0"),
        ({"layers": "relu_1"}, "layers must be a list of layer names"),
    ):
        with pytest.raises(ValueError, match=f"ImportanceCallback: {match}"):
            ImportanceCallback(**kwargs)
    net = lenet()
    cb = ImportanceCallback(layers=["relu_1", "relu_9"])
    with pytest.raises(LayerError, match=r"ImportanceCallback: unknown layer name.*relu_9.*valid: conv_1"):
        cb.configure_for(net, (1, 28, 28))
    cb = ImportanceCallback()
    cb.configure(net, layer_shapes(net))
    assert cb.layer_names == ["relu_3", "relu_4"] and cb.layers is None


def test_a_wide_layer_ablates_max_units_evenly_spread_units_with_their_own_indices():
    x, y = data(60, seed=2)
    y = torch.arange(60) % 10
    net = lenet()
    cb = ImportanceCallback(layers=["relu_3"], per_class=3, top=4, max_units=10)  # relu_3 has 120 units
    w = render(cb, net, x, y, tuple(str(c) for c in range(10)))
    chart = next(iter(cb._charts.values()))
    sampled = [0, 13, 26, 40, 53, 66, 79, 93, 106, 119]  # the first and the last, evenly spaced
    _, rest, best = chart.scatters[0]
    assert len(rest.get_offsets()) + len(best.get_offsets()) == 10  # a dot per ablated unit
    expected = ablation_importance(net, x[:30], y[:30], "relu_3", units=sampled)  # the fixed set: 3 per class
    order = np.argsort(-expected.loss_rise.numpy(), kind="stable")[:4]
    assert [t.get_text() for t in chart.bars_ax.get_xticklabels()] == [str(sampled[i]) for i in order]
    assert w.scalars["importance/relu_3/max_acc_drop"][0] == pytest.approx(float(expected.acc_drop.max()))
    assert ImportanceCallback(max_units=None).max_units is None  # every unit, as asked


def average_ranks(v):
    """0-based ranks, tied values sharing the mean of their positions, in numpy."""
    v = np.asarray(v, np.float64)
    r = np.empty(len(v))
    r[np.argsort(v, kind="stable")] = np.arange(len(v))
    for u in np.unique(v):
        r[v == u] = r[v == u].mean()
    return r


def spearman_by_hand(a, b) -> float:
    """Pearson's r of the average ranks, in numpy."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


def test_callback_leaves_dead_units_out_of_the_correlations_and_counts_them():
    x, _ = data(100, seed=2)
    y = torch.arange(100) % 10
    net = lenet()
    with torch.no_grad():
        net.fc_1.bias[:30] -= 100.0  # relu_3 units 0..29 dead on every sample
    cb = ImportanceCallback(layers=["relu_3"], per_class=10, top=4)
    w = render(cb, net, x, y, tuple(str(c) for c in range(10)))
    acts = capture_activations(net, x, ["relu_3"])["relu_3"].double().numpy()  # (100, 120)
    dead = (acts == 0).all(0)
    assert dead[:30].all() and dead.sum() >= 30
    rise = ablation_importance(net, x, y, "relu_3").loss_rise.double().numpy()
    means = np.stack([acts[y.numpy() == c].mean(0) for c in range(10)])  # (10, 120) class means
    mu_max = means.max(0)
    mu_rest = (means.sum(0) - mu_max) / 9
    with np.errstate(invalid="ignore"):
        si = np.where(mu_max + mu_rest > 0, (mu_max - mu_rest) / (mu_max + mu_rest), 0.0)
    live = ~dead
    expected = spearman_by_hand(si[live], rise[live])
    assert w.scalars["importance/relu_3/selectivity_corr"][0] == pytest.approx(expected, abs=1e-6)
    assert abs(spearman_by_hand(si, rise) - expected) > 0.02  # with the dead units it would differ: the test can tell
    chart = next(iter(cb._charts.values()))
    assert chart.dead_note.text == f"{int(dead.sum())} dead units (zero on every sample) left out"
    _, rest, best = chart.scatters[0]
    assert len(rest.get_offsets()) + len(best.get_offsets()) == int(live.sum())  # a dot per live unit only
