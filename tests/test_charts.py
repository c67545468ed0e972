"""The fully-connected activations and class-selectivity pictures: pure helpers with known answers, pictures read
back at the places the charts drew their cells, the blitted redraw against a fresh drawing, and every chart of the
analyses drawn from a net with NaN weights."""

from __future__ import annotations

import io
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from callbacks.confusion import ConfusionMatrixCallback
from callbacks.decision import DecisionCallback
from callbacks.fc_activations import FCActivationsCallback, FCChart, sparsity
from callbacks.figures import MAX_PALETTE_ERROR, colorbar, figure, to_image, to_png, to_rgb, to_uint8
from callbacks.importance import ImportanceCallback
from callbacks.layer_responses import LayerResponsesCallback
from callbacks.layers import following_nonlinearity
from callbacks.occlusion import OcclusionCallback
from callbacks.selectivity import SelectivityCallback, class_means, selectivity_index, sorted_by_preference
from lit_modules.nets import LeNet5
from tests.conftest import RecordingWriter, near, render_once

K = 4
CLASSES = ("zero", "one", "two", "three")
RED, BLUE = (103, 0, 31), (5, 48, 97)  # RdBu_r's ends: +max, -max
YELLOW, PURPLE = (253, 231, 37), (68, 1, 84)  # viridis's ends: max, 0


@pytest.fixture
def histograms(monkeypatch):
    """The recorder of ``render_once`` also keeps histograms (selectivity logs them)."""
    seen: dict = {}
    monkeypatch.setattr(
        RecordingWriter, "add_histogram", lambda self, tag, v, step: seen.__setitem__(tag, (v, step)), raising=False
    )
    return seen


def one_hot_net() -> nn.Sequential:
    """fc_1 = identity, relu_1, fc_2 = identity: for inputs ``2 e_c - 1`` the class means of fc_1 are +1 at unit c
    and -1 elsewhere; after relu_1, 1 at unit c and 0 elsewhere."""
    net = nn.Sequential(OrderedDict(fc_1=nn.Linear(K, K), relu_1=nn.ReLU(), fc_2=nn.Linear(K, K)))
    with torch.no_grad():
        for fc in (net.fc_1, net.fc_2):
            fc.weight.copy_(torch.eye(K))
            fc.bias.zero_()
    return net.eval()


def one_hot_set(per_class: int = 3):
    y = torch.arange(K).repeat(per_class)
    return 2 * torch.eye(K)[y] - 1, y


def pixel(img, chart_live, ax, xy):
    """The colour of ``img`` at data point ``xy`` of ``ax`` (a cell centre)."""
    ((cx, cy),) = chart_live.to_pixels(ax, [xy]).round().astype(int)
    return tuple(img[:, cy, cx].tolist())


def render(cb, net, x, y, classes=CLASSES, step=3, **kw):
    cb.configure_for(net, tuple(x.shape[1:]))  # as setup does, with the data's input shape
    return render_once(cb, net, x, y, classes, step=step, callbacks=[cb], **kw)


# ------------------------------------------------------------------------------------------- pure helpers
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


def test_fc_helpers():
    net = LeNet5()
    assert following_nonlinearity(net, "fc_1") == "relu_3" and following_nonlinearity(net, "fc_3") is None
    assert sparsity(torch.tensor([0.0, 1.0, 0.0, 2.0])) == 0.5


def test_sorted_by_preference_known_answer():
    means = torch.tensor(
        [
            [0.0, 4.0, 0.0, 1.0],  # class 0
            [0.0, 2.0, 5.0, 3.0],  # class 1
            [0.0, 0.0, 0.0, 1.0],
        ]
    )  # class 2; unit 0 is silent
    # SI: unit 1 (4 - 1) / (4 + 1) = 0.6, unit 2 1.0, unit 3 (3 - 1) / (3 + 1) = 0.5
    scaled, order = sorted_by_preference(means)
    # preferred class: unit 1 -> 0; units 2 and 3 -> 1 (unit 2 more selective first); unit 0 silent, last
    assert order.tolist() == [1, 2, 3, 0]
    assert torch.allclose(scaled[:, 0], torch.tensor([1.0, 0.5, 0.0]))  # unit 1 over its max 4
    assert torch.allclose(scaled[:, 2], torch.tensor([1 / 3, 1.0, 1 / 3]))  # unit 3 over its max 3
    assert torch.equal(scaled[:, 3], torch.zeros(3))  # the silent unit stays 0, no division by zero


