"""The neuron analyses: pure functions with known answers, then the callbacks through the shared real 2-epoch fit
(``lenet_run`` in conftest), read back from the event file, the projector files and the PNGs written."""

import io
import math

import matplotlib
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from callbacks.activations import dead_fraction
from callbacks.confusion import ConfusionMatrixCallback
from callbacks.decision import DecisionCallback, decision_pipeline, default_stages, strongest_maps
from callbacks.embedding import SPRITE_PX, EmbeddingCallback, embedding_features, penultimate_layer
from callbacks.evolution import DEFAULT_TECHNIQUES, evolution_strip, snapshot_key
from callbacks.hooks import LayerError, capture_activations, layer_shapes
from callbacks.layer_responses import (
    EFFECT_LIMIT,
    LayerResponsesCallback,
    class_effect_sizes,
    layer_class_responses,
    short_number,
)
from callbacks.methods.activations import dead_units
from callbacks.methods.confusion import confusion_matrix
from callbacks.samples import class_grid
from lit_modules.nets import MLP, DeepCNN, LeNet5, SimpleCNN
from tests.conftest import _images, has_colour, near, render_once, scope_over, techniques_of


# ------------------------------------------------------------------------------------------ pure functions
def test_layer_class_responses_known_answer():
    labels = torch.tensor([0, 0, 1, 2])
    fc = torch.tensor([[1.0, 3.0], [3.0, 5.0], [0.0, 0.0], [10.0, 20.0]])  # class means of the unit mean: 3, 0, 15
    conv = torch.zeros(4, 2, 2, 2)
    conv[2] = 4.0  # only the class-1 sample activates it
    resp = layer_class_responses({"fc": fc, "conv": conv}, labels, 4)
    assert resp.tolist() == [[3.0, 0.0, 15.0, 0.0], [0.0, 4.0, 0.0, 0.0]]  # class 3 has no samples: 0


def test_class_effect_sizes_known_answer():
    labels = torch.tensor([0, 0, 1, 1, 2])
    # per-sample layer means: class 0 {1, 3}, class 1 {5, 7}, class 2 {4}: class means 2, 6, 4, their mean 4;
    # pooled within-class variance (1 + 1 + 1 + 1 + 0) / (5 - 3) = 2
    fc = torch.tensor([[0.0, 2.0], [3.0, 3.0], [5.0, 5.0], [6.0, 8.0], [4.0, 4.0]])
    conv = torch.tensor([1.0, 3.0, 5.0, 7.0, 4.0]).view(5, 1, 1, 1).expand(5, 2, 3, 3)  # the same, as maps
    d = class_effect_sizes({"fc": fc, "conv": conv}, labels, 4)  # class 3: no samples, 0 and left out of the mean
    expected = [-2 / math.sqrt(2), 2 / math.sqrt(2), 0.0, 0.0]
    assert d[0].tolist() == pytest.approx(expected) and d[1].tolist() == pytest.approx(expected)
    # no spread within the classes: equal classes give 0, differing ones are infinitely many SDs away
    flat = class_effect_sizes(
        {"a": torch.full((4, 3), 2.5), "b": torch.tensor([[1.0], [1.0], [3.0], [3.0]])}, torch.tensor([0, 0, 1, 1]), 2
    )
    assert flat[0].tolist() == [0.0, 0.0] and flat[1].tolist() == [-math.inf, math.inf]
    assert class_effect_sizes({"a": torch.rand(3, 2)}, torch.tensor([0, 1, 2]), 3).isnan().all()  # one sample each


def test_class_effect_sizes_pale_for_noise_saturated_for_separated_classes():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(5000) % 10
    noise = torch.randn(5000, 8, generator=g) * 3 + 1  # equal class means: differences are sampling noise only
    separated = torch.randn(5000, 8, generator=g) + 2.0 * y[:, None]  # class means 2 apart, per-sample SD 1/sqrt(8)
    d = class_effect_sizes({"noise": noise, "separated": separated}, y, 10)
    assert d[0].abs().max() < 0.2  # about 1 / sqrt(500) = 0.045 each
    assert (d[1].abs() >= EFFECT_LIMIT).all()  # every class at the end of the colour scale


