"""Top activations (callbacks/top_activations.py): receptive fields by hand and by gradient support, top-k against a
brute-force search, planted bright spots, patch geometry, deconvnet crops and the callback's picture."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from callbacks.hooks import LayerError, RunningTop
from callbacks.methods.deconv import deconvnet_from_seed
from callbacks.methods.top_activations import (
    ReceptiveField,
    patches,
    projected_patches,
    receptive_field,
    rf_box,
    top_activations,
    top_activations_of,
)
from callbacks.top_activations import TopActivationsCallback
from lit_modules.nets import MLP, DeepCNN, LeNet5, SimpleCNN
from tests.conftest import has_colour
from tests.conftest import render_once as render


# ------------------------------------------------------------------------------------------------------ helpers
def no_hooks_left(net: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks and not m._backward_pre_hooks
        for m in net.modules()
    )


def positive(net: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter positive (so every ReLU is active on positive inputs and no gradient cancels)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.rand(p.shape, generator=g) + 0.1)
    return net.eval()


def geometry_net() -> nn.Sequential:
    """Kernel/stride/padding/dilation variety (ints, tuples, 'same', a nested block), gap-free fields."""
    return nn.Sequential(
        OrderedDict(
            conv_1=nn.Conv2d(1, 2, kernel_size=(3, 3), padding=1),
            relu_1=nn.ReLU(),
            pool_1=nn.AvgPool2d(3, stride=2, padding=1),
            block=nn.Sequential(
                OrderedDict(
                    bn=nn.BatchNorm2d(2),
                    conv=nn.Conv2d(2, 2, kernel_size=3, dilation=2, padding=(2, 2)),
                    drop=nn.Dropout(0.5),
                )
            ),
            conv_3=nn.Conv2d(2, 2, kernel_size=4, stride=2, padding=1),
            conv_4=nn.Conv2d(2, 1, kernel_size=3, padding="same"),
            pool_2=nn.AvgPool2d(kernel_size=(2, 2), stride=(1, 1)),
        )
    )


def output_of(net: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    out = {}
    h = dict(net.named_modules())[layer].register_forward_hook(lambda m, i, o: out.setdefault("a", o))
    try:
        net(x)
    finally:
        h.remove()
    return out["a"]


def support_box(g: torch.Tensor) -> tuple[int, int, int, int]:
    rows = torch.nonzero(g.abs().sum(0) != 0)
    return int(rows[:, 0].min()), int(rows[:, 1].min()), int(rows[:, 0].max()) + 1, int(rows[:, 1].max()) + 1


def spot_lenet() -> LeNet5:
    """LeNet5 whose conv_1 unit 0 is a centre-peaked 5x5 filter without bias: its strongest response to an image
    with one bright pixel sits exactly on that pixel (conv_1: 5x5, pad 2, so position (r, c) is centred on (r, c))."""
    torch.manual_seed(0)
    net = LeNet5().eval()
    with torch.no_grad():
        d = torch.arange(5.0) - 2
        net.conv_1.weight[0, 0] = torch.exp(-(d[:, None] ** 2 + d[None, :] ** 2))  # peak 1 at the centre
        net.conv_1.bias[0] = 0.0
    return net


def spot_images() -> torch.Tensor:
    """Ten blank images; image 6 has a bright pixel (value 3) at (11, 17), image 2 a dimmer one (2) at (4, 25),
    image 9 a faint one (1) at (20, 2)."""
    x = torch.zeros(10, 1, 28, 28)
    x[6, 0, 11, 17] = 3.0
    x[2, 0, 4, 25] = 2.0
    x[9, 0, 20, 2] = 1.0
    return x


# ---------------------------------------------------------------------------------------------- receptive fields
@pytest.mark.parametrize(
    "layer, expected",
    [
        ("conv_1", (5, 1, 0.0)),
        ("relu_1", (5, 1, 0.0)),
        ("max_pool_1", (6, 2, 0.5)),
        ("conv_2", (14, 2, 4.5)),
        ("relu_2", (14, 2, 4.5)),
        ("max_pool_2", (16, 4, 5.5)),
    ],
)
def test_receptive_field_lenet5_by_hand(layer, expected):
    rf = receptive_field(LeNet5(), layer)
    assert isinstance(rf, ReceptiveField) and tuple(rf) == expected


def test_receptive_field_other_nets_by_hand():
    # 3x3 pad 1 convs and 2x2 pools: sizes 3, 4, 8, 10, 18, 22, 38; strides double at each pool
    deep = DeepCNN()
    assert tuple(receptive_field(deep, "relu_1")) == (3, 1, 0.0)
    assert tuple(receptive_field(deep, "max_pool_1")) == (4, 2, 0.5)
    assert tuple(receptive_field(deep, "conv_3")) == (18, 4, 1.5)
    assert tuple(receptive_field(deep, "relu_4")) == (38, 8, 3.5)
    assert tuple(receptive_field(SimpleCNN(), "max_pool_2")) == (10, 4, 1.5)
    # the geometry net, (size, stride, start): conv 3 pad 1 (3, 1, 0); avg 3/2 pad 1 (5, 2, 0); dilated 3x3 d 2
    # pad 2 (13, 2, 0); 4/2 pad 1 (19, 4, 1); 3 'same' (27, 4, 1); 2/1 (31, 4, 3)
    net = geometry_net()
    assert [tuple(receptive_field(net, n)) for n in ("pool_1", "block.conv", "conv_3", "conv_4", "pool_2")] == [
        (5, 2, 0.0),
        (13, 2, 0.0),
        (19, 4, 1.0),
        (27, 4, 1.0),
        (31, 4, 3.0),
    ]
    net = nn.Sequential(OrderedDict(pool=nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=2)))
    assert tuple(receptive_field(net, "pool")) == (5, 2, 1.0)  # effective kernel 5, left padding 1
    assert tuple(receptive_field(geometry_net(), "block")) == tuple(receptive_field(geometry_net(), "block.drop"))


def test_rf_box_by_hand():
    rf = receptive_field(LeNet5(), "max_pool_2")  # position j covers pixels 4j - 2 .. 4j + 13
    assert rf_box(rf, 0, 0, (28, 28)) == (0, 0, 14, 14)  # clipped at the top-left
    assert rf_box(rf, 2, 3, (28, 28)) == (6, 10, 22, 26)
    assert rf_box(rf, 4, 4, (28, 28)) == (14, 14, 28, 28)  # 14..29, clipped to 28
    assert rf_box(receptive_field(LeNet5(), "conv_1"), 0, 27, (28, 28)) == (0, 25, 3, 28)


@pytest.mark.parametrize("layer", ["relu_1", "pool_1", "block.conv", "block", "conv_3", "conv_4", "pool_2"])
def test_rf_box_equals_gradient_support_every_position(layer):
    """With positive weights and inputs nothing cancels, so the input gradient of one output position is non-zero
    exactly on its receptive field (clipped to the image)."""
    net = positive(geometry_net()).double()
    x = torch.rand(1, 1, 23, 21, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 0.1
    rf = receptive_field(net, layer)
    x.requires_grad_(True)
    out = output_of(net, x, layer)
    h, w = out.shape[-2:]
    for r in range(h):
        for c in range(w):
            (g,) = torch.autograd.grad(out[0, :, r, c].sum(), x, retain_graph=True)
            assert support_box(g[0]) == rf_box(rf, r, c, (23, 21)), (layer, r, c)


@pytest.mark.parametrize("layer", ["conv_1", "max_pool_1", "conv_2", "max_pool_2"])
def test_rf_box_equals_gradient_support_lenet5_geometry(layer):
    """LeNet5 with its max-pools as average pools (same geometry): box == support at an interior position."""
    net = positive(LeNet5())
    net.max_pool_1, net.max_pool_2 = nn.AvgPool2d(2), nn.AvgPool2d(2)
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    rf = receptive_field(net, layer)
    out = output_of(net, x, layer)
    r, c = out.shape[-2] // 2, out.shape[-1] // 2 - 1
    (g,) = torch.autograd.grad(out[0, :, r, c].sum(), x)
    box = rf_box(rf, r, c, (28, 28))
    assert box[2] - box[0] == rf.size and box[3] - box[1] == rf.size  # interior: not clipped
    assert support_box(g[0]) == box


def test_max_pool_gradient_support_lies_inside_the_box(lenet):
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    rf = receptive_field(lenet, "max_pool_2")
    out = output_of(lenet, x, "max_pool_2")
    for r, c in [(0, 0), (2, 3), (4, 4)]:
        (g,) = torch.autograd.grad(out[0, :, r, c].sum(), x, retain_graph=True)
        t, left, b, rt = rf_box(rf, r, c, (28, 28))
        assert g[0, 0, t:b, left:rt].abs().sum() > 0
        assert g[0, 0].abs().sum() == pytest.approx(float(g[0, 0, t:b, left:rt].abs().sum()))


def test_receptive_field_errors():
    with pytest.raises(LayerError, match=r"unknown layer name\(s\) \['conv_9'\].*valid: conv_1, relu_1"):
        receptive_field(LeNet5(), "conv_9")
    with pytest.raises(LayerError, match=r"'fc_1' has no spatial receptive field.*'flatten'"):
        receptive_field(LeNet5(), "fc_1")
    with pytest.raises(LayerError, match="'relu_1' has no spatial receptive field"):
        receptive_field(MLP(), "relu_1")
    with pytest.raises(LayerError, match=r"square geometry only.*kernel_size \(3, 5\)"):
        receptive_field(nn.Sequential(OrderedDict(c=nn.Conv2d(1, 1, (3, 5)))), "c")
    with pytest.raises(LayerError, match=r"geometry of 'up' \(Upsample\) is unknown"):
        receptive_field(nn.Sequential(OrderedDict(up=nn.Upsample(scale_factor=2), c=nn.Conv2d(1, 1, 3))), "c")


# ----------------------------------------------------------------------------------------------- top activations
def brute_force(net, images, layer, units, k):
    """Scores of every image at once, ranked with a stable sort (lower index first on ties)."""
    with torch.no_grad():
        a = output_of(net, images, layer)[:, units]
    spatial = a.dim() == 4
    scores = a.flatten(2).amax(2) if spatial else a  # (N, U)
    order = torch.sort(scores.T, dim=1, descending=True, stable=True).indices[:, :k]  # (U, k)
    values = scores.T.gather(1, order)
    if not spatial:
        return values, order, None
    w = a.shape[-1]
    flat = torch.stack([a[order[i], i].flatten(1).argmax(1) for i in range(len(units))])  # (U, k)
    return values, order, torch.stack([flat // w, flat % w], -1)


@pytest.mark.parametrize(
    "layer, units",
    [("relu_1", [0, 3, 5]), ("max_pool_2", [15, 2]), ("conv_2", [7]), ("relu_3", [0, 119, 4]), ("fc_3", [9, 0])],
)
def test_top_activations_match_brute_force(layer, units):
    torch.manual_seed(4)
    net = LeNet5().double().eval()
    x = torch.randn(53, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    got = top_activations(net, x, layer, units, k=6, batch_size=7)  # 8 batches: the running top-k is merged
    values, indices, positions = brute_force(net, x, layer, units, 6)
    assert torch.equal(got.indices, indices)
    assert torch.allclose(got.values, values, rtol=1e-12, atol=1e-12)
    assert got.indices.dtype == torch.long and got.values.shape == (len(units), 6)
    assert (got.values[:, :-1] >= got.values[:, 1:]).all()  # descending
    if positions is None:
        assert got.positions is None
    else:
        assert got.positions.dtype == torch.long and torch.equal(got.positions, positions)


def test_several_layers_in_one_pass_equal_one_search_per_layer():
    """``top_activations_of`` runs the net once per batch for every layer: the same answers as a brute force per
    layer, with the net called ceil(N / batch_size) times, not once per layer and batch."""
    torch.manual_seed(4)
    net = LeNet5().double().eval()
    x = torch.randn(53, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    layers = {"relu_1": [0, 3, 5], "max_pool_2": [15, 2], "fc_3": [9, 0]}
    calls = []
    handle = net.register_forward_pre_hook(lambda m, i: calls.append(len(i[0])))
    got = top_activations_of(net, x, layers, k=6, batch_size=7)
    handle.remove()
    assert calls == [7] * 7 + [4]
    for layer, units in layers.items():
        values, indices, positions = brute_force(net, x, layer, units, 6)
        assert torch.equal(got[layer].indices, indices)
        assert torch.allclose(got[layer].values, values, rtol=1e-12, atol=1e-12)
        assert (got[layer].positions is None) == (positions is None)
        if positions is not None:
            assert torch.equal(got[layer].positions, positions)
    with pytest.raises(LayerError, match="relu_9"):
        top_activations_of(net, x, {"relu_1": [0], "relu_9": [0]}, k=2)


def test_planted_spots_are_found_in_order_at_their_positions():
    net, x = spot_lenet(), spot_images()
    top = top_activations(net, x, "conv_1", [0], k=3, batch_size=4)
    assert top.indices.tolist() == [[6, 2, 9]]
    assert top.positions.tolist() == [[[11, 17], [4, 25], [20, 2]]]
    assert top.values.tolist() == [[pytest.approx(3.0), pytest.approx(2.0), pytest.approx(1.0)]]
    # max_pool_1 position (r, c) covers conv_1 positions 2r..2r+1: the spot at (11, 17) is at pooled (5, 8)
    top = top_activations(net, x, "max_pool_1", [0], k=1)
    assert top.indices.tolist() == [[6]] and top.positions.tolist() == [[[5, 8]]]


def test_ties_keep_the_lower_image_index():
    net = spot_lenet()
    x = torch.zeros(12, 1, 28, 28)  # every image gives the same response
    top = top_activations(net, x, "relu_1", [0, 1], k=5, batch_size=5)
    assert top.indices.tolist() == [[0, 1, 2, 3, 4]] * 2
    assert top.positions[0].tolist() == [[0, 0]] * 5  # a constant map: the first position


def test_nan_activations_never_win(lenet):
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(6))
    x[2] = float("nan")
    top = top_activations(lenet, x, "relu_3", [0, 1], k=5)
    assert 2 not in top.indices.flatten().tolist()


def test_dropout_is_off_while_searching():
    torch.manual_seed(14)
    net = DeepCNN(dropout=0.9)
    x = torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(15))
    expected = top_activations(net.eval(), x, "fc_1", list(range(10)), k=4)
    got = top_activations(net.train(), x, "fc_1", list(range(10)), k=4)
    assert net.training and net.dropout.training
    assert torch.equal(got.indices, expected.indices) and torch.equal(got.values, expected.values)


def test_top_activations_argument_errors(lenet):
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(ValueError, match=r"k must be in 1\.\.4 \(the number of images\), got k=5"):
        top_activations(lenet, x, "relu_1", [0], k=5)
    with pytest.raises(ValueError, match=r"k must be in 1\.\.4.*got k=0"):
        top_activations(lenet, x, "relu_1", [0], k=0)
    with pytest.raises(ValueError, match="k must be an integer"):
        top_activations(lenet, x, "relu_1", [0], k=2.0)
    with pytest.raises(
        LayerError,
        match=r"unit index\(es\) \[6\] out of range for layer 'relu_1': it has 6 units, "
        r"valid 0\.\.5",
    ):
        top_activations(lenet, x, "relu_1", [0, 6], k=2)
    with pytest.raises(LayerError, match="empty unit list"):
        top_activations(lenet, x, "relu_1", [], k=2)
    with pytest.raises(LayerError, match=r"unknown layer name\(s\) \['relu_9'\].*valid: conv_1"):
        top_activations(lenet, x, "relu_9", [0], k=2)
    with pytest.raises(ValueError, match=r"4-D tensor \(N, C, H, W\), got shape \(1, 28, 28\)"):
        top_activations(lenet, x[0], "relu_1", [0], k=1)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        top_activations(lenet, x, "relu_1", [0], k=1, batch_size=0)
    assert no_hooks_left(lenet)


def test_modes_restored_hooks_removed_and_no_grad_contexts(lenet):
    x = torch.rand(9, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    lenet.train()
    lenet.relu_2.eval()  # a mixed state must come back as it was
    modes = {name: m.training for name, m in lenet.named_modules()}
    rf = receptive_field(lenet, "max_pool_2")
    plain = top_activations(lenet, x, "max_pool_2", [1, 4], k=3)
    proj = projected_patches(lenet, x, "max_pool_2", [1, 4], plain.indices, plain.positions, rf)
    assert {name: m.training for name, m in lenet.named_modules()} == modes
    assert no_hooks_left(lenet)
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx():
            top = top_activations(lenet, x, "max_pool_2", [1, 4], k=3)
            again = projected_patches(lenet, x, "max_pool_2", [1, 4], top.indices, top.positions, rf)
        assert torch.equal(top.indices, plain.indices) and torch.equal(top.positions, plain.positions)
        assert torch.allclose(again, proj)
    for batch in (1, 4):  # in batches (a large net's backward within its byte budget): the same projections
        torch.testing.assert_close(
            projected_patches(lenet, x, "max_pool_2", [1, 4], plain.indices, plain.positions, rf, batch_size=batch),
            proj,
        )
        fc = top_activations(lenet, x, "relu_3", [2, 5], k=3)
        whole = projected_patches(lenet, x, "relu_3", [2, 5], fc.indices, None, None)
        torch.testing.assert_close(
            projected_patches(lenet, x, "relu_3", [2, 5], fc.indices, None, None, batch_size=batch), whole
        )
    with pytest.raises(LayerError, match="out of range"):  # raised inside the deconvnet: hooks still removed
        projected_patches(lenet, x, "max_pool_2", [16], plain.indices[:1], plain.positions[:1], rf)
    assert no_hooks_left(lenet)
    assert {name: m.training for name, m in lenet.named_modules()} == modes


# ------------------------------------------------------------------------------------------------------- patches
def coordinate_image() -> torch.Tensor:
    """One 28x28 image whose pixel (r, c) holds 100 r + c."""
    r = torch.arange(28.0)
    return (100 * r[:, None] + r[None, :]).view(1, 1, 28, 28)


def test_patch_centre_is_the_activation_position():
    x = coordinate_image()
    idx = torch.zeros(1, 3, dtype=torch.long)
    rf = receptive_field(LeNet5(), "conv_1")  # odd size 5: the centre pixel is the position itself
    pos = torch.tensor([[[0, 0], [13, 7], [27, 27]]])
    p = patches(x, idx, pos, rf, (28, 28), fill=-1.0)
    assert p.shape == (1, 3, 1, 5, 5)
    assert p[0, 0, 0, 2, 2] == 0 and p[0, 1, 0, 2, 2] == 1307 and p[0, 2, 0, 2, 2] == 2727
    assert (p[0, 0, 0, :2] == -1).all() and (p[0, 0, 0, :, :2] == -1).all() and p[0, 0, 0, 4, 4] == 202
    assert (p[0, 2, 0, 3:] == -1).all() and (p[0, 2, 0, :, 3:] == -1).all()
    rf = receptive_field(LeNet5(), "max_pool_2")  # even size 16: centre 5.5 + 4 j lies between patch pixels 7, 8
    p = patches(x, idx[:, :1], torch.tensor([[[1, 2]]]), rf, (5, 5), fill=-1.0)
    assert p.shape == (1, 1, 1, 16, 16)
    assert p[0, 0, 0, 0, 0] == 206 and p[0, 0, 0, 15, 15] == 1721  # rows 2..17, columns 6..21
    assert p[0, 0, 0, 7, 7] == 913 and p[0, 0, 0, 8, 8] == 1014  # around the centre (9.5, 13.5)


def test_patches_equal_the_clipped_box_and_fill_elsewhere():
    x = torch.rand(5, 2, 28, 28, generator=torch.Generator().manual_seed(8))
    rf = receptive_field(LeNet5(), "relu_2")
    idx = torch.tensor([[4, 0], [1, 3]])
    pos = torch.tensor([[[0, 0], [9, 3]], [[5, 5], [9, 9]]])
    p = patches(x, idx, pos, rf, (10, 10), fill=7.0)
    assert p.shape == (2, 2, 2, 14, 14)
    for u in range(2):
        for j in range(2):
            r, c = pos[u, j].tolist()
            t, left, b, rt = rf_box(rf, r, c, (28, 28))
            pt, pl = t - (rf.offset + r * rf.stride), left - (rf.offset + c * rf.stride)
            inside = p[u, j, :, pt : pt + b - t, pl : pl + rt - left]
            assert torch.equal(inside, x[idx[u, j], :, t:b, left:rt])
            assert float(p[u, j].sum() - inside.sum()) == pytest.approx(7.0 * 2 * (14 * 14 - (b - t) * (rt - left)))
    with pytest.raises(ValueError, match=r"positions must lie in the layer's 10x10 map"):
        patches(x, idx, pos + 1, rf, (10, 10), fill=0.0)
    with pytest.raises(ValueError, match="a \\(N, U\\) layer has none"):
        patches(x, idx, None, rf, (10, 10), fill=0.0)


def test_planted_spot_is_at_the_centre_of_its_patch():
    net, x = spot_lenet(), spot_images()
    top = top_activations(net, x, "relu_1", [0], k=3)
    p = patches(x, top.indices, top.positions, receptive_field(net, "relu_1"), (28, 28), fill=0.0)
    for j, value in enumerate([3.0, 2.0, 1.0]):
        assert p[0, j, 0, 2, 2] == value and p[0, j, 0].sum() == value  # the spot and nothing else


# ---------------------------------------------------------------------------------------------------- projection
def test_first_layer_projection_is_the_activation_times_the_filter():
    """Deconvnet of one conv_1 activation a at (r, c): a * filter on its 5x5 window, zero beyond the image."""
    net, x = spot_lenet(), spot_images()
    with torch.no_grad():
        net.conv_1.weight[3] = torch.randn(1, 5, 5, generator=torch.Generator().manual_seed(9))
    top = top_activations(net, x, "conv_1", [0, 3], k=2)
    proj = projected_patches(net, x, "conv_1", [0, 3], top.indices, top.positions, receptive_field(net, "conv_1"))
    assert proj.shape == (2, 2, 1, 5, 5)
    for u, unit in enumerate([0, 3]):
        for j in range(2):
            expected = top.values[u, j] * net.conv_1.weight[unit, 0]
            r, c = top.positions[u, j].tolist()
            inside = torch.zeros(28 + 4, 28 + 4)
            inside[2:-2, 2:-2] = 1  # the image within a 2-pixel border: the window is inside[r:r+5, c:c+5]
            assert torch.allclose(proj[u, j, 0], expected * inside[r : r + 5, c : c + 5], atol=1e-6)
    assert top.positions[0].tolist() == [[11, 17], [4, 25]]  # the spots: interior, the whole filter
    assert torch.allclose(proj[0, 0, 0], 3.0 * net.conv_1.weight[0, 0], atol=1e-6)


def test_projected_patches_hold_the_whole_projection(lenet):
    x = torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(10))
    units = [2, 11]
    top = top_activations(lenet, x, "max_pool_2", units, k=3)
    rf = receptive_field(lenet, "max_pool_2")
    proj = projected_patches(lenet, x, "max_pool_2", units, top.indices, top.positions, rf)
    assert proj.shape == (2, 3, 1, 16, 16)
    for u, unit in enumerate(units):
        for j in range(3):
            i, (r, c) = int(top.indices[u, j]), top.positions[u, j].tolist()

            def seed(act, unit=unit, r=r, c=c):
                s = torch.zeros_like(act)
                s[0, unit, r, c] = act[0, unit, r, c]
                return s

            full = deconvnet_from_seed(lenet, x[i : i + 1], "max_pool_2", seed)[0, 0]
            assert full.abs().sum() > 0
            assert float(proj[u, j].abs().sum()) == pytest.approx(float(full.abs().sum()), rel=1e-5)
            t, left, b, rt = rf_box(rf, r, c, (28, 28))
            assert torch.allclose(full[t:b, left:rt].abs().sum(), full.abs().sum())  # nothing outside the box


def test_fc_projection_is_the_whole_image(lenet):
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(11))
    top = top_activations(lenet, x, "relu_3", [5], k=2)
    assert top.positions is None
    proj = projected_patches(lenet, x, "relu_3", [5], top.indices, None, None)
    assert proj.shape == (1, 2, 1, 28, 28)

    def seed(act):
        s = torch.zeros_like(act)
        s[:, 5] = act[:, 5]
        return s

    full = deconvnet_from_seed(lenet, x[top.indices[0]], "relu_3", seed)
    assert torch.allclose(proj[0], full, atol=1e-6)


# ------------------------------------------------------------------------------------------------------ callback
def test_callback_arguments():
    cb = TopActivationsCallback()
    assert (cb.layers, cb.units, cb.k, cb.projection, cb.per_class, cb.technique) == (
        None,
        8,
        5,
        True,
        100,
        "top_activations",
    )
    assert TopActivationsCallback(units=[3, 1], every_n_epochs=2).units == [3, 1]
    for kwargs, match in [
        (dict(units=0), "units must be an integer >= 1 or a list of unit indices, got 0"),
        (dict(units=[]), r"non-empty list of unit indices >= 0.*got \[\]"),
        (dict(units=[1, -2]), r"got \[1, -2\]"),
        (dict(units="3"), "got '3'"),
        (dict(k=0), "k must be an integer >= 1, got 0"),
        (dict(k=2.5), "k must be an integer >= 1, got 2.5"),
        (dict(projection="yes"), "projection must be true or false, got 'yes'"),
        (dict(layers="relu_1"), "layers must be a list of layer names or None"),
        (dict(per_class=0), "per_class must be an integer >= 1"),
        (dict(every_n_epochs=0), "every_n_epochs"),
    ]:
        with pytest.raises(ValueError, match=match):
            TopActivationsCallback(**kwargs)


@pytest.mark.parametrize(
    "net, layers",
    [
        (LeNet5, ["relu_1", "relu_2"]),
        (SimpleCNN, ["relu_1", "relu_2"]),
        (DeepCNN, ["relu_1", "relu_2", "relu_3", "relu_4"]),
        (MLP, ["relu_1"]),
    ],
)
def test_callback_default_layers(net, layers):
    cb = TopActivationsCallback()
    cb.configure_for(net(), (1, 28, 28))
    assert cb.layer_names == layers and cb.layers is None  # the user's argument is kept as given
    assert cb.config() == {"layers": None}


def test_callback_units_resolved_and_checked():
    cb = TopActivationsCallback()
    cb.configure_for(LeNet5(), (1, 28, 28))
    assert cb.layer_units == {"relu_1": list(range(6)), "relu_2": list(range(8))}  # relu_1 has only 6 channels
    assert tuple(cb.fields["relu_2"]) == (14, 2, 4.5)
    cb = TopActivationsCallback(layers=["relu_2", "relu_3"], units=[0, 15])
    cb.configure_for(LeNet5(), (1, 28, 28))
    assert cb.layer_units == {"relu_2": [0, 15], "relu_3": [0, 15]} and cb.fields["relu_3"] is None
    with pytest.raises(
        LayerError,
        match=r"TopActivationsCallback: unit index\(es\) \[6\] out of range for layer "
        r"'relu_1': it has 6 units, valid 0\.\.5",
    ):
        TopActivationsCallback(units=[2, 6]).configure_for(LeNet5(), (1, 28, 28))
    with pytest.raises(LayerError, match=r"unknown layer name\(s\) \['relu_7'\]"):
        TopActivationsCallback(layers=["relu_7"]).configure_for(LeNet5(), (1, 28, 28))


def test_callback_picture_finds_the_planted_spots():
    net = spot_lenet()
    x = torch.cat([spot_images(), torch.rand(30, 1, 28, 28, generator=torch.Generator().manual_seed(12)) * 0.1])
    y = torch.arange(40) % 10
    cb = TopActivationsCallback(layers=["relu_1"], units=[0, 1], k=3, per_class=4)  # not set up: configures itself
    writer = render(cb, net, x, y, step=7)
    img, step = writer.images["top_activations/relu_1"]
    assert step == 7 and img.dtype == torch.uint8 and img.shape[0] == 3
    assert img.shape[2] <= 500  # fits a TensorBoard card
    assert has_colour(img, (204, 217, 242))  # pale blue: patch pixels beyond the image border
    assert has_colour(img, (103, 0, 31))  # the projections' positive end
    top, crops, proj = cb.compute(net, x, "relu_1")
    assert top.indices[0].tolist() == [6, 2, 9]
    assert crops.shape == proj.shape == (2, 3, 1, 5, 5)
    assert cb.fixed_idx is not None and len(cb.fixed_idx) == 40


def test_callback_renders_lenet_and_mlp_within_size():
    torch.manual_seed(13)
    x = torch.rand(200, 1, 28, 28)
    y = torch.arange(200) % 10
    for net, tags in [(LeNet5().eval(), ["relu_1", "relu_2"]), (MLP().eval(), ["relu_1"])]:
        cb = TopActivationsCallback(per_class=20)
        cb.configure_for(net, (1, 28, 28))
        writer = render(cb, net, x, y)
        assert sorted(writer.images) == [f"top_activations/{t}" for t in tags]
        for img, _ in writer.images.values():
            assert 200 < img.shape[2] <= 500 and 100 < img.shape[1] <= 720, img.shape
    cb = TopActivationsCallback(layers=["relu_2"], projection=False, k=20, per_class=1)  # k > set: all 10 images
    cb.configure_for(LeNet5(), (1, 28, 28))
    assert "top_activations/relu_2" in render(cb, LeNet5().eval(), x, y).images


def test_a_field_larger_than_the_image_keeps_the_picture_card_sized():
    """Five 9x9 convs see 41 px, more than the 20 px image: the patches are shrunk, the picture stays card-sized."""
    torch.manual_seed(3)
    layers = []
    for i in range(5):
        layers += [torch.nn.Conv2d(1 if i == 0 else 4, 4, 9, padding=4), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers).eval()
    x, y = torch.rand(40, 1, 20, 20), torch.arange(40) % 10
    cb = TopActivationsCallback(layers=["9"], units=4, k=3, per_class=4)
    cb.configure_for(net, (1, 20, 20))
    assert cb.fields["9"].size > 32
    img, _ = render(cb, net, x, y).images["top_activations/9"]
    assert img.shape[2] <= 720 and img.shape[1] <= 720, img.shape


def test_a_field_that_covers_the_image_shows_whole_images_and_whole_projections():
    """Five 9x9 convs see 41 px of a 20 px image: every window would be mostly padding, so the tiles are the top
    images themselves and their uncropped deconvnet projections, and the picture says so."""
    torch.manual_seed(3)
    layers = []
    for i in range(5):
        layers += [torch.nn.Conv2d(1 if i == 0 else 4, 4, 9, padding=4), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers).eval()
    x = torch.rand(40, 1, 20, 20, generator=torch.Generator().manual_seed(4))
    cb = TopActivationsCallback(layers=["9"], units=2, k=3, per_class=4)
    cb.configure_for(net, (1, 20, 20))
    top, crops, proj = cb.compute(net, x, "9")
    assert cb.covers_image(cb.fields["9"], x) and crops is None
    assert proj.shape == (2, 3, 1, 20, 20)
    for u, unit in enumerate([0, 1]):
        i, (r, c) = int(top.indices[u, 0]), top.positions[u, 0].tolist()

        def seed(act, unit=unit, r=r, c=c):
            s = torch.zeros_like(act)
            s[0, unit, r, c] = act[0, unit, r, c]
            return s

        assert torch.allclose(proj[u, 0], deconvnet_from_seed(net, x[i : i + 1], "9", seed)[0], atol=1e-6)
    small = TopActivationsCallback(layers=["1"], units=2, k=3, per_class=4)  # one 9x9 conv: 9 px windows
    small.configure_for(net, (1, 20, 20))
    assert not small.covers_image(small.fields["1"], x) and small.compute(net, x, "1")[1].shape[-1] == 9


def test_the_search_batch_keeps_a_batch_of_captured_maps_within_its_byte_budget():
    """Large maps (a 224 px ResNet) make the search pass fewer images at once: one batch of every layer's maps and
    the net's largest activations in flight stays within ``capture_bytes``; small ones (LeNet-5 at 28 px) pass
    ``batch_size``."""
    import torchvision

    small = TopActivationsCallback()
    small.configure_for(LeNet5(), (1, 28, 28))
    assert small.search_batch(torch.zeros(2, 1, 28, 28)) == small.batch_size == 1000
    big = TopActivationsCallback()
    big.configure_for(torchvision.models.resnet18(num_classes=10), (3, 224, 224))
    largest = max(math.prod(shape) for shape in big.shapes.values())  # in flight while the net runs
    per_image = 4 * (sum(math.prod(big.shapes[n]) for n in big.layer_names) + 3 * largest)
    batch = big.search_batch(torch.zeros(2, 3, 224, 224))
    assert 1 <= batch < 1000 and batch * per_image <= big.capture_bytes < (batch + 1) * per_image


def test_running_top_does_not_depend_on_batch_order_or_size():
    """The unit browser's top samples come from the validation loop's batches, in the fixed set's order or not: the
    same samples, in the same order, as one pass in order. Ties (a ReLU's zeros) keep the lower index; NaN never
    wins; a conv unit's position is its map's first maximum."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 3, 4, 5, generator=g).relu()
    a[:, 2] = 0.0  # a dead channel: every sample ties
    a[7, 1, 0, 0] = float("nan")
    whole = RunningTop(6)
    whole.add(a, torch.arange(50))
    expected = whole.result()
    assert expected.indices[2].tolist() == [0, 1, 2, 3, 4, 5]
    best = a.flatten(2).nan_to_num(nan=-math.inf).max(2).values  # (50, 3): sample 7's NaN is passed over
    for u in (0, 1):
        order = sorted(range(50), key=lambda i: (-best[i, u].item(), i))[:6]
        assert expected.indices[u].tolist() == order
    for perm_seed, size in ((1, 7), (2, 13), (3, 1)):
        perm = torch.randperm(50, generator=torch.Generator().manual_seed(perm_seed))
        top = RunningTop(6)
        for start in range(0, 50, size):
            idx = perm[start : start + size]
            top.add(a[idx], idx)
        got = top.result()
        assert torch.equal(got.indices, expected.indices) and torch.equal(got.values, expected.values)
        assert torch.equal(got.positions, expected.positions)
    r, c = expected.positions[0, 0].tolist()
    i = int(expected.indices[0, 0])
    assert a[i, 0, r, c] == a[i, 0].max()
