"""Occlusion sensitivity (callbacks/methods/occlusion.py, callbacks/occlusion.py): known answers from hand-made
nets, a brute-force loop, the positions, the pixel map, argument errors, mode hygiene and the callback's pictures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from callbacks.methods.occlusion import Occlusion, occlusion_sensitivity, patch_positions, sensitivity_map
from callbacks.occlusion import OcclusionCallback
from lit_modules.nets import DeepCNN, LeNet5
from tests.conftest import render_once as render

MNIST_LO = (0.0 - 0.1307) / 0.3081  # pixel_range[0] of standardized MNIST, computed in float64


# ------------------------------------------------------------------------------------------------------ helpers
class RegionNet(nn.Module):
    """Two logits ``[s, -s]`` with ``s`` = the sum of channel 0 over rows ``r0:r1``, columns ``c0:c1``: the output
    depends on that region only, so p(class 0) = sigmoid(2 s)."""

    def __init__(self, r0=3, r1=6, c0=17, c1=21) -> None:
        super().__init__()
        self.region = (r0, r1, c0, c1)
        self.scale = nn.Linear(1, 1, bias=False)  # a module with a train flag (and a parameter) to check hygiene
        with torch.no_grad():
            self.scale.weight.fill_(1.0)

    def forward(self, x):
        r0, r1, c0, c1 = self.region
        s = self.scale(x[:, 0, r0:r1, c0:c1].sum(dim=(1, 2)).unsqueeze(1))
        return torch.cat([s, -s], dim=1)


def region_image(net: RegionNet, noise: bool = True) -> torch.Tensor:
    """(1, 1, 28, 28): value 1 in the net's region, elsewhere exact multiples of 1/16 (sums are exact in float32)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 16, (1, 1, 28, 28), generator=g).float() / 16 if noise else torch.zeros(1, 1, 28, 28)
    r0, r1, c0, c1 = net.region
    x[:, :, r0:r1, c0:c1] = 0.25
    return x


def overlaps(r: int, c: int, patch: int, region) -> int:
    """Number of region pixels the patch at (r, c) covers."""
    r0, r1, c0, c1 = region
    return max(0, min(r + patch, r1) - max(r, r0)) * max(0, min(c + patch, c1) - max(c, c0))


def brute_force(net, images, targets, patch, stride, fill):
    """One forward pass per image and per patch position: (drop, predicted) as nested lists."""
    n, _, h, w = images.shape
    drops, preds = [], []
    with torch.no_grad():
        for i in range(n):
            base = torch.softmax(net(images[i : i + 1]), 1)[0, targets[i]]
            d_rows, p_rows = [], []
            for r in patch_positions(h, patch, stride):
                d_row, p_row = [], []
                for c in patch_positions(w, patch, stride):
                    copy = images[i : i + 1].clone()
                    copy[:, :, r : r + patch, c : c + patch] = fill
                    probs = torch.softmax(net(copy), 1)[0]
                    d_row.append(float(base - probs[targets[i]]))
                    p_row.append(int(probs.argmax()))
                d_rows.append(d_row)
                p_rows.append(p_row)
            drops.append(d_rows)
            preds.append(p_rows)
    return torch.tensor(drops), torch.tensor(preds)


def blob_images(background: float, n: int = 3) -> torch.Tensor:
    """Standardized-looking images: ``background`` everywhere but a bright random blob in rows 9..18, cols 8..19."""
    x = torch.full((n, 1, 28, 28), background)
    g = torch.Generator().manual_seed(1)
    x[:, :, 9:19, 8:20] = torch.rand(n, 1, 10, 12, generator=g) * 2 + 0.5
    return x


