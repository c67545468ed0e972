"""Deconvnet (callbacks/deconv.py): known answers computed by hand with explicit unpool / ReLU / transposed conv."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from callbacks.deconv import DeconvCallback, deconvnet_with_channels, informative_channels
from callbacks.hooks import capture_activations
from callbacks.methods.deconv import (
    background_channels,
    channel_peaks,
    deconvnet,
    deconvnet_from_seed,
    flat_background,
    strongest_channels,
)
from callbacks.technique import RenderContext
from lit_modules.nets import MLP, DeepCNN, LeNet5, SimpleCNN
from tests.conftest import has_colour, render_once, scope_over

ATOL = 1e-5


# ------------------------------------------------------------------------------------------------------ helpers
def tiny_pool_net() -> nn.Sequential:
    """conv_1 (1 -> 2 channels, 3x3, no padding, hand-set weights, non-zero biases), relu_1, max_pool_1 (2)."""
    net = nn.Sequential(
        OrderedDict(conv_1=nn.Conv2d(1, 2, kernel_size=3), relu_1=nn.ReLU(), max_pool_1=nn.MaxPool2d(2))
    )
    with torch.no_grad():
        net.conv_1.weight.copy_(
            torch.tensor(
                [
                    [[[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]],  # vertical edges (Sobel x)
                    [[[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]],  # Laplacian
                ]
            )
        )
        net.conv_1.bias.copy_(torch.tensor([0.5, -0.25]))
    return net


def tiny_images() -> torch.Tensor:
    """Two 6x6 images: a ramp with a bright spot (Laplacian channel wins) and a step edge (Sobel channel wins)."""
    a = torch.arange(36, dtype=torch.float32).reshape(6, 6) / 10.0
    a[1, 3] = -3.0  # a dark spot: a large Laplacian response
    b = torch.zeros(6, 6)
    b[:, :3] = 1.0  # bright left half, dark right half: a strong positive Sobel-x response
    b[4, 1] = 0.5
    return torch.stack([a, b]).unsqueeze(1)  # (2, 1, 6, 6)


def hand_pool_net(net: nn.Sequential, x: torch.Tensor, k: int) -> torch.Tensor:
    """Deconvnet of channel k of max_pool_1 for one image x (1, 1, 6, 6), by explicit ops."""
    w, b = net.conv_1.weight, net.conv_1.bias
    y = F.relu(F.conv2d(x, w, b))  # (1, 2, 4, 4)
    pooled, idx = F.max_pool2d(y, 2, return_indices=True)  # (1, 2, 2, 2)
    kept = pooled[:, k : k + 1]  # channel k, whole
    up = F.max_unpool2d(kept, idx[:, k : k + 1], 2, output_size=y.shape[-2:])  # (1, 1, 4, 4)
    return F.conv_transpose2d(F.relu(up), w[k : k + 1])  # filters of channel k only, no bias: (1, 1, 6, 6)


def tiny_two_conv_net() -> nn.Sequential:
    """conv_1 (1 -> 2, 3x3), relu_1, conv_2 (2 -> 2, 3x3): the seed at conv_2 has negative values."""
    net = nn.Sequential(
        OrderedDict(conv_1=nn.Conv2d(1, 2, kernel_size=3), relu_1=nn.ReLU(), conv_2=nn.Conv2d(2, 2, kernel_size=3))
    )
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return net


def no_hooks_left(net: nn.Module) -> bool:
    return all(
        not m._forward_hooks
        and not m._forward_pre_hooks
        and not m._backward_hooks
        and not m._backward_pre_hooks
        and m._is_full_backward_hook is None
        for m in net.modules()
    )


def plain_gradient(net: nn.Module, x: torch.Tensor, layer: str, seed_of) -> torch.Tensor:
    """Ordinary backprop of seed_of(act) from ``layer`` to the pixels (ReLU backward = mask by input > 0)."""
    xx = x.clone().requires_grad_(True)
    act = {}
    h = dict(net.named_children())[layer].register_forward_hook(lambda m, i, o: act.setdefault("a", o))
    try:
        net(xx)
    finally:
        h.remove()
    (g,) = torch.autograd.grad(act["a"], xx, grad_outputs=seed_of(act["a"].detach()))
    return g


def keep_channel(act: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    seed = torch.zeros_like(act)
    i = torch.arange(len(channels))
    seed[i, channels] = act[i, channels]
    return seed


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------------------- known answers, tiny
@pytest.mark.parametrize("k", [0, 1])
def test_tiny_pool_net_matches_hand_computation(k):
    net, x = tiny_pool_net(), tiny_images()
    proj, channels = deconvnet_with_channels(net, x, "max_pool_1", channel=k)
    assert proj.shape == x.shape
    assert channels.tolist() == [k, k]
    for i in range(len(x)):
        expected = hand_pool_net(net, x[i : i + 1], k)
        assert expected.abs().sum() > 0  # a non-trivial answer
        torch.testing.assert_close(proj[i : i + 1], expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(deconvnet(net, x, "max_pool_1", channel=k), proj)


def test_tiny_pool_net_strongest_channel():
    net, x = tiny_pool_net(), tiny_images()
    with torch.no_grad():
        pooled = F.max_pool2d(F.relu(F.conv2d(x, net.conv_1.weight, net.conv_1.bias)), 2)
    expected_channels = pooled.flatten(2).amax(2).argmax(1)
    assert expected_channels.tolist() == [1, 0]  # the two images pick different channels
    proj, channels = deconvnet_with_channels(net, x, "max_pool_1")
    assert channels.tolist() == [1, 0]
    for i, k in enumerate(expected_channels.tolist()):
        torch.testing.assert_close(proj[i : i + 1], hand_pool_net(net, x[i : i + 1], k), atol=ATOL, rtol=0)
    torch.testing.assert_close(deconvnet(net, x, "max_pool_1"), proj)


def test_tiny_pool_net_biases_are_not_used_backwards():
    """Changing conv_1's bias in a way that keeps the forward switches and the seed only shifts the seed."""
    net, x = tiny_pool_net(), tiny_images()
    proj = deconvnet(net, x, "max_pool_1", channel=0)
    # The hand computation uses conv_transpose2d without bias; adding the bias there would give another answer.
    w = net.conv_1.weight
    y = F.relu(F.conv2d(x[:1], w, net.conv_1.bias))
    pooled, idx = F.max_pool2d(y, 2, return_indices=True)
    up = F.max_unpool2d(pooled[:, :1], idx[:, :1], 2, output_size=y.shape[-2:])
    with_bias = F.conv_transpose2d(up, w[:1], bias=net.conv_1.bias[:1])
    assert not torch.allclose(proj[:1], with_bias, atol=1e-3)


