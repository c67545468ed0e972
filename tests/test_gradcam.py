"""Grad-CAM (callbacks/methods/gradcam.py, callbacks/gradcam.py): a known answer on a one-conv net, equality with
plain autograd on LeNet-5, the method's invariants (hooks, .grad, flags, inference mode), bad layers, and a short
real fit on Fashion-MNIST whose pictures are read back from the event file."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from callbacks import VISUALIZATIONS
from callbacks.figures import CARD_WIDTH
from callbacks.gradcam import GradCAMCallback
from callbacks.hooks import LayerError
from callbacks.methods.gradcam import grad_cam, place_at_field
from callbacks.methods.top_activations import receptive_field
from lit_modules.nets import MLP, LeNet5
from tests.conftest import FASHION_DIR, _fit, _images, render_once


def one_conv_net() -> nn.Module:
    """conv (1 -> 2 channels, 1x1, weights +1 and -1) -> global average pool -> Linear(2, 2) with weights
    [[2, 1], [0, 3]], no biases. With A = (x, -x) on h x w positions, dy_k / dA_c = W[k, c] / (h w), so Grad-CAM
    of class 0 is ReLU((2 x - x) / hw) ~ ReLU(x) and of class 1 is ReLU(-3 x / hw) ~ ReLU(-x)."""
    net = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(1, 2, 1, bias=False),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(2, 2, bias=False),
        )
    )
    with torch.no_grad():
        net.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        net.fc.weight.copy_(torch.tensor([[2.0, 1.0], [0.0, 3.0]]))
    return net.eval()


def reference(net: nn.Sequential, layer: str, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Grad-CAM by hand with plain autograd: run the children in order, cut the graph at ``layer``."""
    h = x
    for name, module in net.named_children():
        h = module(h)
        if name == layer:
            a = h = h.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(h[torch.arange(len(x)), targets].sum(), a)
    cam = torch.relu((grad.mean((2, 3))[:, :, None, None] * a.detach()).sum(1))  # (N, h, w)
    cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    top = cam.flatten(1).amax(1)[:, None, None]
    return torch.where(top > 0, cam / top, cam)  # a map without positive evidence stays all zero


def test_known_answer_on_one_conv_and_global_average_pool():
    x = torch.tensor([[0.0, 1.0, -2.0, 4.0], [3.0, -1.0, 0.5, 0.0], [-4.0, 2.0, 1.0, -0.5], [1.0, 0.0, -3.0, 2.0]])
    images = x.view(1, 1, 4, 4).repeat(2, 1, 1, 1)
    maps = grad_cam(one_conv_net(), "conv", images, torch.tensor([0, 1]))
    assert maps.shape == (2, 4, 4)
    assert torch.allclose(maps[0], x.clamp(min=0) / 4.0)  # ReLU(x) / its max 4
    assert torch.allclose(maps[1], (-x).clamp(min=0) / 4.0)  # ReLU(-x) / its max 4


def test_equals_plain_autograd_on_lenet5_and_upsamples_to_the_image():
    torch.manual_seed(0)
    net, x, targets = LeNet5().eval(), torch.rand(6, 1, 28, 28), torch.tensor([0, 3, 9, 1, 1, 7])
    for layer in ("relu_1", "relu_2", "max_pool_2"):  # 28x28, 10x10 and 5x5 maps
        maps = grad_cam(net, layer, x, targets)
        assert maps.shape == (6, 28, 28) and maps.min() >= 0 and maps.max() <= 1
        assert torch.allclose(maps, reference(net, layer, x, targets), atol=1e-5), layer
        assert (maps.flatten(1).amax(1) == 1).sum() >= 2, layer  # not all maps are all zero: a real comparison