# ----------------------------------------------------------------------------------------------- positions
@pytest.mark.parametrize(
    "size, patch, stride, expected",
    [
        (28, 7, 2, [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 21]),  # the default: 21 added, flush with the border
        (28, 7, 7, [0, 7, 14, 21]),  # the stride lands on 21: not repeated
        (10, 3, 4, [0, 4, 7]),
        (28, 28, 3, [0]),
        (28, 1, 1, list(range(28))),
        (28, 5, 100, [0, 23]),
    ],
)
def test_positions_cover_the_border(size, patch, stride, expected):
    assert patch_positions(size, patch, stride) == expected


def test_result_positions_and_shapes(lenet):
    x = torch.rand(2, 1, 28, 28)
    occ = occlusion_sensitivity(lenet, x, torch.tensor([3, 4]), patch=5, stride=3)
    assert occ.rows.tolist() == occ.cols.tolist() == [0, 3, 6, 9, 12, 15, 18, 21, 23]
    assert occ.drop.shape == occ.predicted.shape == (2, 9, 9)
    assert occ.predicted.dtype == torch.long and occ.base_predicted.shape == (2,) and occ.patch == 5
    with torch.no_grad():
        probs = torch.softmax(lenet(x), 1)
    torch.testing.assert_close(occ.base_prob, probs[[0, 1], [3, 4]])
    assert torch.equal(occ.base_predicted, probs.argmax(1))
    # non-square images: rows and columns separately
    occ = occlusion_sensitivity(RegionNet(), torch.rand(1, 1, 28, 40), [0], patch=6, stride=10)
    assert occ.rows.tolist() == [0, 10, 20, 22] and occ.cols.tolist() == [0, 10, 20, 30, 34]


# -------------------------------------------------------------------------------------- known answers
@pytest.mark.parametrize("target, sign", [(0, 1.0), (1, -1.0)])
@pytest.mark.parametrize("noise", [True, False])
def test_region_net_drops_only_where_the_patch_covers_the_region(target, sign, noise):
    net = RegionNet()
    x = region_image(net, noise)
    patch, stride = 4, 2
    occ = occlusion_sensitivity(net, x, [target], patch=patch, stride=stride, fill=0.0)
    s = 0.25 * 12  # the region's sum: 3 x 4 pixels of 0.25
    p = torch.sigmoid(torch.tensor(2 * s * sign))
    assert float(occ.base_prob[0]) == pytest.approx(float(p), abs=1e-6)
    covered = 0
    for i, r in enumerate(occ.rows.tolist()):
        for j, c in enumerate(occ.cols.tolist()):
            k = overlaps(r, c, patch, net.region)
            d = float(occ.drop[0, i, j])
            if k == 0:
                assert d == 0.0, (r, c)  # exactly: the net never sees these pixels
            else:
                covered += 1
                expected = float(p - torch.sigmoid(torch.tensor(2 * (s - 0.25 * k) * sign)))
                assert d == pytest.approx(expected, abs=1e-6), (r, c)
                assert math.copysign(1.0, d) == sign and abs(d) > 1e-3  # hiding class 0's evidence lowers p(0)
    # rows 3..5 are covered from r = 0, 2, 4 and columns 17..20 from c = 14, 16, 18, 20
    assert covered == 3 * 4
    assert (occ.drop != 0).sum() == covered
    # a 4x4 patch hides at most 9 of the 12 region pixels, so s stays > 0: the argmax stays class 0
    assert (occ.predicted == 0).all()


def test_predicted_flips_when_the_evidence_is_hidden():
    net = RegionNet(10, 12, 10, 12)  # a 2 x 2 region
    x = torch.zeros(1, 1, 28, 28)
    x[:, :, 10, 10:12] = 1.0
    x[:, :, 11, 10:12] = -0.75  # s = 0.5: class 0; hiding a 1 leaves s = -0.5 (class 1), hiding a -0.75 s = 1.25
    occ = occlusion_sensitivity(net, x, [0], patch=1, stride=1, fill=0.0)
    assert occ.drop.shape == (1, 28, 28) and int(occ.base_predicted[0]) == 0
    flipped = torch.zeros(28, 28, dtype=torch.long)
    flipped[10, 10:12] = 1
    assert torch.equal(occ.predicted[0], flipped)  # Z&F figure 7 (e): the label map
    p = torch.sigmoid(torch.tensor(1.0))
    torch.testing.assert_close(occ.drop[0, 10, 10:12], (p - torch.sigmoid(torch.tensor(-1.0))).expand(2))
    torch.testing.assert_close(occ.drop[0, 11, 10:12], (p - torch.sigmoid(torch.tensor(2.5))).expand(2))
    assert (occ.drop[0, 11, 10:12] < 0).all() and (occ.drop[0, 10, 10:12] > 0).all()
    assert (occ.drop[0] != 0).sum() == 4