@pytest.mark.parametrize("k", [0, 1])
def test_tiny_two_conv_net_rectifies_the_signal_going_down(k):
    net = tiny_two_conv_net()
    x = torch.randn(1, 1, 7, 7, generator=torch.Generator().manual_seed(5))
    w1, w2 = net.conv_1.weight, net.conv_2.weight
    with torch.no_grad():
        h = F.conv2d(x, w1, net.conv_1.bias)
        seed = F.conv2d(F.relu(h), w2, net.conv_2.bias)[:, k : k + 1]  # (1, 1, 3, 3), kept whole
        assert (seed < 0).any() and (seed > 0).any()
        down = F.conv_transpose2d(seed, w2[k : k + 1])  # (1, 2, 5, 5)
        expected = F.conv_transpose2d(F.relu(down), w1)  # deconvnet: rectify
        backprop = F.conv_transpose2d(down * (h > 0), w1)  # plain gradient: mask by the forward input
    assert not torch.allclose(expected, backprop, atol=1e-3)
    torch.testing.assert_close(deconvnet(net, x, "conv_2", channel=k), expected, atol=ATOL, rtol=0)


# --------------------------------------------------------------------------------------- known answers, LeNet-5
def hand_lenet_max_pool_2(net: LeNet5, x: torch.Tensor, k: int) -> torch.Tensor:
    """Deconvnet of channel k of LeNet-5's max_pool_2 for one image (1, 1, 28, 28), by explicit ops."""
    w1, w2 = net.conv_1.weight, net.conv_2.weight
    with torch.no_grad():
        y1 = F.relu(F.conv2d(x, w1, net.conv_1.bias, padding=2))  # (1, 6, 28, 28)
        p1, i1 = F.max_pool2d(y1, 2, return_indices=True)  # (1, 6, 14, 14)
        y2 = F.relu(F.conv2d(p1, w2, net.conv_2.bias))  # (1, 16, 10, 10)
        p2, i2 = F.max_pool2d(y2, 2, return_indices=True)  # (1, 16, 5, 5)
        seed = torch.zeros_like(p2)
        seed[:, k] = p2[:, k]
        r = F.relu(F.max_unpool2d(seed, i2, 2, output_size=y2.shape[-2:]))  # (1, 16, 10, 10)
        r = F.conv_transpose2d(r, w2)  # (1, 6, 14, 14)
        r = F.relu(F.max_unpool2d(r, i1, 2, output_size=y1.shape[-2:]))  # (1, 6, 28, 28)
        return F.conv_transpose2d(r, w1, padding=2)  # (1, 1, 28, 28)


