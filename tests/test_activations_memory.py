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
    return sum(math.prod(cb.shapes[n]) for n in cb.layer_names) * 4


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
