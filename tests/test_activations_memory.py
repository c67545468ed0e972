"""The activations callback's histograms are gathered pass by pass, each pass's captured maps within the byte budget
top activations uses (``VisualizationCallback.capture_bytes``), and are the same values as thinning one capture
of every image (to float rounding: a conv of fewer images may round differently; at LeNet-5's size every image
is one pass, as before): on a real torchvision ResNet, the budget cut to a few images."""

from __future__ import annotations

import math

import torch
import torchvision

from callbacks.activations import HISTOGRAM_MAX, ActivationsCallback
from callbacks.hooks import capture_activations
from callbacks.technique import HISTOGRAM_VALUES


def per_image_bytes(cb: ActivationsCallback) -> int:
    """What one image of a capture pass holds: its captured maps, and the net's largest activations in flight."""
    largest = max(math.prod(shape) for shape in cb.shapes.values())
    return (sum(math.prod(cb.shapes[n]) for n in cb.layer_names) + 3 * largest) * 4


def test_histograms_are_captured_within_the_byte_budget_and_equal_one_whole_capture():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    cb = ActivationsCallback(strict=True)
    cb.configure_for(net, (3, 64, 64))
    assert len(cb.layer_names) == 16
    x = torch.rand(10, 3, 64, 64)
    cb.capture_bytes = 3 * per_image_bytes(cb)  # three images' maps per pass
    batches: list[int] = []
    handle = net.register_forward_pre_hook(lambda mod, args: batches.append(len(args[0])))
    try:
        with torch.no_grad():
            got = cb.histogram_values(net, x)
    finally:
        handle.remove()
    assert batches == [3, 3, 3, 1]
    with torch.no_grad():
        whole = capture_activations(net, x, cb.layer_names)
    for layer in cb.layer_names:
        flat = whole[layer].flatten()
        expected = flat[:: -(-flat.numel() // HISTOGRAM_VALUES)]
        assert 0 < len(got[layer]) <= HISTOGRAM_VALUES and got[layer].shape == expected.shape, layer
        # (a conv of 3 images may round differently from one of 10: equal to float rounding)
        torch.testing.assert_close(got[layer], expected, rtol=1e-5, atol=1e-5)


def test_resnet50_at_224px_histograms_pass_in_batches_within_512_mb():
    """The 16 default layers of a ResNet-50 at 224 px hold about 18 MB per image: 200 images were 3.6 GB of maps at
    once (and 18 GB of process memory, measured, with what capturing them took)."""
    net = torchvision.models.resnet50(num_classes=1000).eval()
    cb = ActivationsCallback()
    cb.configure_for(net, (3, 224, 224))
    batch = cb.capture_batch(torch.zeros(1, 3, 224, 224), cb.layer_names, HISTOGRAM_MAX)
    assert per_image_bytes(cb) * HISTOGRAM_MAX > 3 * 2**30  # what one capture of every image held
    assert 1 <= batch < HISTOGRAM_MAX and batch * per_image_bytes(cb) <= cb.capture_bytes == 2**29


def test_the_shared_pass_batches_within_its_byte_bound_with_the_same_statistics():
    """``activation_pass`` (the fixed set's shared pass) takes fewer images per batch where their captured maps and
    the net's largest activations would pass ``max_bytes`` (a 224 px ResNet-50 held 11 GB in one batch of 1,000), with
    the same statistics."""
    from callbacks.hooks import activation_pass, layer_shapes
    from lit_modules.nets import LeNet5

    torch.manual_seed(0)
    net = LeNet5().eval()
    x, y = torch.rand(50, 1, 28, 28), torch.arange(50) % 10
    sizes: list[int] = []
    net.conv_1.register_forward_pre_hook(lambda m, args: sizes.append(len(args[0])))
    whole = activation_pass(net, x, ["relu_3"], ["conv_1", "relu_2"], labels=y, num_classes=10)
    assert sizes == [1, 50]  # the dry pass, then everything in one batch within the default bound
    shapes = layer_shapes(net, (1, 28, 28))
    largest = max(math.prod(shape) for shape in shapes.values())  # the net's largest activation: in flight
    per_image = 4 * (sum(math.prod(shapes[n]) for n in ("relu_3", "conv_1", "relu_2")) + 3 * largest)
    sizes.clear()
    bounded = activation_pass(
        net, x, ["relu_3"], ["conv_1", "relu_2"], labels=y, num_classes=10, max_bytes=8 * per_image + 1
    )
    assert sizes == [1] + [8] * 6 + [2]  # the dry pass (one image) that sizes the batches, then 8 a batch
    for a, b in zip(whole, bounded, strict=True):
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