def test_lenet_max_pool_2_matches_hand_computation(lenet, images):
    proj, channels = deconvnet_with_channels(lenet, images, "max_pool_2")
    for i, k in enumerate(channels.tolist()):
        expected = hand_lenet_max_pool_2(lenet, images[i : i + 1], k)
        torch.testing.assert_close(proj[i : i + 1], expected, atol=ATOL, rtol=1e-4)
    proj3 = deconvnet(lenet, images, "max_pool_2", channel=3)
    for i in range(len(images)):
        torch.testing.assert_close(
            proj3[i : i + 1], hand_lenet_max_pool_2(lenet, images[i : i + 1], 3), atol=ATOL, rtol=1e-4
        )


@pytest.mark.parametrize("layer", ["conv_2", "relu_2", "max_pool_2"])
def test_lenet_shapes_finite_and_strongest_channel(lenet, images, layer):
    act = capture_activations(lenet, images, [layer])[layer]
    proj, channels = deconvnet_with_channels(lenet, images, layer)
    assert proj.shape == images.shape and proj.dtype == images.dtype
    assert torch.isfinite(proj).all()
    assert proj.abs().sum() > 0
    assert channels.shape == (len(images),) and channels.dtype == torch.long
    torch.testing.assert_close(channels, strongest_channels(act))
    fixed = deconvnet(lenet, images, layer, channel=5)
    assert fixed.shape == images.shape and torch.isfinite(fixed).all()


@pytest.mark.parametrize("layer", ["conv_2", "relu_2", "max_pool_2", "fc_1", "fc_3"])
def test_lenet_differs_from_plain_gradient(lenet, images, layer):
    """With ReLUs between the layer and the pixels, the deconvnet's rectification changes the answer."""
    proj, channels = deconvnet_with_channels(lenet, images, layer)
    grad = plain_gradient(lenet, images, layer, lambda a: keep_channel(a, channels))
    assert not torch.allclose(proj, grad, atol=1e-4)


def test_lenet_conv_1_equals_plain_gradient(lenet, images):
    """No ReLU below conv_1: the deconvnet is the plain gradient (a transposed conv of the kept map)."""
    proj, channels = deconvnet_with_channels(lenet, images, "conv_1")
    grad = plain_gradient(lenet, images, "conv_1", lambda a: keep_channel(a, channels))
    torch.testing.assert_close(proj, grad, atol=ATOL, rtol=1e-4)
    seed = keep_channel(capture_activations(lenet, images, ["conv_1"])["conv_1"], channels)
    torch.testing.assert_close(proj, F.conv_transpose2d(seed, lenet.conv_1.weight, padding=2), atol=ATOL, rtol=1e-4)


