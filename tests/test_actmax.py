"""Activation maximization (callbacks/methods/actmax.py, callbacks/actmax.py): it raises the unit, shows a linear
unit's filter, stays in range, leaves the net as found, and on a trained net its images are what the units detect."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from callbacks import actmax, figures
from callbacks.actmax import ActMaxCallback
from callbacks.hooks import layer_shapes
from callbacks.methods import actmax as method
from callbacks.methods.actmax import (
    DEFAULT_L2,
    DEFAULT_TV,
    _penalty_grad,
    _RedirectedReLU,
    cross_activations,
    diagonal_dominance,
    layer_units,
    maximize_activation,
    unit_activation,
    weight_correlation,
)
from lit_modules.nets import MLP, LeNet5
from tests.conftest import FASHION_DIR, has_colour, render_once

MEAN, STD = 0.2860, 0.3530
FASHION_RANGE = ((0.0 - MEAN) / STD, (1.0 - MEAN) / STD)  # about (-0.81, 2.02)
CASES = [("conv_2", list(range(16))), ("fc_3", list(range(10))), ("relu_1", list(range(6))), ("fc_1", [0, 7, 119])]
NO_PRIORS = dict(l2=0.0, tv=0.0, jitter=0, scale=0.0, rotate=0.0, blur_every=0)


@pytest.fixture
def lenet() -> LeNet5:
    torch.manual_seed(0)
    return LeNet5()


def n_hooks(net: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())


def probes(n: int = 20, seed: int = 1, constants: bool = False) -> torch.Tensor:
    """``n`` random images uniform in the pixel range and mid-grey, plus black and white if asked."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = FASHION_RANGE
    x = lo + (hi - lo) * torch.rand(n, 1, 28, 28, generator=g)
    levels = torch.tensor([(lo + hi) / 2, lo, hi] if constants else [(lo + hi) / 2])
    return torch.cat([x, levels.view(-1, 1, 1, 1).expand(len(levels), 1, 28, 28)])


# ------------------------------------------------------------------------------------------ it does its job
@pytest.mark.parametrize("layer,units", CASES)
@pytest.mark.parametrize("priors", ["default", "none"])
def test_optimized_image_beats_every_probe_image(lenet, layer, units, priors):
    # With the default priors the optimum trades some activation for smoothness: random probes only. Without
    # priors it must beat the constant images too.
    kwargs = NO_PRIORS if priors == "none" else {}
    x = maximize_activation(lenet, layer, units, pixel_range=FASHION_RANGE, **kwargs)
    got = unit_activation(lenet, layer, x, units)
    p = probes(constants=priors == "none")
    for i, u in enumerate(units):
        best_probe = unit_activation(lenet, layer, p, [u] * len(p)).max()
        assert got[i] > best_probe, f"{layer} unit {u}: actmax {got[i]:.4f} <= best probe {best_probe:.4f}"


def test_centre_neuron_of_a_linear_conv_unit_reproduces_its_filter(lenet):
    """conv_1 (5x5, pad 2, before its ReLU) is linear in the input: its centre neuron at (14, 14) sees the patch
    rows/columns 12..16, and its gradient there is the filter itself. With only an L2 pull strong enough that no
    pixel clips, the maximizer is mid-grey + filter / (2 * l2): the centre patch is the filter, the rest grey.
    The channel mean has the same gradient, the filter's weight sum, at every interior pixel: its image is a flat
    field (with the default priors too), bright or dark as the weight sum's sign says, whatever the filter."""
    w = lenet.conv_1.weight.detach()[:, 0]  # (6, 5, 5)
    units, (lo, hi) = list(range(6)), FASHION_RANGE
    plain = dict(NO_PRIORS, l2=50.0)
    x = maximize_activation(lenet, "conv_1", units, pixel_range=FASHION_RANGE, **plain)
    r = weight_correlation(w, x[:, 0, 12:17, 12:17])
    assert r.min() > 0.99, r
    outside = x[:, 0].clone()
    outside[:, 12:17, 12:17] = (lo + hi) / 2
    torch.testing.assert_close(outside, torch.full_like(outside, (lo + hi) / 2), atol=0.02, rtol=0)
    default = maximize_activation(lenet, "conv_1", units, pixel_range=FASHION_RANGE)
    # the bar. Not 100% by construction: near the optimum image i is about grey + w_i / (2 * l2), so unit j
    # sees w_j . w_i from it, and a weak filter aligned with a strong one prefers the strong one's image
    assert diagonal_dominance(cross_activations(lenet, "conv_1", default, units)) >= 0.8
    for kwargs in (plain, {}):
        flat = maximize_activation(lenet, "conv_1", units, objective="channel", pixel_range=FASHION_RANGE, **kwargs)
        interior = flat[:, 0, 6:-6, 6:-6]  # away from the border, where zero padding and transforms differ
        assert interior.flatten(1).std(1).max() < 0.02 * (hi - lo), interior.flatten(1).std(1)
        assert torch.equal(interior.mean((1, 2)) > (lo + hi) / 2, w.sum((1, 2)) > 0)
        # the centre-neuron images have a pattern, and drive their own unit more than the flat fields do
        assert default[:, 0, 10:19, 10:19].flatten(1).std(1).min() > 0.1 * (hi - lo)
        assert (unit_activation(lenet, "conv_1", default, units) > unit_activation(lenet, "conv_1", flat, units)).all()