# ---------------------------------------------------------------------------------------- fc_activations
def test_fc_activations_picture_shows_the_known_class_means():
    x, y = one_hot_set()
    cb = FCActivationsCallback(per_class=3)
    w = render(cb, one_hot_net(), x, y)
    assert cb.layer_names == ["fc_1", "fc_2"] and cb.layers is None
    assert set(w.images) == {"fc_activations/fc_1", "fc_activations/fc_2"}
    assert w.scalars["sparsity/relu_1"][0] == pytest.approx(1 - 1 / K)  # one unit of K is on for each sample
    img, step = w.images["fc_activations/fc_1"]
    assert step == 3 and img.dtype == torch.uint8 and img.shape[2] <= 720 and img.shape[1] > img.shape[2] / 2
    chart = next(c for key, c in cb._charts.items() if key[:2] == ("fc_1", "relu_1"))
    pre_ax, post_ax = (im.axes for im in chart.images)
    for c in range(K):
        for u in range(K):
            assert near(pixel(img, chart.live, pre_ax, (u, c)), RED if u == c else BLUE), (c, u)
            assert near(pixel(img, chart.live, post_ax, (u, c)), YELLOW if u == c else PURPLE), (c, u)
    logits, _ = w.images["fc_activations/fc_2"]
    assert logits.shape[1] < img.shape[1]  # no ReLU after fc_2: one panel


def test_fc_activations_scale_is_kept_across_epochs_and_raised_when_outgrown():
    x, y = one_hot_set()
    cb = FCActivationsCallback(per_class=3)
    net = one_hot_net()
    render(cb, net, x, y, step=0)
    chart = next(c for key, c in cb._charts.items() if key[:2] == ("fc_1", "relu_1"))
    assert chart.images[0].get_clim() == (-1.0, 1.0)
    with torch.no_grad():
        net.fc_1.weight.mul_(0.5)  # smaller values: the scale stays
    first = render(cb, net, x, y, step=1).images["fc_activations/fc_1"][0]
    assert chart.images[0].get_clim() == (-1.0, 1.0)
    with torch.no_grad():
        net.fc_1.weight.mul_(5)  # 2.5: raised to a round number
    again = render(cb, net, x, y, step=2).images["fc_activations/fc_1"][0]
    assert chart.images[0].get_clim() == (-2.5, 2.5)
    assert first.shape == again.shape and not torch.equal(first, again)