@pytest.mark.parametrize("background", [0.0, MNIST_LO])
def test_occluding_blank_background_changes_nothing(lenet, background):
    """fill = the background value: positions whose patch lies on background alone have drop exactly 0."""
    x = blob_images(background)
    if background != 0.0:  # as the datamodule builds it: float32 (0 - mean) / std, one ulp off the float64 value
        x = torch.where(x == x[0, 0, 0, 0], torch.zeros(()).sub_(0.1307).div_(0.3081), x)
        assert float(x[0, 0, 0, 0]) != float(torch.tensor(MNIST_LO, dtype=torch.float32))
    occ = occlusion_sensitivity(lenet, x, [0, 1, 2], patch=7, stride=2, fill=background)
    blank = torch.zeros(len(occ.rows), len(occ.cols), dtype=torch.bool)
    for i, r in enumerate(occ.rows.tolist()):
        for j, c in enumerate(occ.cols.tolist()):
            blank[i, j] = r + 7 <= 9 or r >= 19 or c + 7 <= 8 or c >= 20
    assert 0 < blank.sum() < blank.numel()
    assert (occ.drop[:, blank] == 0).all()
    assert (occ.predicted[:, blank] == occ.base_predicted[:, None]).all()
    assert (occ.drop[:, ~blank] != 0).any(dim=1).all()  # the blob matters to the random net
    # a different fill over the same background is an occlusion like any other
    other = occlusion_sensitivity(lenet, x, [0, 1, 2], patch=7, stride=2, fill=background + 1.0)
    assert (other.drop[:, blank] != 0).any()


@pytest.mark.parametrize("batch_size", [1, 7, 4096])
def test_batched_equals_one_forward_per_position(lenet, batch_size):
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    x[1, :, :, :12] = 0.3  # part of one image equals the fill: those copies are skipped
    targets = [7, 2, 9]
    occ = occlusion_sensitivity(lenet, x, targets, patch=5, stride=3, fill=0.3, batch_size=batch_size)
    drops, preds = brute_force(lenet, x, targets, 5, 3, 0.3)
    torch.testing.assert_close(occ.drop, drops, atol=1e-6, rtol=0)
    assert torch.equal(occ.predicted, preds)
    assert (occ.drop.abs() > 1e-4).any()


def test_multichannel_patch_covers_every_channel():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 5)).eval()
    x = torch.randn(2, 3, 12, 12)
    occ = occlusion_sensitivity(net, x, [1, 4], patch=4, stride=3, fill=-0.2, batch_size=10)
    drops, preds = brute_force(net, x, [1, 4], 4, 3, -0.2)
    torch.testing.assert_close(occ.drop, drops, atol=1e-6, rtol=0)
    assert torch.equal(occ.predicted, preds)


def test_few_forward_passes(lenet):
    calls = []
    h = lenet.register_forward_pre_hook(lambda m, i: calls.append(len(i[0])))
    try:
        x = torch.rand(3, 1, 28, 28) + 0.1  # no pixel equals the fill: all 3 x 9 x 9 = 243 copies run
        occlusion_sensitivity(lenet, x, [0, 1, 2], patch=5, stride=3)
        assert calls == [3, 243]  # the images, then every occluded copy of all of them in one pass
        calls.clear()
        occlusion_sensitivity(lenet, x, [0, 1, 2], patch=5, stride=3, batch_size=100)
        assert calls == [3, 100, 100, 43]
    finally:
        h.remove()


