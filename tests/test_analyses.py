"""The neuron analyses: pure functions with known answers, then the callbacks through the shared real 2-epoch fit
(``lenet_run`` in conftest), read back from the event file, the projector files and the PNGs written."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from callbacks.activations import dead_fraction, dead_units
from callbacks.confusion import confusion_matrix
from callbacks.decision import decision_pipeline, default_stages
from callbacks.embedding import embedding_features, penultimate_layer
from callbacks.evolution import evolution_strip, snapshot_key
from callbacks.hooks import LayerError, capture_activations, layer_shapes
from callbacks.layer_responses import layer_class_responses, row_contrast
from callbacks.samples import class_grid
from lit_modules.nets import MLP, DeepCNN, LeNet5, SimpleCNN
from tests.conftest import _images


# ------------------------------------------------------------------------------------------ pure functions
def test_layer_class_responses_known_answer():
    labels = torch.tensor([0, 0, 1, 2])
    fc = torch.tensor([[1.0, 3.0], [3.0, 5.0], [0.0, 0.0], [10.0, 20.0]])  # class means of the unit mean: 3, 0, 15
    conv = torch.zeros(4, 2, 2, 2)
    conv[2] = 4.0  # only the class-1 sample activates it
    resp = layer_class_responses({"fc": fc, "conv": conv}, labels, 4)
    assert resp.tolist() == [[3.0, 0.0, 15.0, 0.0], [0.0, 4.0, 0.0, 0.0]]  # class 3 has no samples: 0
    rc = row_contrast(torch.tensor([[2.0, 2.0, 2.0], [0.0, 3.0, 0.0]]))
    assert rc[0].tolist() == [0.0, 0.0, 0.0]  # a layer that responds alike to all classes is pale
    assert rc[1].tolist() == pytest.approx([-0.5, 1.0, -0.5])


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


@pytest.mark.parametrize("net, layer, dim", [(LeNet5(), "relu_4", 84), (MLP(), "relu_1", 128), (SimpleCNN(), "relu_3", 64),
                                              (DeepCNN(), "dropout", 256)])
def test_penultimate_layer_feeds_the_last_linear(net, layer, dim):
    assert penultimate_layer(net) == layer
    x = torch.randn(3, 1, 28, 28)
    feats = embedding_features(net.eval(), x, layer)
    assert feats.shape == (3, dim)
    last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    assert torch.allclose(last(feats), net(x), atol=1e-5)  # these features are exactly what the classifier reads
    with pytest.raises(LayerError, match="no layer before a final Linear"):
        penultimate_layer(nn.Sequential(nn.Linear(784, 10)))


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


def test_class_grid_has_one_row_per_class_in_order():
    x = torch.zeros(6, 1, 28, 28)
    y = torch.tensor([1, 0, 1, 0, 1, 1])
    x[y == 1] = 1.0  # class 1 images white, class 0 black
    img = class_grid(x, y, ("zero", "one", "two"), per_class=2, pixel_range=(0.0, 1.0))
    assert img.shape[0] == 3 and torch.isfinite(img).all()
    h = img.shape[1]
    # the strips start after the 110-px name column: row 0 (class 0) dark, row 1 (class 1) white
    row_h = (h - 2 * 2) // 3
    strip0 = img[:, 4 : row_h - 4, 120:170]
    strip1 = img[:, row_h + 2 + 4 : 2 * row_h - 4, 120:170]
    assert strip0.mean() < 0.2 and strip1.mean() > 0.9


def test_evolution_strip_orientation_and_keys():
    wide = {1: torch.zeros(3, 10, 40), 5: torch.ones(3, 10, 40)}
    tall = {1: torch.zeros(3, 40, 10), 5: torch.ones(3, 40, 10)}
    w, t = evolution_strip(wide), evolution_strip(tall)
    assert w.shape[1] > 2 * 10 and w.shape[2] < 2 * 40 + 60  # stacked one above the other
    assert t.shape[2] > 2 * 10 and t.shape[1] < 2 * 40 + 30  # side by side
    assert snapshot_key("feature_maps/conv_1/3_3") == "feature_maps/conv_1"
    assert snapshot_key("decision/3_Dress", class_tags=True) == "decision"
    assert snapshot_key("confusion_matrix") == "confusion_matrix"
    assert snapshot_key("evolution/filters/conv_1") is None
    with pytest.raises(ValueError):
        evolution_strip({})


# ---------------------------------------------------------------------------------- through a real Trainer
def test_analysis_tags_are_logged_every_epoch_and_change(lenet_run):
    _, ea, _ = lenet_run
    tags = set(ea.Tags()["images"])
    expected = {"layer_responses", "confusion_matrix", "top_activations/relu_1", "top_activations/relu_2",
                "importance/relu_1", "importance/relu_4"} | {f"{t}/{c}_{c}" for c in range(10) for t in ("decision", "occlusion")}
    assert expected <= tags
    for tag in expected:
        imgs = _images(ea, tag)
        assert sorted(imgs) == [0, 1], tag
        assert not np.array_equal(imgs[0], imgs[1]), f"{tag} did not change between epochs"
    scalars = set(ea.Tags()["scalars"])
    layers = ["conv_1", "relu_1", "max_pool_1", "conv_2", "relu_2", "max_pool_2", "fc_1", "relu_3", "fc_2", "relu_4", "fc_3"]
    assert {f"layer_responses/{n}" for n in layers} <= scalars
    assert {f"activations/relu_{i}/dead_fraction" for i in range(1, 5)} <= scalars
    assert {f"importance/relu_{i}/max_acc_drop" for i in range(1, 5)} <= scalars
    for i in range(1, 5):
        assert all(-1 <= e.value <= 1 for e in ea.Scalars(f"importance/relu_{i}/max_acc_drop"))
    for i in range(1, 5):
        assert all(0 <= e.value <= 1 for e in ea.Scalars(f"activations/relu_{i}/dead_fraction"))
    hist = set(ea.Tags()["histograms"])
    assert {f"activations/{n}" for n in ("conv_1", "relu_1", "conv_2", "fc_3")} <= hist


def test_layer_response_scalars_equal_the_nets_means(lenet_run):
    cli, ea, run = lenet_run
    from lit_modules.classifier import LitClassifier

    model = LitClassifier.load_from_checkpoint(next((run / "checkpoints").glob("*.ckpt")), map_location="cpu")
    cb = next(c for c in cli.trainer.callbacks if type(c).__name__ == "LayerResponsesCallback")
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
    assert len(recall) == 2 and all(0 <= r <= a + 1e-6 for r, a in zip(recall, acc))  # the worst class is below the mean


def test_samples_grid_and_graph_at_fit_start(lenet_run):
    _, ea, _ = lenet_run
    assert sorted(_images(ea, "samples/train")) == [0]  # once
    graph = ea.Graph()
    ops = {node.op for node in graph.node}
    assert any("conv" in op.lower() for op in ops) and any("linear" in op.lower() or "addmm" in op.lower() for op in ops)


def test_embedding_projector_files(lenet_run):
    cli, _, run = lenet_run
    config = (run / "projector_config.pbtxt").read_text()
    assert "embedding/relu_4" in config and "sprite" in config
    folders = sorted(p.parent for p in run.glob("*/embedding*/tensors.tsv"))
    assert len(folders) == 2  # epochs 0 and 1 (every_n_epochs 1 in this run)
    rows = (folders[-1] / "tensors.tsv").read_text().strip().splitlines()
    meta = (folders[-1] / "metadata.tsv").read_text().strip().splitlines()
    cb = next(c for c in cli.trainer.callbacks if type(c).__name__ == "EmbeddingCallback")
    assert len(rows) == len(cb.fixed_idx) == len(meta) and len(rows[0].split("\t")) == 84
    _, y = cli.datamodule.split("val")
    assert meta == [cli.datamodule.classes[int(c)] for c in y[cb.fixed_idx.to(y.device)]]
    sprite = Image.open(folders[-1] / "sprite.png")
    assert sprite.size[0] % 28 == 0 and sprite.size[0] >= 28 * int(np.ceil(np.sqrt(len(rows))))


def test_evolution_stacks_the_logged_snapshots_and_saves_pngs(lenet_run):
    cli, ea, run = lenet_run
    evo = next(c for c in cli.trainer.callbacks if type(c).__name__ == "EvolutionCallback")
    tags = set(ea.Tags()["images"])
    for key in ("filters/conv_1", "feature_maps/conv_1", "decision", "occlusion", "confusion_matrix", "selectivity/relu_3"):
        assert f"evolution/{key}" in tags, key
        assert sorted(_images(ea, f"evolution/{key}")) == [1]  # logged once, at the last epoch's step
        assert (run / "evolution" / f"{key}.png").is_file()
        assert sorted(evo.snapshots[key]) == [1, 2]  # 1-based epochs
    assert "evolution/samples" not in {t.rsplit("/", 1)[0] for t in tags} and "samples/train" not in evo.snapshots
    # the snapshots are exactly the pictures logged at those epochs (the first class's, for per-class pictures)
    for key, tag in (("filters/conv_1", "filters/conv_1"), ("decision", "decision/0_0"), ("feature_maps/conv_1", "feature_maps/conv_1/0_0")):
        logged = _images(ea, tag)
        for epoch, png in evo.snapshots[key].items():
            snap = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
            assert np.array_equal(snap, logged[epoch - 1]), (key, epoch)
    saved = np.asarray(Image.open(run / "evolution" / "filters" / "conv_1.png").convert("RGB"))
    assert np.array_equal(saved, _images(ea, "evolution/filters/conv_1")[1])
    assert saved.shape[0] > 2 * _images(ea, "filters/conv_1")[0].shape[0]  # both snapshots are in it