def test_dead_relu_unit_still_rises(lenet, monkeypatch):
    """A channel that is 0 everywhere on the start has no exact gradient; the redirected ReLU moves it."""
    with torch.no_grad():
        lenet.conv_1.bias[1] = -0.5  # dead on grey; a darker patch makes it positive
    assert unit_activation(lenet, "relu_1", probes(0), [1]) == 0  # probes(0): the mid-grey start only
    x = maximize_activation(lenet, "relu_1", [1, 2], pixel_range=FASHION_RANGE)
    assert unit_activation(lenet, "relu_1", x, [1, 2]).min() > 0.02
    # Without the redirection the unit never moves.
    monkeypatch.setattr(method, "_redirect_relu_hook", lambda *args: None)
    x = maximize_activation(lenet, "relu_1", [1, 2], pixel_range=FASHION_RANGE)
    assert unit_activation(lenet, "relu_1", x[:1], [1]) == 0


def test_redirected_relu_gradient_is_exact_where_relu_passes_gradient():
    x = torch.tensor([[1.0, -1.0, -2.0], [-1.0, -2.0, -3.0]], requires_grad=True)  # image 1: all inputs negative
    grad_out = torch.tensor([[2.0, 3.0, -4.0], [5.0, -6.0, 7.0]])
    (g,) = torch.autograd.grad(_RedirectedReLU.apply(x), x, grad_out)
    # Image 0 has a positive input: exact ReLU gradient. Image 1 is dead: gradients that raise x pass, others not.
    assert g.tolist() == [[2.0, 0.0, 0.0], [5.0, 0.0, 7.0]]
    assert torch.equal(_RedirectedReLU.apply(x), x.clamp(min=0))


def test_unit_activation_is_centre_neuron_channel_mean_and_logit(lenet):
    x = probes(4, constants=True)[:4]
    with torch.no_grad():
        conv_2 = nn.Sequential(*list(lenet.children())[:4])(x)  # conv_1, relu_1, max_pool_1, conv_2: (4, 16, 10, 10)
        logits = lenet(x)
    units = [3, 0, 15, 3]
    centre = torch.stack([conv_2[i, u, 5, 5] for i, u in enumerate(units)])
    mean = torch.stack([conv_2[i, u].mean() for i, u in enumerate(units)])
    torch.testing.assert_close(unit_activation(lenet, "conv_2", x, units), centre)
    torch.testing.assert_close(unit_activation(lenet, "conv_2", x, units, objective="neuron"), centre)
    torch.testing.assert_close(unit_activation(lenet, "conv_2", x, units, objective="channel"), mean)
    for objective in ("neuron", "channel"):  # a 2-D output: both are the column, here the pre-softmax logit
        got = unit_activation(lenet, "fc_3", x, [9, 1, 2, 0], objective=objective)
        torch.testing.assert_close(got, logits[torch.arange(4), [9, 1, 2, 0]])
    assert layer_units(lenet, "conv_2") == 16 and layer_units(lenet, "fc_1") == 120 and layer_units(lenet, "fc_3") == 10