def test_dead_units_are_zero_everywhere():
    acts = torch.zeros(5, 3, 4, 4)
    acts[4, 1, 3, 3] = 0.1  # unit 1 fires once, at one position of one sample
    acts[:, 2] = -1.0  # negative (pre-ReLU) everywhere: dead too
    assert dead_units(acts).tolist() == [True, False, True]
    assert dead_fraction(acts) == pytest.approx(2 / 3)
    assert dead_fraction(torch.tensor([[0.0, float("nan")], [0.0, 2.0]])) == 0.5


class OneHotNet(nn.Module):
    """Predicts the class written as a bright pixel in the first row of the image."""

    def forward(self, x):
        return x[:, 0, 0, :4] * 10


def test_confusion_matrix_known_answer():
    y = torch.tensor([0, 0, 1, 2, 3, 3, 3])
    pred = torch.tensor([0, 1, 1, 2, 3, 0, 3])
    x = torch.zeros(len(y), 1, 28, 28)
    x[torch.arange(len(y)), 0, 0, pred] = 1.0
    cm = confusion_matrix(OneHotNet(), x, y, 4, batch_size=3)  # batches that cut across classes
    expected = torch.zeros(4, 4, dtype=torch.long)
    for t, p in zip(y.tolist(), pred.tolist()):
        expected[t, p] += 1
    assert torch.equal(cm.cpu(), expected)


@pytest.mark.parametrize(
    "net, layer, dim",
    [(LeNet5(), "relu_4", 84), (MLP(), "relu_1", 128), (SimpleCNN(), "relu_3", 64), (DeepCNN(), "dropout", 256)],
)
def test_penultimate_layer_feeds_the_last_linear(net, layer, dim):
    assert penultimate_layer(net) == layer
    x = torch.randn(3, 1, 28, 28)
    feats = embedding_features(net.eval(), x, layer)
    assert feats.shape == (3, dim)
    last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    assert torch.allclose(last(feats), net(x), atol=1e-5)  # these features are exactly what the classifier reads
    with pytest.raises(LayerError, match="no layer before a final Linear"):
        penultimate_layer(nn.Sequential(nn.Linear(784, 10)))