def test_seed_positive_homogeneity_not_linearity(lenet, images):
    channels = deconvnet_with_channels(lenet, images, "conv_2")[1]
    base = deconvnet_from_seed(lenet, images, "conv_2", lambda a: keep_channel(a, channels))
    twice = deconvnet_from_seed(lenet, images, "conv_2", lambda a: 2 * keep_channel(a, channels))
    torch.testing.assert_close(twice, 2 * base, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(base, deconvnet(lenet, images, "conv_2"), atol=ATOL, rtol=1e-5)
    # The rectification makes it non-linear: -seed does not give -projection.
    negated = deconvnet_from_seed(lenet, images, "conv_2", lambda a: -keep_channel(a, channels))
    assert not torch.allclose(negated, -base, atol=1e-4)


def test_lenet_scaling_conv_2_scales_projection_by_four(lenet, images):
    """Doubling conv_2's weight and bias doubles relu_2 (same switches, same channel) and the filters: x4."""
    proj, channels = deconvnet_with_channels(lenet, images, "max_pool_2")
    with torch.no_grad():
        lenet.conv_2.weight.mul_(2)
        lenet.conv_2.bias.mul_(2)
    proj2, channels2 = deconvnet_with_channels(lenet, images, "max_pool_2")
    assert torch.equal(channels, channels2)
    torch.testing.assert_close(proj2, 4 * proj, atol=1e-4, rtol=1e-4)


def test_batch_equals_one_image_at_a_time(lenet, images):
    proj = deconvnet(lenet, images, "relu_2")
    for i in range(len(images)):
        torch.testing.assert_close(proj[i : i + 1], deconvnet(lenet, images[i : i + 1], "relu_2"), atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("cls", [MLP, SimpleCNN, LeNet5, DeepCNN])
def test_every_layer_of_every_net(cls):
    torch.manual_seed(0)
    net = cls()
    x = torch.rand(2, 1, 28, 28)
    for name, _ in net.named_children():
        proj, channels = deconvnet_with_channels(net, x, name)
        assert proj.shape == x.shape and torch.isfinite(proj).all(), name
        assert channels.shape == (2,)
    assert no_hooks_left(net)


# ------------------------------------------------------------------------------------------- known answers, MLP
def test_mlp_relu_1_is_w_transpose():
    torch.manual_seed(0)
    net = MLP(hidden=32).eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    proj, units = deconvnet_with_channels(net, x, "relu_1")
    with torch.no_grad():
        hidden = F.relu(net.fc_1(x.flatten(1)))  # (3, 32)
    assert torch.equal(units, hidden.argmax(1))
    for i, u in enumerate(units.tolist()):
        seed = torch.zeros(32)
        seed[u] = hidden[i, u]
        expected = (F.relu(seed) @ net.fc_1.weight).reshape(1, 28, 28)
        torch.testing.assert_close(proj[i], expected, atol=ATOL, rtol=1e-5)
    # a fixed unit
    proj7 = deconvnet(net, x, "relu_1", channel=7)
    for i in range(3):
        expected = (hidden[i, 7] * net.fc_1.weight[7]).reshape(1, 28, 28)
        torch.testing.assert_close(proj7[i], expected, atol=ATOL, rtol=1e-5)


def test_mlp_fc_2_rectifies_between_the_linear_layers():
    torch.manual_seed(0)
    net = MLP(hidden=32).eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    proj = deconvnet(net, x, "fc_2", channel=4)
    with torch.no_grad():
        logits = net(x)
    for i in range(3):
        seed = torch.zeros(10)
        seed[4] = logits[i, 4]  # may be negative: kept as it is
        expected = (F.relu(seed @ net.fc_2.weight) @ net.fc_1.weight).reshape(1, 28, 28)
        torch.testing.assert_close(proj[i], expected, atol=ATOL, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------- hygiene
def test_hooks_grads_and_mode_restored(lenet, images):
    lenet.train()
    lenet.relu_1.eval()  # a mixed state: each module's own flag comes back
    grads_before = [p.requires_grad for p in lenet.parameters()]
    deconvnet(lenet, images, "max_pool_2")
    assert no_hooks_left(lenet)
    assert all(p.grad is None for p in lenet.parameters())
    assert [p.requires_grad for p in lenet.parameters()] == grads_before
    assert lenet.training and not lenet.relu_1.training
    assert all(m.training for n, m in lenet.named_modules() if n != "relu_1")


def test_existing_grads_and_user_hooks_untouched(lenet, images):
    for p in lenet.parameters():
        p.grad = torch.full_like(p, 0.5)
    calls = []
    h = lenet.conv_2.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    try:
        deconvnet(lenet, images, "relu_2")
        assert len(calls) == 1 and len(lenet.conv_2._forward_hooks) == 1
    finally:
        h.remove()
    assert no_hooks_left(lenet)
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in lenet.parameters())


def test_hooks_removed_after_errors(lenet, images):
    with pytest.raises(ValueError):
        deconvnet(lenet, images, "conv_2", channel=16)  # raised after the forward pass, hooks in place
    assert no_hooks_left(lenet)
    with pytest.raises(RuntimeError):
        deconvnet(lenet, torch.rand(2, 3, 28, 28), "fc_1")  # raised inside the net's forward
    assert no_hooks_left(lenet)
    net = MLP()
    with pytest.raises(RuntimeError):
        deconvnet(net, torch.rand(2, 1, 20, 20), "relu_1")  # 400 pixels into a 784-input fc_1
    assert no_hooks_left(net)

    def bad_seed(act):
        raise KeyError("boom")

    lenet.train()
    with pytest.raises(KeyError):
        deconvnet_from_seed(lenet, images, "max_pool_2", bad_seed)
    assert no_hooks_left(lenet) and lenet.training
    assert all(p.grad is None for p in lenet.parameters())


def test_dropout_is_off_and_train_mode_restored():
    torch.manual_seed(0)
    net = DeepCNN(dropout=0.5).train()
    x = torch.rand(2, 1, 28, 28)
    a = deconvnet(net, x, "fc_1", channel=2)
    b = deconvnet(net, x, "fc_1", channel=2)
    assert torch.equal(a, b)
    assert all(m.training for m in net.modules())


def test_works_under_inference_mode_and_no_grad(lenet, images):
    expected, channels = deconvnet_with_channels(lenet, images, "max_pool_2")
    with torch.inference_mode():
        inf_images = images.clone()  # an inference tensor
        got, got_channels = deconvnet_with_channels(lenet, inf_images, "max_pool_2")
        assert torch.is_inference_mode_enabled()
    torch.testing.assert_close(got, expected)
    assert torch.equal(got_channels, channels)
    assert not got.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(deconvnet(lenet, images, "max_pool_2"), expected)
        assert not torch.is_grad_enabled()
    assert no_hooks_left(lenet)


def test_inplace_relu_net():
    net = tiny_two_conv_net()
    x = torch.randn(2, 1, 7, 7, generator=torch.Generator().manual_seed(5))
    expected = deconvnet(net, x, "conv_2", channel=1)
    net.relu_1.inplace = True
    torch.testing.assert_close(deconvnet(net, x, "conv_2", channel=1), expected)
    assert net.relu_1.inplace and no_hooks_left(net)


# ------------------------------------------------------------------------------------------------------ errors
def test_unknown_layer_lists_valid_names(lenet, images):
    with pytest.raises(ValueError, match="conv_1.*max_pool_2.*fc_3"):
        deconvnet(lenet, images, "conv_9")
    assert no_hooks_left(lenet)


@pytest.mark.parametrize("channel", [16, -1, 100])
def test_channel_out_of_range(lenet, images, channel):
    with pytest.raises(ValueError, match=r"'conv_2'.*0\.\.15"):
        deconvnet(lenet, images, "conv_2", channel=channel)
    with pytest.raises(ValueError, match=r"'fc_3'.*0\.\.9"):
        deconvnet(lenet, images, "fc_3", channel=10)


@pytest.mark.parametrize("channel", [1.5, "2", True])
def test_channel_not_an_integer(lenet, images, channel):
    with pytest.raises(ValueError, match="channel"):
        deconvnet(lenet, images, "conv_2", channel=channel)


@pytest.mark.parametrize("shape", [(1, 28, 28), (28, 28), (1, 1, 1, 28, 28)])
def test_images_must_be_4d(lenet, shape):
    with pytest.raises(ValueError, match="4-D"):
        deconvnet(lenet, torch.rand(shape), "conv_1")


def test_images_must_be_float(lenet):
    with pytest.raises(ValueError, match="floating"):
        deconvnet(lenet, torch.zeros(1, 1, 28, 28, dtype=torch.uint8), "conv_1")


def test_channel_tensor_index_accepted(lenet, images):
    torch.testing.assert_close(
        deconvnet(lenet, images, "conv_2", channel=torch.tensor(3)), deconvnet(lenet, images, "conv_2", channel=3)
    )


# ----------------------------------------------------------------------------------------- strongest_channels
def test_strongest_channels_uses_the_max_not_the_mean():
    acts = torch.zeros(2, 3, 2, 2)
    acts[0, 0] = 1.0  # largest mean
    acts[0, 2, 1, 1] = 3.0  # largest max
    acts[1, 1, 0, 0] = -0.5
    acts[1] -= 1.0  # all negative: the least negative max wins
    acts[1, 1, 0, 0] = -0.1
    assert strongest_channels(acts).tolist() == [2, 1]
    assert strongest_channels(torch.tensor([[0.1, 0.9, -2.0], [5.0, 1.0, 5.0]])).tolist() == [1, 0]  # ties: lowest


def test_strongest_channels_rejects_1d():
    with pytest.raises(ValueError):
        strongest_channels(torch.rand(5))


# --------------------------------------------------------------------------------------- informative_channels
def test_informative_channels_known_answer():
    # reference peaks of 4 images: channel 0 always 5 (a background detector), channel 1 mean 1 and SD 1,
    # channel 2 mean 2 and SD 0.5
    reference = torch.tensor([[5.0, 0.0, 1.5], [5.0, 2.0, 2.5], [5.0, 0.0, 2.5], [5.0, 2.0, 1.5]])
    acts = torch.zeros(3, 3, 2, 2)
    acts[:, 0] = 5.0  # the background channel at its usual level: z = 0, though the strongest
    acts[0, 1, 1, 1], acts[0, 2, 0, 0] = 3.0, 2.5  # z: 2 and 1
    acts[1, 1, 0, 1], acts[1, 2, 1, 0] = 2.0, 3.0  # z: 1 and 2
    acts[2, 1, 0, 0], acts[2, 2, 0, 0] = 1.0, 2.0  # z: 0, 0, 0: a tie goes to the lowest index
    assert strongest_channels(acts).tolist() == [0, 0, 0]
    assert informative_channels(acts, reference).tolist() == [1, 2, 0]
    assert informative_channels(acts, channel_peaks(reference[:, :, None, None])).tolist() == [1, 2, 0]
    acts[2, 0, 1, 1] = 5.5  # the constant channel above its only level: infinitely unusual
    assert informative_channels(acts, reference).tolist() == [1, 2, 0]
    assert informative_channels(acts[2:, :, 0, 0] - 1.0, reference).tolist() == [1]  # (N, U): units; below: -inf
    with pytest.raises(ValueError, match=r"reference must be the \(M, 3\) channel peaks"):
        informative_channels(acts, reference[:, :2])


def test_per_image_channels_and_their_errors(lenet, images):
    chosen = torch.tensor([3, 0, 5, 3])
    proj, ch = deconvnet_with_channels(lenet, images, "conv_2", chosen)
    assert ch.tolist() == [3, 0, 5, 3]
    for i, k in enumerate(chosen.tolist()):
        torch.testing.assert_close(proj[i : i + 1], deconvnet(lenet, images[i : i + 1], "conv_2", channel=k))
    with pytest.raises(ValueError, match=r"'conv_2'.*0\.\.15"):
        deconvnet(lenet, images, "conv_2", channel=torch.tensor([0, 1, 16, 2]))
    with pytest.raises(ValueError, match="4 images"):
        deconvnet(lenet, images, "conv_2", channel=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer"):
        deconvnet(lenet, images, "conv_2", channel=torch.tensor([0.0, 1.0, 2.0, 3.0]))


class BackgroundNet(nn.Module):
    """max_pool_1 channel 0 is 5 everywhere on every image (a background detector, and the strongest); channel 1 is
    the image itself (pooled), so its projection is non-zero only where the image is."""

    def __init__(self):
        super().__init__()
        self.conv_1 = nn.Conv2d(1, 2, kernel_size=1)
        self.relu_1 = nn.ReLU()
        self.max_pool_1 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2 * 14 * 14, 2)
        with torch.no_grad():
            self.conv_1.weight.copy_(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1))
            self.conv_1.bias.copy_(torch.tensor([5.0, 0.0]))

    def forward(self, x):
        return self.fc(self.flatten(self.max_pool_1(self.relu_1(self.conv_1(x)))))


def test_callback_projects_the_most_unusual_channel_not_the_background():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, 28, 28, generator=g) * 0.5  # the usual level of channel 1: at most 0.5
    y = torch.arange(20) % 2
    x[0, 0, 10, 12] = x[1, 0, 20, 8] = 3.0  # the probe images (the first of each class) have one bright spot
    net = BackgroundNet().eval()
    acts = capture_activations(net, x[:2], ["max_pool_1"])["max_pool_1"]
    assert strongest_channels(acts).tolist() == [0, 0]  # the plain rule would project the background channel
    reference = channel_peaks(capture_activations(net, x, ["max_pool_1"])["max_pool_1"])  # (20, 2)
    assert informative_channels(acts, reference).tolist() == [1, 1]
    (bg,) = deconvnet(net, x[:1], "max_pool_1", channel=0)
    assert bg.abs().max() == 0  # channel 0 projects to nothing (its filter is 0): a picture of it would be white
    cb = DeconvCallback(layers=["max_pool_1"], per_class=10)
    cb.configure_for(net, (1, 28, 28))
    img = render_once(cb, net, x, y, ("a", "b"), step=0, callbacks=[cb]).images["deconv"][0]
    grid = img[:, :-64]  # above the colour bar (62 px and a 2 px gap), which holds every colour of the scale
    assert has_colour(grid, (103, 0, 31))  # the projection's largest value, +1 on the scale: channel 1's bright spot
    ctx = RenderContext(net, None, 0, cb, scope_over(x, y, ("a", "b")))
    peaks = cb.reference_peaks(ctx)["max_pool_1"]  # the fixed set's order
    torch.testing.assert_close(peaks, reference[cb.fixed_idx])
    with pytest.raises(ValueError, match="DeconvCallback: per_class must be an integer >= 1"):
        DeconvCallback(per_class=0)