def test_cross_activations_and_diagonal_dominance(lenet):
    x = probes(3)[:3]
    acts = cross_activations(lenet, "fc_3", x, [4, 7, 1])
    with torch.no_grad():
        expected = lenet(x)[:, [4, 7, 1]]
    torch.testing.assert_close(acts, expected)
    assert diagonal_dominance(torch.tensor([[3.0, 0.0, 1.0], [1.0, 2.0, 5.0], [2.0, 1.0, 0.0]])) == pytest.approx(2 / 3)
    assert diagonal_dominance(torch.tensor([[1.0, 1.0], [1.0, 2.0]])) == 0.5  # a tie is no dominance
    with pytest.raises(ValueError, match="square"):
        diagonal_dominance(torch.zeros(2, 3))


def test_output_shape_range_finite_and_deterministic(lenet):
    units = [0, 5, 5, 9]
    rng_before = torch.get_rng_state()
    a = maximize_activation(lenet, "fc_3", units, pixel_range=FASHION_RANGE, steps=32, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_before)  # a private generator; the global RNG is untouched
    torch.manual_seed(1234)  # and the global RNG has no influence
    b = maximize_activation(lenet, "fc_3", units, pixel_range=FASHION_RANGE, steps=32, seed=3)
    c = maximize_activation(lenet, "fc_3", units, pixel_range=FASHION_RANGE, steps=32, seed=4)
    assert a.shape == (4, 1, 28, 28) and a.dtype == torch.float32 and not a.requires_grad
    assert torch.isfinite(a).all()
    assert a.min() >= FASHION_RANGE[0] and a.max() <= FASHION_RANGE[1]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    d = maximize_activation(lenet, "conv_1", [2], steps=8)  # default range (0, 1)
    assert d.shape == (1, 1, 28, 28) and d.min() >= 0 and d.max() <= 1


def test_warm_start_continues_from_init_without_changing_it(lenet):
    x0 = maximize_activation(lenet, "conv_2", [1, 2], pixel_range=FASHION_RANGE, steps=16)
    kept = x0.clone()
    x1 = maximize_activation(lenet, "conv_2", [1, 2], pixel_range=FASHION_RANGE, steps=1, init=x0, lr=0.05)
    assert torch.equal(x0, kept)
    # One Adam step moves each pixel by at most lr (no blur after the last step): it started from init.
    assert (x1 - x0).abs().max() <= 0.05 + 1e-5
    assert (x1 - x0).abs().max() > 0.01
    with pytest.raises(ValueError, match=r"init must have shape \(2, 1, 28, 28\)"):
        maximize_activation(lenet, "conv_2", [1, 2], init=x0[:1])


# ------------------------------------------------------------------------------------- leaves the net alone
def test_net_left_as_found(lenet):
    lenet.train()
    lenet.fc_1.eval()  # a mixed state must come back exactly, not as net.train()
    modes = {name: m.training for name, m in lenet.named_modules()}
    lenet.fc_2.weight.requires_grad_(False)
    flags = {name: p.requires_grad for name, p in lenet.named_parameters()}
    user_hook = lenet.conv_2.register_forward_hook(lambda *a: None)
    lenet.fc_3.bias.grad = torch.full_like(lenet.fc_3.bias, 7.0)
    state = {k: v.clone() for k, v in lenet.state_dict().items()}

    maximize_activation(lenet, "conv_2", [0, 1], steps=4)
    maximize_activation(lenet, "fc_3", [3], steps=4)

    assert {name: m.training for name, m in lenet.named_modules()} == modes
    assert {name: p.requires_grad for name, p in lenet.named_parameters()} == flags
    assert n_hooks(lenet) == 1 and len(lenet.conv_2._forward_hooks) == 1  # the user's own hook stays
    user_hook.remove()
    assert all(p.grad is None for name, p in lenet.named_parameters() if name != "fc_3.bias")
    assert torch.equal(lenet.fc_3.bias.grad, torch.full_like(lenet.fc_3.bias, 7.0))
    assert all(torch.equal(v, state[k]) for k, v in lenet.state_dict().items())


class FailOnCall(nn.Module):
    """Wraps a module and raises on its ``n``-th call."""

    def __init__(self, inner: nn.Module, n: int) -> None:
        super().__init__()
        self.inner, self.n, self.calls = inner, n, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("boom")
        return self.inner(x)