def test_embedding_of_a_torchvision_resnet_reads_the_shared_features_and_shrinks_large_thumbnails(tmp_path):
    """The penultimate output of a ResNet is a vector per sample: the projector gets the fixed set's shared unit
    activations (no pass of its own), equal to the layer's own output; 64 px thumbnails are shrunk to 32 px."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.rand(40, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    y = torch.arange(40) % 10
    cb = EmbeddingCallback(per_class=2)
    cb.configure_for(net, (3, 64, 64))
    assert cb.layer_name == "avgpool" and cb.flat  # (512, 1, 1)
    classes = tuple("0123456789")
    writer = SummaryWriter(str(tmp_path))
    scope = scope_over(x, y, classes, writer=writer)
    cb.strict = True
    scope.draw(cb, net, 0)
    writer.close()
    folder = next(tmp_path.glob("*/*/tensors.tsv")).parent
    rows = np.loadtxt(folder / "tensors.tsv")
    fixed, labels = scope.fixed(cb, "set", 2)
    assert rows.shape == (20, 512) and labels.tolist() == [c for c in range(10) for _ in range(2)]
    with torch.no_grad():
        np.testing.assert_allclose(rows, embedding_features(net, fixed, "avgpool").numpy(), rtol=1e-5, atol=1e-6)
    assert Image.open(folder / "sprite.png").size == (5 * SPRITE_PX, 5 * SPRITE_PX)  # ceil(sqrt(20)) = 5 a side


def test_decision_pipeline_is_one_consistent_forward_pass():
    net = LeNet5().eval()
    stages, fc = default_stages(net, layer_shapes(net))
    assert stages == ["max_pool_1", "max_pool_2"] and fc == ["relu_3", "relu_4"]
    assert default_stages(MLP(), layer_shapes(MLP())) == ([], ["relu_1"])
    x = torch.randn(4, 1, 28, 28)
    acts, probs = decision_pipeline(net, x, stages + fc)
    assert torch.allclose(probs, torch.softmax(net(x), 1)) and torch.allclose(probs.sum(1), torch.ones(4))
    ref = capture_activations(net, x, stages + fc)
    assert all(torch.equal(acts[n], ref[n]) for n in stages + fc)
    assert all(not m._forward_hooks for m in net.modules())


def test_strongest_maps_known_answer():
    maps = torch.zeros(2, 4, 3, 3)
    maps[0, 2] = 5.0  # image 0: channel 2 strongest, then channel 0
    maps[0, 0, 0, 0] = 9.0
    maps[1, 3] = -1.0  # image 1: channel 1 strongest, then 0; channel 3 (negative) last
    maps[1, 1, 1, 1] = 0.5
    maps[1, 0, 2, 2] = 0.1
    tiles, idx = strongest_maps(maps, 2)
    assert idx.tolist() == [[2, 0], [1, 0]]
    assert torch.equal(tiles[0, 0], maps[0, 2]) and torch.equal(tiles[1, 0], maps[1, 1])
    assert strongest_maps(maps, 9)[1].shape == (2, 4)  # at most the channels there are


def test_short_number_fits_a_narrow_cell():
    assert [short_number(v) for v in (0.452, -0.452, 0.004, 0.0, 2.345, -12.4, 123.4, 4567.0, float("nan"))] == [
        ".45",
        "-.45",
        ".004",
        "0",
        "2.3",
        "-12",
        "123",
        "5e3",
        "nan",
    ]


def test_class_grid_has_one_row_per_class_in_order():
    x = torch.zeros(6, 1, 28, 28)
    y = torch.tensor([1, 0, 1, 0, 1, 1])
    x[y == 1] = 1.0  # class 1 images white, class 0 black
    img = class_grid(x, y, ("zero", "one", "two"), per_class=2, pixel_range=(0.0, 1.0))
    assert img.dtype == torch.uint8 and img.shape[0] == 3
    right = img[:, :, -20:].float()  # inside the last column of tiles
    rows = right.mean(0).mean(1)  # per pixel row
    third = img.shape[1] // 3
    assert rows[5 : third - 5].mean() < 30  # class 0: black tiles
    assert rows[third + 5 : 2 * third - 5].mean() > 225  # class 1: white tiles
    assert rows[2 * third + 5 :].mean() > 250  # class 2 has no images: blank


def test_evolution_strip_orientation_and_keys():
    narrow = {1: torch.zeros(3, 40, 300, dtype=torch.uint8), 5: torch.full((3, 40, 300), 255, dtype=torch.uint8)}
    wide = {1: torch.zeros(3, 40, 400, dtype=torch.uint8), 5: torch.full((3, 40, 400), 255, dtype=torch.uint8)}
    n, w = evolution_strip(narrow), evolution_strip(wide)
    assert n.dtype == torch.uint8 and 600 <= n.shape[2] <= 720 and n.shape[1] < 2 * 40 + 60  # side by side
    assert w.shape[2] <= 720 and w.shape[1] > 2 * 40  # too wide for two columns: one above the other
    assert snapshot_key("feature_maps/conv_1/3_3") == "feature_maps/conv_1"
    assert snapshot_key("decision/3_Dress", class_tags=True) == "decision"
    assert snapshot_key("confusion_matrix") == "confusion_matrix"
    assert snapshot_key("evolution/filters/conv_1") is None
    with pytest.raises(ValueError):
        evolution_strip({})


# ------------------------------------------------------------------------------ pictures (render_once)
YELLOW, PURPLE, DARK_RED, DARK_BLUE = (253, 231, 37), (68, 1, 84), (103, 0, 31), (5, 48, 97)


def colour_at(img, live, ax, xy):
    ((cx, cy),) = live.to_pixels(ax, [xy]).round().astype(int)
    return tuple(img[:, cy, cx].tolist())


def test_confusion_picture_cells_are_the_row_fractions():
    y = torch.tensor([0, 0, 1, 2, 3, 3, 3])
    pred = torch.tensor([0, 1, 1, 2, 3, 3, 3])  # class 0 half right, the others all right
    x = torch.zeros(len(y), 1, 28, 28)
    x[torch.arange(len(y)), 0, 0, pred] = 1.0
    cb = ConfusionMatrixCallback(batch_size=3)
    w = render_once(cb, OneHotNet(), x, y, ("a", "b", "c", "d"), step=2)
    img, step = w.images["confusion_matrix"]
    assert step == 2 and img.shape[2] <= 720
    chart = next(iter(cb._charts.values()))
    assert chart.note.text == "7 samples, accuracy 85.7%"
    off = 0.35  # off the cell centre, where the count is written
    assert near(colour_at(img, chart.live, chart.ax, (2 + off, 2 + off)), YELLOW)  # all of class 2 right
    assert near(colour_at(img, chart.live, chart.ax, (1 + off, 2 + off)), PURPLE)  # none of class 2 as 1
    half = colour_at(img, chart.live, chart.ax, (0 + off, 0 + off))
    assert not near(half, YELLOW) and not near(half, PURPLE)  # class 0: a fraction of 0.5
    assert w.scalars["confusion_matrix/worst_class_recall"][0] == pytest.approx(0.5)


class NoiseAndCodeNet(nn.Module):
    """``noise``: the mean of the image's pixels (noise, the same for every class); ``code``: pixel (0, 0), which
    holds the class index; ``fc``: logits."""

    def __init__(self):
        super().__init__()
        self.noise = nn.AdaptiveAvgPool2d(1)
        self.code = nn.Identity()
        self.fc = nn.Linear(1, 10)

    def forward(self, x):
        return self.fc(self.code(x[:, :, 0, 0]) + 0 * self.noise(x).flatten(1))


def effect_sizes_by_hand(values, labels):
    """Cohen's-d-like effect size per class of per-sample values, in numpy (independent of the callback)."""
    values, labels = np.asarray(values, np.float64), np.asarray(labels)
    classes = np.unique(labels)
    means = np.array([values[labels == c].mean() for c in classes])
    within = sum(((values[labels == c] - m) ** 2).sum() for c, m in zip(classes, means))
    return (means - means.mean()) / np.sqrt(within / (len(values) - len(classes)))