def garment_images(n: int, background: float, brightness: torch.Tensor, noise: float = 1e-3, seed: int = 0):
    """``(n, 1, 28, 28)`` normalised images: a bright square (rows 8-19, columns 6-17; ``brightness`` ``(n,)``) on a
    dark background at ``background`` with a little noise, as Fashion-MNIST is after normalisation."""
    g = torch.Generator().manual_seed(seed)
    x = background + noise * torch.randn(n, 1, 28, 28, generator=g)
    x[:, :, 8:20, 6:18] = brightness.view(-1, 1, 1, 1)
    return x


def background_net() -> nn.Sequential:
    """max_pool_1 channel 0 = ReLU(-x): it fires on the dark background (about 0.8 everywhere off the garment);
    channel 1 = ReLU(x): it fires on the garment."""
    net = nn.Sequential(
        OrderedDict(
            conv_1=nn.Conv2d(1, 2, 1, bias=False),
            relu_1=nn.ReLU(),
            max_pool_1=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc=nn.Linear(2 * 14 * 14, 2),
        )
    )
    with torch.no_grad():
        net.conv_1.weight.copy_(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1))
    return net.eval()


def test_background_channel_of_a_known_net_is_never_chosen_though_its_z_score_is_the_largest():
    net = background_net()
    ref_x = garment_images(40, -0.8, torch.linspace(1.0, 2.0, 40))  # garments of every brightness
    probe = garment_images(2, -0.805, torch.tensor([1.5, 1.5]), seed=1)  # a usual garment, the background darker
    ref = channel_peaks(capture_activations(net, ref_x, ["max_pool_1"])["max_pool_1"])  # (40, 2)
    acts = capture_activations(net, probe, ["max_pool_1"])["max_pool_1"]
    assert informative_channels(acts, ref).tolist() == [0, 0]  # z-score alone: the background's tiny shift wins
    blank = flat_background(ref_x)
    assert blank.shape == (1, 1, 28, 28) and abs(blank.mean().item() + 0.8) < 1e-3  # the border's median
    flat = channel_peaks(capture_activations(net, blank, ["max_pool_1"])["max_pool_1"])[0]
    assert background_channels(flat, ref).tolist() == [True, False]  # channel 0 fires on a plain background
    assert informative_channels(acts, ref, exclude=background_channels(flat, ref)).tolist() == [1, 1]
    assert informative_channels(acts, ref, exclude=torch.tensor([True, True])).tolist() == [0, 0]  # none left: all
    # the picture projects channel 1 (red on the garment only), not channel 0 (dark blue on the whole background)
    x, y = torch.cat([probe, ref_x]), torch.cat([torch.tensor([0, 1]), torch.arange(40) % 2])
    cb = DeconvCallback(layers=["max_pool_1"], per_class=20)
    cb.configure_for(net, (1, 28, 28))
    img = render_once(cb, net, x, y, ("a", "b"), pixel_range=(-0.8, 2.0), callbacks=[cb]).images["deconv"][0]
    grid = img[:, :-64]  # above the colour bar
    assert has_colour(grid, (103, 0, 31)) and not has_colour(grid, (5, 48, 97))  # +1 drawn, -1 nowhere