def test_blitted_redraw_equals_a_fresh_drawing():
    """A chart redrawn with new values (only its changing parts) gives the pixels a new chart draws at once."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(K, 6, generator=g), torch.randn(K, 6, generator=g)
    reused = FCChart("fc_1", "relu_1", CLASSES, 6, 3)
    reused.draw(a, a.relu(), [3.0, 3.0], step=0)
    fresh = FCChart("fc_1", "relu_1", CLASSES, 6, 3)
    assert torch.equal(reused.draw(b, b.relu(), [3.0, 3.0], step=1), fresh.draw(b, b.relu(), [3.0, 3.0], step=1))


# ------------------------------------------------------------------------------------------- selectivity
def test_selectivity_one_picture_for_every_layer_with_known_cells(histograms):
    x, y = one_hot_set()
    net = one_hot_net()
    cb = SelectivityCallback(layers=["fc_1", "relu_1"], per_class=3)
    w = render(cb, net, x, y)
    assert set(w.images) == {"selectivity"}
    img, step = w.images["selectivity"]
    assert step == 3 and img.shape[2] <= 720
    assert w.scalars["selectivity/relu_1/mean_index"][0] == pytest.approx(1.0)  # each unit fires for one class
    assert set(histograms) == {"selectivity/fc_1/index", "selectivity/relu_1/index"}
    chart = next(iter(cb._charts.values()))
    post_ax = chart.images[1].axes
    assert [t.text for t in chart.ticks[1][1]] == ["0", "1", "2", "3"]  # unit indices, by preferred class
    assert chart.notes[1].text == "relu_1: 4 units, mean SI 1.00"
    for c in range(K):
        for p in range(K):
            # fc_1 has negative means: one signed scale for the picture, +1 (unit's max) red, 0 white
            colour = pixel(img, chart.live, post_ax, (p, c))
            assert near(colour, RED) if p == c else colour[0] > 240 and colour[2] > 240, (c, p, colour)


def test_selectivity_picture_changes_between_epochs_and_keeps_its_size(histograms):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 1, 28, 28, generator=g), torch.arange(40) % 10
    cb = SelectivityCallback(per_class=4)
    torch.manual_seed(0)
    first = render(cb, LeNet5().eval(), x, y, tuple(str(c) for c in range(10)), step=0).images["selectivity"][0]
    torch.manual_seed(1)
    again = render(cb, LeNet5().eval(), x, y, tuple(str(c) for c in range(10)), step=1).images["selectivity"][0]
    assert cb.layer_names == ["relu_1", "relu_2", "relu_3", "relu_4"]
    assert first.shape == again.shape and not torch.equal(first, again)
    assert first.shape[2] <= 720 and first.shape[1] > first.shape[2]  # every layer, one above the other


# ------------------------------------------------------------------------------- broken nets still draw
def test_every_analysis_chart_draws_a_net_with_nan_weights(histograms):
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(30, 1, 28, 28, generator=g), torch.arange(30) % 10
    torch.manual_seed(0)
    net = LeNet5().eval()
    with torch.no_grad():
        net.conv_1.weight[0] = float("nan")
    classes = tuple(str(c) for c in range(10))
    callbacks = [
        FCActivationsCallback(per_class=3),
        SelectivityCallback(per_class=3),
        LayerResponsesCallback(per_class=3),
        ImportanceCallback(per_class=3),
        ConfusionMatrixCallback(),
        DecisionCallback(),
        OcclusionCallback(stride=4),
    ]
    for cb in callbacks:
        cb.configure_for(net, (1, 28, 28))
        w = render_once(cb, net, x, y, classes, callbacks=[cb])
        assert w.images, type(cb).__name__
        for tag, (img, _) in w.images.items():
            assert img.dtype == torch.uint8 and img.shape[0] == 3 and img.shape[2] <= 720, tag
            assert np.unique(img.numpy()).size > 2, tag  # a picture, not a blank


def _decoded(png: bytes) -> tuple[str, np.ndarray]:
    im = Image.open(io.BytesIO(png))
    return im.mode, np.asarray(im.convert("RGB")).astype(int)


def test_to_png_is_exact_for_few_colours_faithful_for_charts_and_lossless_for_photographs():
    grid = to_rgb(torch.linspace(-1, 1, 64 * 80).reshape(64, 80))  # a colour-mapped grid: at most 256 colours
    grid = to_uint8(grid)
    mode, back = _decoded(to_png(grid))
    assert mode == "P" and np.array_equal(back, grid.permute(1, 2, 0).numpy())

    with figure(400, 300) as fig:  # an anti-aliased chart: thousands of colours
        ax = fig.add_subplot()
        ax.scatter(np.arange(50), np.sin(np.arange(50)), c=np.arange(50), cmap="viridis")
        ax.set_xlabel("unit")
        chart = to_image(fig)
    assert len(np.unique(chart.reshape(3, -1).numpy(), axis=1).T) > 256
    mode, back = _decoded(to_png(chart))
    assert mode == "P" and np.abs(back - chart.permute(1, 2, 0).numpy()).max() <= MAX_PALETTE_ERROR

    with figure(400, 300) as fig:  # a heatmap with a colour bar and labels, as convscope draws them
        ax = fig.add_subplot()
        colorbar(fig, ax.imshow(np.random.default_rng(0).normal(size=(20, 30)), cmap="RdBu_r"), ax, "activation")
        ax.set_xlabel("unit")
        chart = to_image(fig)
    mode, back = _decoded(to_png(chart))
    pixels = chart.permute(1, 2, 0).numpy()
    assert mode == "P" and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 256
    assert np.abs(back - pixels).max() <= MAX_PALETTE_ERROR
    colours, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
    for colour in colours[np.argsort(-counts)[:3]]:  # the background and the commonest colours: exact
        assert (back[(pixels == colour).all(-1)] == colour).all(), colour
    # 511 colours: a grey ramp and a slightly blue one beside it; 3-level cubes hold them in under 256 groups
    r = torch.arange(255, dtype=torch.uint8)
    ramp = torch.stack([torch.stack([r, r, r]), torch.stack([r, r, r + 1])], 1)  # (3, 2, 255)
    mode, back = _decoded(to_png(ramp))
    assert mode == "P" and 0 < np.abs(back - ramp.permute(1, 2, 0).numpy()).max() <= 2
    rgb = io.BytesIO()
    Image.fromarray(chart.permute(1, 2, 0).numpy()).save(rgb, format="PNG")
    assert len(to_png(chart)) < 0.7 * len(rgb.getvalue())

    for size in (40, 128):  # 1,600 colours, and more than figures.MANY_COLOURS
        photo = torch.randint(0, 256, (3, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
        mode, back = _decoded(to_png(photo))  # 256 colours cannot stand for it within the bound: RGB, exactly
        assert mode == "RGB" and np.array_equal(back, photo.permute(1, 2, 0).numpy())