def test_layer_responses_picture_colours_are_effect_sizes_on_a_fixed_scale():
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(500, 1, 28, 28, generator=g), torch.arange(500) % 10
    x[:, 0, 0, 0] = y.float() * 0.1 + 0.02 * torch.randn(500, generator=g)  # the code: classes far apart
    net = NoiseAndCodeNet().eval()
    cb = LayerResponsesCallback(layers=["noise", "code"], per_class=50)
    cb.configure(net, layer_shapes(net))
    w = render_once(cb, net, x, y, tuple(str(c) for c in range(10)), step=0, callbacks=[cb])
    img = w.images["layer_responses"][0]
    chart = next(iter(cb._charts.values()))
    cmap = matplotlib.colormaps["RdBu_r"]
    noise_d = effect_sizes_by_hand(x.mean((1, 2, 3)), y)
    code_d = effect_sizes_by_hand(x[:, 0, 0, 0], y)
    assert np.abs(noise_d).max() < 0.5 and np.abs(code_d).min() > EFFECT_LIMIT  # the test can tell them apart
    for c in range(10):
        for row, d in ((0, noise_d[c]), (1, code_d[c])):
            expected = tuple(round(255 * v) for v in cmap((np.clip(d, -2, 2) + 2) / 4)[:3])
            assert near(colour_at(img, chart.live, chart.ax, (c + 0.42, row + 0.4)), expected), (row, c)
    assert near(colour_at(img, chart.live, chart.ax, (0.42, 1.4)), DARK_BLUE)  # class 0: lowest code, clipped
    assert near(colour_at(img, chart.live, chart.ax, (9.42, 1.4)), DARK_RED)
    assert "within-class SD" in chart.im.colorbar.ax.get_xlabel()  # the rule, on the picture


def test_layer_responses_picture_on_lenet_changes_with_the_net():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 1, 28, 28, generator=g), torch.arange(40) % 10
    torch.manual_seed(0)
    net = LeNet5().eval()
    cb = LayerResponsesCallback(per_class=4)
    cb.configure(net, layer_shapes(net))
    w = render_once(cb, net, x, y, tuple(str(c) for c in range(10)), step=0, callbacks=[cb])
    img = w.images["layer_responses"][0]
    assert img.shape[2] <= 720 and cb.layers is None and len(cb.layer_names) == 11
    chart = next(iter(cb._charts.values()))
    d = class_effect_sizes(capture_activations(net, x, cb.layer_names), y, 10)
    cmap = matplotlib.colormaps["RdBu_r"]
    for row in range(len(d)):
        c = int(d[row].abs().argmax())
        expected = tuple(round(255 * v) for v in cmap((float(d[row, c].clamp(-2, 2)) + 2) / 4)[:3])
        assert near(colour_at(img, chart.live, chart.ax, (c + 0.42, row + 0.4)), expected), cb.layer_names[row]
    with torch.no_grad():
        net.fc_3.bias.add_(torch.arange(10.0))
    again = render_once(cb, net, x, y, tuple(str(c) for c in range(10)), step=1, callbacks=[cb]).images[
        "layer_responses"
    ][0]
    assert again.shape == img.shape and not torch.equal(again, img)