# -------------------------------------------------------------------------------------------- sensitivity map
def test_sensitivity_map_of_one_position_is_that_patch():
    rows = torch.tensor(patch_positions(28, 7, 2))
    drop = torch.zeros(1, 12, 12)
    drop[0, 3, 10] = 0.6  # the patch at rows 6..12, columns 20..26
    occ = Occlusion(
        drop,
        torch.zeros(1, 12, 12, dtype=torch.long),
        torch.ones(1),
        torch.zeros(1, dtype=torch.long),
        rows,
        rows.clone(),
        7,
    )
    m = sensitivity_map(occ, (28, 28), 7)
    assert m.shape == (1, 28, 28)
    expected_support = torch.zeros(28, 28, dtype=torch.bool)
    expected_support[6:13, 20:27] = True
    assert torch.equal(m[0] != 0, expected_support)
    # each pixel holds 0.6 / (number of positions covering it)
    cover = [
        [sum(r <= a < r + 7 for r in rows.tolist()) * sum(c <= b < c + 7 for c in rows.tolist()) for b in range(28)]
        for a in range(28)
    ]
    for a, b in [(6, 20), (12, 26), (8, 21), (10, 25)]:
        assert float(m[0, a, b]) == pytest.approx(0.6 / cover[a][b])
    torch.testing.assert_close(sensitivity_map(occ), m)  # the defaults: occ.patch, the image the positions span


def test_sensitivity_map_means_and_gaps():
    rows = torch.tensor(patch_positions(28, 7, 2))
    occ = Occlusion(
        torch.full((2, 12, 12), 0.25),
        torch.zeros(2, 12, 12, dtype=torch.long),
        torch.ones(2),
        torch.zeros(2, dtype=torch.long),
        rows,
        rows,
        7,
    )
    torch.testing.assert_close(sensitivity_map(occ, (28, 28), 7), torch.full((2, 28, 28), 0.25))
    # stride > patch: pixels between positions are covered by none (NaN)
    gap_rows = torch.tensor(patch_positions(10, 2, 4))  # 0, 4, 8
    occ = Occlusion(
        torch.ones(1, 3, 3),
        torch.zeros(1, 3, 3, dtype=torch.long),
        torch.ones(1),
        torch.zeros(1, dtype=torch.long),
        gap_rows,
        gap_rows,
        2,
    )
    m = sensitivity_map(occ, (10, 10), 2)
    covered = torch.zeros(10, dtype=torch.bool)
    covered[[0, 1, 4, 5, 8, 9]] = True
    assert torch.equal(~torch.isnan(m[0]), covered[:, None] & covered[None, :])
    with pytest.raises(ValueError, match="does not fit an image of 9x10"):
        sensitivity_map(occ, (9, 10), 2)


def test_sensitivity_map_lines_up_with_the_region():
    net = RegionNet()
    occ = occlusion_sensitivity(net, region_image(net), [0], patch=3, stride=1, fill=0.0)
    m = sensitivity_map(occ, (28, 28), 3)[0]
    r0, r1, c0, c1 = net.region
    support = torch.zeros(28, 28, dtype=torch.bool)
    support[max(0, r0 - 2) : r1 + 2, max(0, c0 - 2) : c1 + 2] = True  # pixels sharing a 3x3 patch with the region
    assert torch.equal(m > 0, support)
    assert (m[r0:r1, c0:c1] > m[~support].max()).all()
    assert int(m.argmax()) // 28 in range(r0, r1) and int(m.argmax()) % 28 in range(c0, c1)