def test_no_hooks_grads_flags_untouched_and_works_under_inference_mode():
    torch.manual_seed(1)
    net = LeNet5().train()
    net.fc_1.eval()  # a mixed state, restored module by module
    net.conv_2.weight.requires_grad_(False)
    net.conv_1.weight.grad = torch.ones_like(net.conv_1.weight)
    flags = {m: m.training for m in net.modules()}
    x, t = torch.rand(3, 1, 28, 28), torch.tensor([2, 5, 8])
    expected = grad_cam(net, "relu_2", x, t)
    with torch.inference_mode():  # as Lightning's validation loop runs
        x_inf, t_inf = x.clone(), t.clone()
        got = grad_cam(net, "relu_2", x_inf, t_inf)
    with torch.no_grad():
        assert torch.equal(grad_cam(net, "relu_2", x, t), expected)
    assert torch.equal(got, expected)
    assert all(not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks for m in net.modules())
    assert {m: m.training for m in net.modules()} == flags
    assert torch.equal(net.conv_1.weight.grad, torch.ones_like(net.conv_1.weight))
    assert all(p.grad is None for n, p in net.named_parameters() if n != "conv_1.weight")
    assert not net.conv_2.weight.requires_grad and net.conv_1.weight.requires_grad


def test_bad_layers_and_targets():
    net, x = LeNet5().eval(), torch.rand(2, 1, 28, 28)
    with pytest.raises(LayerError, match=r"unknown layer name.*nope.*valid: conv_1, relu_1, max_pool_1"):
        grad_cam(net, "nope", x, torch.tensor([0, 1]))
    with pytest.raises(LayerError, match="spatial layer.*'fc_1'"):
        grad_cam(net, "fc_1", x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class indices in 0..9"):
        grad_cam(net, "relu_2", x, torch.tensor([0, 10]))
    with pytest.raises(LayerError, match=r"GradCAMCallback: unknown layer name.*nope.*valid: conv_1"):
        GradCAMCallback(layer="nope").configure_for(net, (1, 28, 28))
    with pytest.raises(LayerError, match="GradCAMCallback: Grad-CAM needs a \\(C, H, W\\) layer; 'fc_2'"):
        GradCAMCallback(layer="fc_2").configure_for(net, (1, 28, 28))


def test_default_layer_is_the_last_stage_feature_and_an_mlp_draws_nothing():
    cb = GradCAMCallback()
    cb.configure_for(LeNet5(), (1, 28, 28))
    assert cb.layer_name == "relu_2" and VISUALIZATIONS["gradcam"] is GradCAMCallback
    cb.configure_for(MLP(), (1, 28, 28))
    assert cb.layer_name is None


def test_fashion_mnist_fit_logs_a_card_wide_gradcam_picture_every_epoch(tmp_path):
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST is not in {FASHION_DIR}: apt-get install dataset-fashion-mnist")
    others = [a for key in VISUALIZATIONS if key != "gradcam" for a in (f"--{key}.enabled", "false")]
    _fit(tmp_path / "data", tmp_path, extra=["--data.dataset", "fashion_mnist", "--gradcam.strict", "true", *others])
    ea = EventAccumulator(str(tmp_path / "lightning_logs" / "version_0"), size_guidance={"images": 0})
    ea.Reload()
    assert [t for t in ea.Tags()["images"] if t.startswith("gradcam")] == ["gradcam/relu_2"]
    imgs = _images(ea, "gradcam/relu_2")  # {step: (H, W, 3) uint8}
    assert sorted(imgs) == [0, 1]
    for img in imgs.values():
        assert img.shape[1] <= CARD_WIDTH and img.shape[0] <= 1600
        hsv_saturated = (img.max(2).astype(int) - img.min(2).astype(int)) > 80  # the heat colours over grey images
        assert hsv_saturated.mean() > 0.02
    assert not (imgs[0] == imgs[1]).all()  # the maps moved with one epoch of training


def blob_net() -> nn.Sequential:
    """LeNet-5's geometry with one channel of centre-tap kernels: relu_2 cell (r, c) is the max of pixels
    rows 2r+4..2r+5, columns 2c+4..2c+5, so a 2 x 2 blob there lights exactly that cell, whose receptive field is
    centred at (2r+4.5, 2c+4.5). The class-0 logit sums relu_2, so Grad-CAM of class 0 is relu_2 itself."""
    net = nn.Sequential(
        OrderedDict(
            conv_1=nn.Conv2d(1, 1, 5, padding=2, bias=False),
            relu_1=nn.ReLU(),
            max_pool_1=nn.MaxPool2d(2),
            conv_2=nn.Conv2d(1, 1, 5, bias=False),
            relu_2=nn.ReLU(),
            flatten=nn.Flatten(),
            fc=nn.Linear(100, 2, bias=False),
        )
    )
    with torch.no_grad():
        for conv in (net.conv_1, net.conv_2):
            conv.weight.zero_()[0, 0, 2, 2] = 1.0
        net.fc.weight.fill_(0.0)[0] = 1.0
    return net.eval()


def test_off_centre_blob_lands_on_the_blob_at_receptive_field_centres_not_with_the_plain_stretch():
    net, x = blob_net(), torch.zeros(1, 1, 28, 28)
    x[0, 0, 8:10, 20:22] = 1.0  # off-centre object: rows 8-9, columns 20-21, centre (8.5, 20.5)
    rf = receptive_field(net, "relu_2", (1, 28, 28))
    assert rf == (14, 2, 4.5)
    grid = torch.stack(torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij"))  # (2, 28, 28)

    def centre(m):  # the map's centre of mass (row, col)
        return (m * grid).sum((1, 2)) / m.sum()

    placed = grad_cam(net, "relu_2", x, torch.tensor([0]), field=rf)[0]
    assert torch.allclose(centre(placed), torch.tensor([8.5, 20.5]), atol=1e-4)
    assert placed[8:10, 20:22].min() == placed.max()  # the peak is on the blob's four pixels
    assert placed[x[0, 0] == 0].sum() < placed.sum()  # and fades off it within one stride
    stretched = grad_cam(net, "relu_2", x, torch.tensor([0]))[0]  # the standard resize: cell 8 of 10 -> px 22.9
    assert torch.allclose(stretched, reference(net, "relu_2", x, torch.tensor([0])), atol=1e-6)
    assert (centre(stretched) - torch.tensor([8.5, 20.5])).abs().max() > 2  # pushed off the object, outwards
    assert stretched[8:10, 20:22].max() < stretched.max()


def test_place_at_field_keeps_a_uniform_map_uniform_inside_the_cell_centres():
    rf = receptive_field(LeNet5(), "relu_2", (1, 28, 28))
    m = place_at_field(torch.ones(1, 10, 10), rf, (28, 28))[0]
    inside = slice(5, 23)  # pixels 4.5 .. 22.5: between the outermost centres
    assert torch.allclose(m[inside, inside], torch.ones(18, 18))
    assert m[:2].abs().max() == 0 and m[:, 25:].abs().max() == 0  # beyond one stride outside: nothing


def test_gradcam_pp_weights_by_hand_and_its_picture():
    """Grad-CAM++'s weights (``methods.gradcam_pp``, the seam ``cam_weights``) against the closed form computed by
    hand, and the technique draws its own tag with its own title; Grad-CAM's weights are the mean gradient."""
    from callbacks.gradcam_pp import GradCAMPlusPlus
    from callbacks.methods.gradcam import gradcam_weights
    from callbacks.methods.gradcam_pp import gradcam_pp_weights

    grad = torch.tensor([[[[2.0, 0.0], [1.0, -1.0]]]])  # (1, 1, 2, 2)
    acts = torch.tensor([[[[1.0, 3.0], [0.0, 2.0]]]])  # sum 6
    alpha = [4 / (8 + 6 * 8), 0.0, 1 / (2 + 6 * 1), 1 / (2 + 6 * -1)]  # g^2 / (2 g^2 + S g^3), 0 where g = 0
    want = 2.0 * alpha[0] + 1.0 * alpha[2]  # relu(g) * alpha, summed: the negative gradient counts nothing
    torch.testing.assert_close(gradcam_pp_weights(grad, acts).flatten(), torch.tensor([want]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gradcam_weights(grad, acts).flatten(), torch.tensor([0.5]))
    torch.manual_seed(0)
    net = LeNet5().eval()
    x, y = torch.rand(10, 1, 28, 28), torch.arange(10)
    technique = GradCAMPlusPlus(enabled=True)
    assert GradCAMPlusPlus().enabled is False  # off unless asked for
    technique.configure_for(net, (1, 28, 28))
    logged = render_once(technique, net, x, y).images
    assert list(logged) == ["gradcam_pp/relu_2"]