def test_decision_one_picture_with_a_row_per_class_or_the_old_per_class_tags():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(20, 1, 28, 28, generator=g), torch.arange(20) % 10
    classes = tuple(f"class {c}" for c in range(10))
    torch.manual_seed(0)
    net = LeNet5().eval()
    cb = DecisionCallback()
    cb.configure(net, layer_shapes(net))
    assert cb.stages is None and cb.stage_names == ["max_pool_1", "max_pool_2"] and cb.fc_names == ["relu_3", "relu_4"]
    first = render_once(cb, net, x, y, classes, step=0, callbacks=[cb]).images
    assert set(first) == {"decision"}
    img = first["decision"][0]
    assert img.shape[2] <= 720 and has_colour(img, (214, 39, 40))  # the true classes' boxes
    chart = next(iter(cb._charts.values()))
    assert chart.probs.get_array().shape == (10, 10)
    assert np.allclose(
        chart.probs.get_array(), torch.softmax(net(x[:10]), 1).detach().numpy(), atol=1e-6
    )  # the probes' rows
    with torch.no_grad():
        net.conv_1.weight.mul_(-1)
    again = render_once(cb, net, x, y, classes, step=1, callbacks=[cb]).images["decision"][0]
    assert again.shape == img.shape and not torch.equal(again, img)
    cb = DecisionCallback(per_class_tags=True, maps=2)
    cb.configure(net, layer_shapes(net))
    tags = render_once(cb, net, x, y, classes, callbacks=[cb]).images
    assert set(tags) == {f"decision/{c}_class-{c}" for c in range(10)}
    assert all(t[0].shape[1] < img.shape[1] for t in tags.values())  # one row each
    with pytest.raises(ValueError, match="maps must be an integer >= 1"):
        DecisionCallback(maps=0)


# ---------------------------------------------------------------------------------- through a real Trainer
def test_analysis_tags_are_logged_every_epoch_and_change(lenet_run):
    _, ea, _ = lenet_run
    tags = set(ea.Tags()["images"])
    expected = {
        "layer_responses",
        "confusion_matrix",
        "top_activations/relu_1",
        "top_activations/relu_2",
        "importance/relu_3",
        "importance/relu_4",
        "decision",
        "occlusion",
    }
    assert expected <= tags
    for tag in ("decision", "occlusion"):
        assert not any(t.startswith(f"{tag}/") and t != f"{tag}/mean_max_drop" for t in tags)  # no per-class cards
    for tag in expected:
        imgs = _images(ea, tag)
        assert sorted(imgs) == [0, 1], tag
        assert not np.array_equal(imgs[0], imgs[1]), f"{tag} did not change between epochs"
        assert imgs[0].shape == imgs[1].shape and imgs[0].shape[1] <= 720, tag
    scalars = set(ea.Tags()["scalars"])
    layers = [
        "conv_1",
        "relu_1",
        "max_pool_1",
        "conv_2",
        "relu_2",
        "max_pool_2",
        "fc_1",
        "relu_3",
        "fc_2",
        "relu_4",
        "fc_3",
    ]
    assert {f"layer_responses/{n}" for n in layers} <= scalars
    assert {f"activations/relu_{i}/dead_fraction" for i in range(1, 5)} <= scalars
    assert {f"importance/relu_{i}/max_acc_drop" for i in (3, 4)} <= scalars
    for i in (3, 4):
        assert all(-1 <= e.value <= 1 for e in ea.Scalars(f"importance/relu_{i}/max_acc_drop"))
    for i in range(1, 5):
        assert all(0 <= e.value <= 1 for e in ea.Scalars(f"activations/relu_{i}/dead_fraction"))
    hist = set(ea.Tags()["histograms"])
    assert {f"activations/{n}" for n in ("conv_1", "relu_1", "conv_2", "fc_3")} <= hist