# ------------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(patch=0), r"patch must be in 1\.\.28.*got 0"),
        (dict(patch=29), r"patch must be in 1\.\.28.*28x28.*got 29"),
        (dict(patch=2.5), r"patch must be an integer, got 2\.5"),
        (dict(patch=True), "patch must be an integer"),
        (dict(stride=0), r"stride must be an integer >= 1, got 0"),
        (dict(stride=-2), r"stride.*>= 1, got -2"),
        (dict(batch_size=0), r"batch_size must be an integer >= 1, got 0"),
        (dict(fill=float("nan")), "fill must be a finite number"),
        (dict(fill="grey"), "fill must be a finite number.*'grey'"),
    ],
)
def test_argument_errors(lenet, kwargs, match):
    with pytest.raises(ValueError, match=match):
        occlusion_sensitivity(lenet, torch.rand(2, 1, 28, 28), [0, 1], **kwargs)


@pytest.mark.parametrize(
    "images, targets, match",
    [
        (torch.rand(1, 28, 28), [0], r"4-D tensor \(N, C, H, W\), got shape \(1, 28, 28\)"),
        (torch.zeros(1, 1, 28, 28, dtype=torch.uint8), [0], "floating-point.*uint8"),
        ([[0.0]], [0], "must be a tensor"),
        (torch.rand(2, 1, 28, 28), [0], r"targets must have shape \(2,\).*got shape \(1,\)"),
        (torch.rand(2, 1, 28, 28), torch.zeros(2, 1, dtype=torch.long), r"shape \(2,\)"),
        (torch.rand(2, 1, 28, 28), torch.tensor([0.0, 1.0]), "integer class indices.*float32"),
        (torch.rand(2, 1, 28, 28), [0, 10], r"0\.\.9 \(the net has 10 classes\), got \[10\]"),
        (torch.rand(2, 1, 28, 28), [-1, 3], r"0\.\.9.*got \[-1\]"),
    ],
)
def test_image_and_target_errors(lenet, images, targets, match):
    lenet.train()
    with pytest.raises(ValueError, match=match):
        occlusion_sensitivity(lenet, images, targets)
    assert all(m.training for m in lenet.modules())  # restored also when it raises inside


# ----------------------------------------------------------------------------------------------------- hygiene
def test_train_mode_restored_and_dropout_off():
    torch.manual_seed(0)
    net = DeepCNN(dropout=0.5).train()
    net.relu_2.eval()  # a mixed state: each module's own flag comes back
    x = torch.rand(2, 1, 28, 28)
    a = occlusion_sensitivity(net, x, [1, 2], patch=9, stride=6)
    b = occlusion_sensitivity(net, x, [1, 2], patch=9, stride=6)
    assert torch.equal(a.drop, b.drop)  # dropout off: deterministic
    assert net.training and not net.relu_2.training
    assert all(m.training for n, m in net.named_modules() if n != "relu_2")
    assert all(p.grad is None for p in net.parameters())


def test_works_under_no_grad_and_inference_mode(lenet):
    x = torch.rand(2, 1, 28, 28)
    expected = occlusion_sensitivity(lenet, x, [5, 6], patch=6, stride=4)
    assert not expected.drop.requires_grad
    with torch.no_grad():
        got = occlusion_sensitivity(lenet, x, [5, 6], patch=6, stride=4)
    torch.testing.assert_close(got.drop, expected.drop)
    with torch.inference_mode():
        got = occlusion_sensitivity(lenet, x.clone(), torch.tensor([5, 6]), patch=6, stride=4)
        m = sensitivity_map(got, (28, 28), 6)
    torch.testing.assert_close(got.drop, expected.drop)
    assert torch.equal(got.predicted, expected.predicted) and m.shape == (2, 28, 28)
    x_req = x.clone().requires_grad_(True)  # an input that requires grad: no graph is built
    assert not occlusion_sensitivity(lenet, x_req, [5, 6], patch=6, stride=4).drop.requires_grad