def test_hooks_removed_and_mode_restored_after_errors(lenet):
    lenet.train()
    with pytest.raises(ValueError):
        maximize_activation(lenet, "conv_2", [16])  # fails after the hooks are in place (range check)
    assert n_hooks(lenet) == 0 and lenet.training and all(m.training for m in lenet.modules())
    lenet.conv_1 = FailOnCall(lenet.conv_1, n=4)  # the dry run is call 1; fails inside the optimization loop
    with pytest.raises(RuntimeError, match="boom"):
        maximize_activation(lenet, "conv_2", [0, 1])
    assert lenet.conv_1.calls == 4
    assert n_hooks(lenet) == 0 and all(m.training for m in lenet.modules())
    assert all(p.grad is None for p in lenet.parameters())


def test_works_under_inference_mode(lenet):
    expected = maximize_activation(lenet, "conv_2", [4, 8], pixel_range=FASHION_RANGE, steps=16)
    with torch.inference_mode():
        init = torch.zeros(2, 1, 28, 28)  # an inference tensor, as a warm start made during validation would be
        got = maximize_activation(lenet, "conv_2", [4, 8], pixel_range=FASHION_RANGE, steps=16)
        warm = maximize_activation(lenet, "conv_2", [4, 8], pixel_range=FASHION_RANGE, steps=4, init=init)
        assert torch.is_inference_mode_enabled()  # still on afterwards
    assert torch.equal(got, expected)
    assert torch.isfinite(warm).all() and not torch.equal(warm, torch.zeros_like(warm))
    assert n_hooks(lenet) == 0 and all(p.grad is None for p in lenet.parameters())


# ------------------------------------------------------------------------------------------- clear errors
def test_unknown_layer_lists_valid_names(lenet):
    with pytest.raises(ValueError, match="conv3") as e:
        maximize_activation(lenet, "conv3", [0])
    for name in ("conv_1", "relu_2", "max_pool_2", "fc_3"):
        assert name in str(e.value)
    with pytest.raises(ValueError, match="valid: conv_1"):
        unit_activation(lenet, "nope", torch.zeros(1, 1, 28, 28), [0])
    assert n_hooks(lenet) == 0


@pytest.mark.parametrize(
    "layer,units,valid", [("conv_2", [0, 16], "0..15"), ("fc_3", [-1], "0..9"), ("conv_1", [6], "0..5")]
)
def test_unit_out_of_range_names_layer_and_range(lenet, layer, units, valid):
    with pytest.raises(ValueError, match=f"{layer}.*{valid}"):
        maximize_activation(lenet, layer, units)
    with pytest.raises(ValueError, match=f"{layer}.*{valid}"):
        unit_activation(lenet, layer, torch.zeros(len(units), 1, 28, 28), units)
    assert n_hooks(lenet) == 0


def test_other_bad_inputs(lenet):
    with pytest.raises(ValueError, match="unknown objective 'center'; valid: neuron, channel"):
        maximize_activation(lenet, "conv_2", [0], objective="center")
    with pytest.raises(ValueError, match="unknown objective"):
        unit_activation(lenet, "conv_2", torch.zeros(1, 1, 28, 28), [0], objective="mean")
    with pytest.raises(ValueError, match="ActMaxCallback: objective must be one of neuron, channel, got 'centre'"):
        ActMaxCallback(objective="centre")
    for name, value, least in [("steps", 2.5, 1), ("steps", True, 1), ("warm_steps", -1, 0), ("warm_steps", 0.5, 0)]:
        with pytest.raises(ValueError, match=rf"ActMaxCallback: {name} must be an integer >= {least}, got {value!r}"):
            ActMaxCallback(**{name: value})
    with pytest.raises(ValueError, match="empty unit list"):
        maximize_activation(lenet, "fc_3", [])
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        maximize_activation(lenet, "fc_3", [0], steps=0)
    with pytest.raises(ValueError, match="pixel_range"):
        maximize_activation(lenet, "fc_3", [0], pixel_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="integer indices"):
        maximize_activation(lenet, "fc_3", [0.5])
    with pytest.raises(ValueError, match="one image per unit"):
        unit_activation(lenet, "fc_3", torch.zeros(2, 1, 28, 28), [0])
    with pytest.raises(ValueError, match="scale"):
        maximize_activation(lenet, "fc_3", [0], scale=-0.1)
    with pytest.raises(ValueError, match="prior_mean"):
        maximize_activation(lenet, "fc_3", [0], prior_mean=torch.zeros(1, 14, 14))
    assert n_hooks(lenet) == 0