def test_layer_response_scalars_equal_the_nets_means(lenet_run):
    cli, ea, run = lenet_run
    from lit_modules.classifier import LitClassifier

    model = LitClassifier.load_from_checkpoint(next((run / "checkpoints").glob("*.ckpt")), map_location="cpu")
    cb = next(c for c in techniques_of(cli.trainer) if type(c).__name__ == "LayerResponses")
    x, _ = cli.datamodule.split("val")
    x = x[cb.fixed_idx.to(x.device)].cpu()
    acts = capture_activations(model.net.eval(), x, ["relu_1", "fc_3"])
    for name in ("relu_1", "fc_3"):
        a = acts[name]
        expected = float((a.flatten(2).mean(2) if a.dim() > 2 else a).mean())
        assert ea.Scalars(f"layer_responses/{name}")[-1].value == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_confusion_matrix_picture_matches_validation_accuracy(lenet_run):
    cli, ea, _ = lenet_run
    recall = [e.value for e in ea.Scalars("confusion_matrix/worst_class_recall")]
    acc = [e.value for e in ea.Scalars("val/acc")]
    assert len(recall) == 2 and all(
        0 <= r <= a + 1e-6 for r, a in zip(recall, acc)
    )  # the worst class is below the mean


def test_samples_grid_and_graph_at_fit_start(lenet_run):
    _, ea, _ = lenet_run
    assert sorted(_images(ea, "samples/train")) == [0]  # once
    graph = ea.Graph()
    ops = {node.op for node in graph.node}
    assert any("conv" in op.lower() for op in ops) and any(
        "linear" in op.lower() or "addmm" in op.lower() for op in ops
    )


def test_embedding_projector_files(lenet_run):
    cli, _, run = lenet_run
    config = (run / "projector_config.pbtxt").read_text()
    assert "embedding/relu_4" in config and "sprite" in config
    folders = sorted(p.parent for p in run.glob("*/embedding*/tensors.tsv"))
    assert len(folders) == 2  # epochs 0 and 1 (every_n_epochs 1 in this run)
    rows = (folders[-1] / "tensors.tsv").read_text().strip().splitlines()
    meta = (folders[-1] / "metadata.tsv").read_text().strip().splitlines()
    cb = next(c for c in techniques_of(cli.trainer) if type(c).__name__ == "Embedding")
    assert len(rows) == len(cb.fixed_idx) == len(meta) and len(rows[0].split("\t")) == 84
    _, y = cli.datamodule.split("val")
    assert meta == [cli.datamodule.classes[int(c)] for c in y[cb.fixed_idx.to(y.device)]]
    sprite = Image.open(folders[-1] / "sprite.png")
    assert sprite.size[0] % 28 == 0 and sprite.size[0] >= 28 * int(np.ceil(np.sqrt(len(rows))))


def test_evolution_stacks_the_logged_snapshots_and_saves_pngs(lenet_run):
    cli, ea, run = lenet_run
    evo = next(c for c in techniques_of(cli.trainer) if type(c).__name__ == "Evolution")
    tags = set(ea.Tags()["images"])
    for key in ("filters/conv_1", "feature_maps/conv_1", "decision", "confusion_matrix", "selectivity"):
        assert f"evolution/{key}" in tags, key
        assert sorted(_images(ea, f"evolution/{key}")) == [1]  # logged once, at the last epoch's step
        assert (run / "evolution" / f"{key}.png").is_file()
        assert sorted(evo.snapshots[key]) == [1, 2]  # 1-based epochs
    assert "evolution/samples" not in {t.rsplit("/", 1)[0] for t in tags} and "samples/train" not in evo.snapshots
    # by default only what the representations learn is stacked; the analyses keep their slider
    assert {key.split("/")[0] for key in evo.snapshots} == set(DEFAULT_TECHNIQUES) and "evolution/occlusion" not in tags
    # the snapshots are exactly the pictures logged at those epochs (the first class's, for per-class pictures)
    for key, tag in (
        ("filters/conv_1", "filters/conv_1"),
        ("decision", "decision"),
        ("feature_maps/conv_1", "feature_maps/conv_1"),
    ):
        logged = _images(ea, tag)
        for epoch, png in evo.snapshots[key].items():
            snap = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
            assert np.array_equal(snap, logged[epoch - 1]), (key, epoch)
    saved = np.asarray(Image.open(run / "evolution" / "filters" / "conv_1.png").convert("RGB"))
    assert np.array_equal(saved, _images(ea, "evolution/filters/conv_1")[1])
    assert saved.shape[0] > 2 * _images(ea, "filters/conv_1")[0].shape[0]  # both snapshots are in it