# ---------------------------------------------------------------------------------------------------- callback
def test_callback_arguments():
    cb = OcclusionCallback()
    assert (cb.patch, cb.stride, cb.fill, cb.batch_size, cb.technique) == (None, None, None, 4096, "occlusion")
    # the default geometry scales with the image: about 12 x 12 patch positions at every size
    assert [cb.geometry((s, s)) for s in (28, 32, 64, 224)] == [(7, 2), (8, 2), (16, 5), (56, 16)]
    assert OcclusionCallback(patch=5, stride=3).geometry((224, 224)) == (5, 3)
    assert cb.fill_value((MNIST_LO, 2.82)) == MNIST_LO  # None: the black background
    assert OcclusionCallback(fill=1.0).fill_value((-0.5, 2.5)) == 2.5
    assert OcclusionCallback(fill=0.25).fill_value((-0.5, 2.5)) == pytest.approx(0.25)
    for kwargs, match in [
        (dict(patch=0), "patch must be an integer >= 1, got 0"),
        (dict(patch=3.0), "patch must be an integer"),
        (dict(stride=0), "stride must be an integer >= 1, got 0"),
        (dict(batch_size=-1), "batch_size must be an integer >= 1, got -1"),
        (dict(fill=1.5), r"fill must be a number in \[0, 1\].*got 1\.5"),
        (dict(fill=-0.1), r"\[0, 1\]"),
        (dict(every_n_epochs=0), "every_n_epochs"),
    ]:
        with pytest.raises(ValueError, match=match):
            OcclusionCallback(**kwargs)
    with pytest.raises(ValueError, match=r"OcclusionCallback: patch must be in 1\.\.28 \(the input is 28x28\), got 29"):
        OcclusionCallback(patch=29).configure_for(LeNet5(), (1, 28, 28))
    OcclusionCallback(patch=28).configure_for(LeNet5(), (1, 28, 28))
    cb = OcclusionCallback(patch=21)  # the limit comes from the data's input shape, not a fixed 28x28
    cb.input_shape = (3, 20, 24)
    with pytest.raises(ValueError, match=r"patch must be in 1\.\.20 \(the input is 20x24\), got 21"):
        cb.configure(LeNet5(), {})


def drop_rows(chart, img, rows):
    """The drop-map column of each of ``rows`` rows, cut from ``chart``'s picture ``img`` (3, H, W) uint8 at the
    place where the chart drew its drop map."""
    h = chart.drop.get_array().shape[0]
    (x0, y0), (x1, y1) = (
        chart.live.to_pixels(chart.drop.axes, [(-0.5, -0.5), (chart.drop.get_array().shape[1] - 0.5, h - 0.5)])
        .round()
        .astype(int)
    )
    edges = np.linspace(y0, y1, rows + 1).round().astype(int)
    return [img[:, edges[i] + 2 : edges[i + 1] - 2, x0 + 2 : x1 - 2] for i in range(rows)]


def reddish(img) -> bool:
    r, g, b = img.int()
    return bool(((r > 150) & (b < 110) & (r - b > 60)).any())


def bluish(img) -> bool:
    r, g, b = img.int()
    return bool(((b > 150) & (r < 110) & (b - r > 60)).any())