# --------------------------------------------------------------------------------------- pieces and helpers
def test_penalty_gradient_matches_autograd():
    z = torch.randn(3, 2, 7, 5, dtype=torch.float64, requires_grad=True)
    z0 = torch.randn(3, 2, 7, 5, dtype=torch.float64)
    l2, tv = 0.3, 1.7
    dh = z[..., 1:, :] - z[..., :-1, :]
    dw = z[..., :, 1:] - z[..., :, :-1]
    penalty = l2 * (z - z0).pow(2).sum() + tv * (dh.pow(2).sum() + dw.pow(2).sum())
    (expected,) = torch.autograd.grad(penalty, z)
    torch.testing.assert_close(_penalty_grad(z.detach(), l2, tv, z0), expected)
    assert DEFAULT_L2 > 0 and DEFAULT_TV > 0


def test_weight_correlation():
    w = torch.randn(4, 784, generator=torch.Generator().manual_seed(0))
    imgs = w.view(4, 1, 28, 28).clone()
    imgs[1] = -imgs[1]
    imgs[2] = 3 * imgs[2] + 5  # Pearson ignores scale and offset
    imgs[3] = 1.0  # constant: no correlation defined, reported as 0
    torch.testing.assert_close(weight_correlation(w, imgs), torch.tensor([1.0, -1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="one row of equal size"):
        weight_correlation(w, imgs[:3])


def test_mlp_hidden_unit_actmax_reproduces_its_weights():
    """A first-layer unit computes w . x + b: its gradient is w everywhere, so without the spatial priors the
    optimum is w pushed to the pixel range's ends (correlation with w is high but below 1, as pixels clip)."""
    torch.manual_seed(0)
    mlp = MLP()
    units = list(range(0, 128, 8))
    plain = maximize_activation(mlp, "fc_1", units, pixel_range=FASHION_RANGE, **NO_PRIORS)
    r = weight_correlation(mlp.fc_1.weight[units], plain)
    assert r.min() > 0.7, r
    smooth = maximize_activation(mlp, "fc_1", units, pixel_range=FASHION_RANGE)  # default priors: smoother than w
    assert weight_correlation(mlp.fc_1.weight[units], smooth).mean() < r.mean()


# ------------------------------------------------------------------------------------------------ the callback
def _decoded(picture: torch.Tensor) -> torch.Tensor:
    """A picture as a reader sees it after ``RenderContext.add_image``: PNG-encoded, decoded, ``(3, H, W)``."""
    rgb = np.asarray(Image.open(io.BytesIO(figures.to_png(picture))).convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


def test_callback_picture_is_the_documented_call(lenet):
    """The contract: every drawing shows ``maximize_activation(net, layer, units, pixel_range=..., steps=48,
    jitter=0, prior_mean=<mean of the fixed set>)``: the same seeded start at every drawing, no state kept."""
    lenet.eval()
    x, y = probes(20)[:20], torch.arange(20) % 10
    classes = tuple(f"c{i}" for i in range(10))
    cb = ActMaxCallback()
    cb.configure_for(lenet, (1, 28, 28))
    assert cb.layers is None and cb.layer_units == {
        "conv_1": list(range(6)),
        "conv_2": list(range(16)),
        "fc_3": list(range(10)),
    }
    assert (cb.steps, cb.warm_steps, cb.options["jitter"], cb.prior_mean) == (48, 0, 0, True)
    w = render_once(cb, lenet, x, y, pixel_range=FASHION_RANGE, classes=classes)
    assert sorted(w.images) == ["actmax/conv_1", "actmax/conv_2", "actmax/fc_3"]
    prior = x[cb.fixed_idx].float().mean(0)  # 20 images: all of them, in the fixed set's order
    ctx = SimpleNamespace(step=3, classes=classes, pixel_range=FASHION_RANGE)
    for layer, units in cb.layer_units.items():
        expected = maximize_activation(
            lenet, layer, units, pixel_range=FASHION_RANGE, steps=48, jitter=0, prior_mean=prior
        )
        img, step = w.images[f"actmax/{layer}"]
        assert torch.equal(img, _decoded(cb.picture(ctx, layer, units, expected))), layer
        assert img.dtype == torch.uint8 and img.shape[0] == 3 and img.shape[2] <= 450 and step == 3, img.shape
        assert has_colour(img, (0, 0, 0)) or has_colour(img, (255, 255, 255))  # the grey scale's ends
    assert cb.last == {} and cb.extra_state() == {}  # nothing of this drawing is carried to the next
    channel = ActMaxCallback(layers={"conv_1": [0, 1]}, objective="channel", steps=16, prior_mean=False)
    channel.configure_for(lenet, (1, 28, 28))
    w = render_once(channel, lenet, x, y, pixel_range=FASHION_RANGE, classes=classes)
    expected = maximize_activation(
        lenet, "conv_1", [0, 1], objective="channel", steps=16, jitter=0, pixel_range=FASHION_RANGE
    )
    assert torch.equal(w.images["actmax/conv_1"][0], _decoded(channel.picture(ctx, "conv_1", [0, 1], expected)))


def test_every_drawing_starts_from_the_same_noise(lenet):
    """Known answer: a drawing depends on the weights of its epoch only. Weights W, then changed weights, then W
    again: the third picture is the first one exactly, the second differs. With the opt-in warm start the third
    continues from the second's images and differs: the history shows (the old default's flaw)."""
    lenet.eval()
    x, y = probes(20)[:20], torch.arange(20) % 10
    original = {k: v.clone() for k, v in lenet.state_dict().items()}
    g = torch.Generator().manual_seed(5)
    changed = {k: v + 0.5 * v.std() * torch.randn(v.shape, generator=g) for k, v in original.items()}

    def three_drawings(cb):
        cb.configure_for(lenet, (1, 28, 28))
        pictures = []
        for change in (False, True, False):
            lenet.load_state_dict(changed if change else original)  # (not a rescaling: the ascent is normalized)
            w = render_once(cb, lenet, x, y, pixel_range=FASHION_RANGE)  # the same step: the same title
            pictures.append({tag: img for tag, (img, _) in w.images.items()})
        return pictures

    fresh = three_drawings(ActMaxCallback(steps=16))
    assert fresh[0].keys() == {"actmax/conv_1", "actmax/conv_2", "actmax/fc_3"}
    for tag in fresh[0]:
        assert torch.equal(fresh[0][tag], fresh[2][tag]), tag
        assert not torch.equal(fresh[0][tag], fresh[1][tag]), tag
    warm_cb = ActMaxCallback(steps=16, warm_steps=8)
    warm = three_drawings(warm_cb)
    assert all(torch.equal(fresh[0][tag], warm[0][tag]) for tag in fresh[0])  # the first drawing is the same
    assert not any(torch.equal(warm[0][tag], warm[2][tag]) for tag in warm[0])
    # the opt-in keeps the last images, in the checkpoint too, and continues from them
    state = warm_cb.extra_state()["last"]
    assert set(state) == {"conv_1", "conv_2", "fc_3"}
    restored = ActMaxCallback(steps=16, warm_steps=8)
    restored.load_extra_state({"last": state})
    assert all(torch.equal(restored.last[k], state[k]) for k in state)
    default = ActMaxCallback()
    default.load_extra_state({"last": state})  # an old checkpoint's images are not used by the default
    assert default.last == {}


def test_callback_draws_mlp_weights_beside_actmax():
    torch.manual_seed(0)
    mlp = MLP().eval()
    x, y = probes(20)[:20], torch.arange(20) % 10
    cb = ActMaxCallback(steps=16)
    cb.configure_for(mlp, (1, 28, 28))
    assert cb.layer_units == {"fc_1": list(range(16)), "fc_2": list(range(10))}
    w = render_once(cb, mlp, x, y, pixel_range=FASHION_RANGE)
    assert sorted(w.images) == ["actmax/fc_1", "actmax/fc_1/vs_weights", "actmax/fc_2"]
    img, _ = w.images["actmax/fc_1/vs_weights"]
    assert img.shape[2] <= 450
    assert has_colour(img, (103, 0, 31)) and has_colour(img, (5, 48, 97))  # the signed weight scale's ends
    images = maximize_activation(
        mlp,
        "fc_1",
        range(16),
        pixel_range=FASHION_RANGE,
        steps=16,
        jitter=0,
        prior_mean=x[cb.fixed_idx].float().mean(0),
    )
    r = weight_correlation(mlp.fc_1.weight[:16], images).mean()
    assert w.scalars["actmax/fc_1/vs_weights/mean_r"][0] == pytest.approx(float(r))


# ------------------------------------------------------------------------------------- on a trained LeNet-5
@pytest.fixture(scope="module")
def trained():
    """LeNet-5 after one epoch on the real Fashion-MNIST (raw loop, Adam 1e-3, batch 128; ~5-10 s on 2 CPU cores)."""
    present = all((FASHION_DIR / f"{s}-ubyte.gz").is_file() for s in ("train-images-idx3", "train-labels-idx1"))
    if not present:
        pytest.skip(f"Fashion-MNIST is not in {FASHION_DIR}: apt-get install dataset-fashion-mnist")
    from lit_modules.datamodule import MNISTDataModule

    dm = MNISTDataModule("fashion_mnist", download=False)
    dm.setup("fit")
    x, y = dm.split("train")
    torch.manual_seed(0)
    net = LeNet5()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for idx in torch.randperm(len(x)).split(128):
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    xv, yv = dm.split("val")
    with torch.no_grad():
        acc = (net(xv).argmax(1) == yv).float().mean().item()
    class_means = torch.stack([x[y == c].mean(0) for c in range(10)])  # (10, 1, 28, 28)
    prior = torch.cat([xv[yv == c][: actmax.PRIOR_PER_CLASS] for c in range(10)]).mean(0)  # as the callback's
    return net, dm.pixel_range, class_means, acc, prior


def test_trained_actmax_images_show_what_their_units_detect(trained):
    """The callback's default options on a trained net (the bars of benchmarks/actmax_quality.py but the judge)."""
    net, pixel_range, class_means, acc, prior = trained
    assert acc > 0.75
    cb = ActMaxCallback()
    cb.configure(net, layer_shapes(net))
    images = {}
    for layer, units in cb.layer_units.items():  # each unit's own image drives it more than the others' images do
        images[layer] = maximize_activation(
            net, layer, units, pixel_range=pixel_range, steps=cb.steps, prior_mean=prior, **cb.options
        )
        dominance = diagonal_dominance(cross_activations(net, layer, images[layer], units))
        assert dominance >= 0.8, (layer, dominance)
    with torch.no_grad():
        probs = net(images["fc_3"]).softmax(1)
    assert (probs.diagonal() >= 0.9).sum() >= 9, probs.diagonal()
    # Each logit image correlates best with the mean training image of its own class.
    corr = torch.stack([weight_correlation(class_means[c].expand(10, 1, 28, 28), images["fc_3"]) for c in range(10)], 1)
    assert (corr.argmax(1) == torch.arange(10)).sum() >= 8, corr
    # conv_1 is linear in the input: its centre neuron's image over the receptive field (rows and columns 12..16)
    # is its filter, measured from the mean image the optimization is pulled to
    w = net.conv_1.weight.detach()
    patch = (images["conv_1"] - prior)[:, :, 12:17, 12:17]
    cos = nn.functional.cosine_similarity(w.flatten(1), patch.flatten(1), dim=1)
    assert cos.median() >= 0.8, cos


def test_a_net_that_cannot_take_the_default_input_shape_is_told_how_to_give_one():
    """The methods alone default to ``input_shape=(1, 28, 28)``: on a colour net the dry pass says so and how to pass
    the net's own shape, instead of a bare convolution error."""
    import torchvision

    from callbacks.hooks import layer_shapes

    net = torchvision.models.resnet18(num_classes=10)
    for call in (lambda: maximize_activation(net, "layer4", [0], steps=1), lambda: layer_shapes(net)):
        with pytest.raises(
            ValueError, match=r"input_shape \(1, 28, 28\) failed: .*3 channels.*Pass input_shape=\(C, H, W\)"
        ):
            call()
    assert maximize_activation(net, "layer4", [0], steps=1, input_shape=(3, 32, 32)).shape == (1, 3, 32, 32)