def test_callback_pictures_known_colours():
    """Class 0's evidence hidden: p(0) falls (red only); class 1's picture: p(1) rises (blue only)."""
    net = RegionNet()
    img = region_image(net, noise=False)
    x = torch.cat([img, img, torch.zeros(1, 1, 28, 28)])
    y = torch.tensor([1, 0, 1])  # probes: the first image of each class
    cb = OcclusionCallback(patch=4, stride=2, fill=0.0)
    writer = render(cb, net, x, y, ("T-shirt/top", "Trouser"), step=5)
    assert set(writer.images) == {"occlusion"}  # one picture, a row per class
    pic, step = writer.images["occlusion"]
    assert step == 5 and pic.dtype == torch.uint8 and pic.shape[0] == 3 and pic.shape[2] <= 720
    row0, row1 = drop_rows(next(iter(cb._charts.values())), pic, 2)
    assert reddish(row0) and not bluish(row0)
    assert bluish(row1) and not reddish(row1)
    occ = occlusion_sensitivity(net, img.expand(2, -1, -1, -1), [0, 1], patch=4, stride=2)
    value, step = writer.scalars["occlusion/mean_max_drop"]
    assert step == 5 and value == pytest.approx(float(occ.drop.flatten(1).amax(1).mean()))
    assert value > 0
    # the per-class option gives the old tags, one picture each, with the same known colours
    cb = OcclusionCallback(patch=4, stride=2, fill=0.0, per_class_tags=True)
    writer = render(cb, net, x, y, ("T-shirt/top", "Trouser"), step=5)
    assert set(writer.images) == {"occlusion/0_T-shirt-top", "occlusion/1_Trouser"}
    charts = list(cb._charts.values())
    assert [c.drop.get_array().shape[0] for c in charts] == [28, 28]  # one row each
    pic0, pic1 = writer.images["occlusion/0_T-shirt-top"][0], writer.images["occlusion/1_Trouser"][0]
    assert pic0.shape[1] < pic.shape[1]
    (only0,), (only1,) = drop_rows(charts[0], pic0, 1), drop_rows(charts[1], pic1, 1)
    assert reddish(only0) and not bluish(only0)
    assert bluish(only1) and not reddish(only1)


def test_callback_renders_lenet_on_standardized_data(lenet):
    lo, hi = MNIST_LO, (1.0 - 0.1307) / 0.3081
    x = blob_images(lo, n=10)
    y = torch.arange(10)
    cb = OcclusionCallback()
    writer = render(cb, lenet, x, y, tuple(str(i) for i in range(10)), pixel_range=(lo, hi), step=0)
    assert sorted(writer.images) == ["occlusion"]
    occ, heat = cb.compute(lenet, x, y, (lo, hi))
    assert (occ.drop[:, 0, 0] == 0).all()  # the corner patch only hides background (fill None = black)
    assert heat.shape == (10, 28, 28) and torch.isfinite(heat).all()
    assert writer.scalars["occlusion/mean_max_drop"][0] == pytest.approx(float(occ.drop.flatten(1).amax(1).mean()))
    first = writer.images["occlusion"][0]
    assert first.shape[2] <= 720 and first.shape[1] > 10 * 28  # ten rows, taller than wide
    with torch.no_grad():
        lenet.fc_3.weight.mul_(-1)  # another net, as after an epoch of training
    again = render(cb, lenet, x, y, tuple(str(i) for i in range(10)), pixel_range=(lo, hi), step=1).images["occlusion"][
        0
    ]
    assert again.shape == first.shape and not torch.equal(again, first)
    cb = OcclusionCallback(per_class_tags=True)
    writer = render(cb, lenet, x, y, tuple(str(i) for i in range(10)), pixel_range=(lo, hi))
    assert sorted(writer.images) == sorted(f"occlusion/{c}_{c}" for c in range(10))
    assert len({img.shape for img, _ in writer.images.values()}) == 1


def test_large_images_are_occluded_in_smaller_batches():
    """One forward pass holds at most ``BATCH_INPUT_VALUES`` input values: ``batch_size`` copies of 28 px grey
    images, 27 of 224 px colour ones (4,096 of those, the old batch, ran a ResNet-50 out of 24 GB)."""
    from callbacks.occlusion import BATCH_INPUT_VALUES, OcclusionCallback

    cb = OcclusionCallback()
    assert cb.batch_for(torch.zeros(10, 1, 28, 28)) == cb.batch_size == 4096
    assert cb.batch_for(torch.zeros(10, 3, 224, 224)) == 27 == BATCH_INPUT_VALUES // (3 * 224 * 224)
    assert OcclusionCallback(batch_size=8).batch_for(torch.zeros(1, 3, 32, 32)) == 8
