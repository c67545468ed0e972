"""Many classes: the shown classes (``ShownClasses``), the capped fixed set, bounded pictures.

Known answers for the pure parts (the class choice, the confusion sub-matrix, the class-mean maps of the shown
classes only), then real fits at 100 classes (Fashion-MNIST, ten garments times ten hues, 32 px RGB) of zoo models,
every callback with its default layers, strict, read back from the event file: every picture within 720 x 1600 px,
the per-class pictures showing the ten default classes, the scalars covering all 100.
"""

from __future__ import annotations

import inspect
import io
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from callbacks import VISUALIZATIONS, ShownClasses
from callbacks.activations import HISTOGRAM_MAX
from callbacks.classes import class_columns, resolve_classes, shown_positions, shown_probs
from callbacks.confusion import sub_confusion
from callbacks.data import FIXED_SET_MAX, choose_per_class, default_shown, set_budget
from callbacks.figures import MAX_HEIGHT, MAX_WIDTH, bounded, shrink, tile_rows
from callbacks.hooks import activation_pass
from callbacks.units import FOLDER as UNITS_FOLDER
from lit_modules.datamodule import CLASS_TINTS, DATASETS, MNISTDataModule, hue_classes, read_idx, resize
from tests.conftest import owner_of
from tests.test_any_model import FASHION, Classifier, needs_fashion, read_events, steps_of


# ------------------------------------------------------------------------------------------ the class choice
def test_default_shown_classes_spread_over_the_indices_not_the_first_ten():
    assert default_shown(10) == tuple(range(10))
    assert default_shown(4) == (0, 1, 2, 3)
    assert default_shown(100) == (0, 11, 22, 33, 44, 55, 66, 77, 88, 99)
    assert default_shown(1000) == (0, 111, 222, 333, 444, 555, 666, 777, 888, 999)  # not ImageNet's ten fish
    assert default_shown(1000, 3) == (0, 500, 999)


def test_classes_chosen_by_name_or_index_and_bad_choices_fail_clearly():
    classes = tuple(f"c{i}" for i in range(30))
    assert resolve_classes(["c7", 3, "12"], 10, classes) == (7, 3, 12)  # in the order given
    assert resolve_classes(None, 5, classes) == (0, 7, 14, 22, 29)
    with pytest.raises(
        ValueError, match=r"unknown class 'dog'; valid: class names \(c0, c1, .*\(30 in all\)\) or indices 0..29"
    ):
        resolve_classes(["dog"], 10, classes)
    with pytest.raises(ValueError, match=r"class index 30 out of range; the data has 30 classes, valid 0..29"):
        resolve_classes([30], 10, classes)
    with pytest.raises(ValueError, match="named twice"):
        resolve_classes(["c1", 1], 10, classes)
    with pytest.raises(ValueError, match="3 classes named but max_classes is 2"):
        resolve_classes([1, 2, 3], 2, classes)
    with pytest.raises(ValueError, match="max_classes must be an integer >= 1"):
        ShownClasses(max_classes=0)


def test_the_fixed_set_is_capped_at_its_budget_whatever_the_class_count():
    assert set_budget(500, 10) == 500  # ten classes: unchanged
    assert set_budget(500, 100) == 50 and set_budget(500, 1000) == 5 and set_budget(20, 1000) == 5
    assert set_budget(500, 10_000) == 1  # never none
    labels = torch.arange(100).repeat(60)  # 100 classes, 60 samples each
    idx = choose_per_class(labels, set_budget(500, 100), 100)
    assert len(idx) == FIXED_SET_MAX // 100 * 100 and torch.equal(labels[idx].bincount(), torch.full((100,), 50))
    assert labels[choose_per_class(labels, 2, [7, 3])].tolist() == [7, 7, 3, 3]  # the shown classes, in order


def test_confusion_sub_matrix_of_the_shown_classes_equals_a_hand_computation():
    # 5 classes; true -> predicted counts
    cm = torch.tensor([[5, 1, 0, 2, 0], [0, 6, 1, 0, 1], [3, 0, 2, 0, 0], [0, 0, 0, 7, 3], [1, 1, 1, 1, 4]])
    sub = sub_confusion(cm, [3, 0])
    # rows: true 3, true 0; columns: predicted 3, predicted 0, predicted any other class
    assert sub.tolist() == [[7, 0, 3], [2, 5, 1]]
    assert torch.equal(sub.sum(1), cm[[3, 0]].sum(1))  # every row keeps its class's count
    assert torch.equal(sub_confusion(cm, list(range(5))), cm)  # every class shown: the matrix, no "other"
    assert class_columns(("a", "b", "c"), [2, 0]) == ["2 c", "0 a", "other"]
    assert class_columns(("a", "b"), [0, 1]) == ["0 a", "1 b"]


def test_probabilities_and_predictions_of_the_shown_classes():
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]])
    sub = shown_probs(probs, [2, 0])
    assert torch.allclose(sub, torch.tensor([[0.3, 0.1, 0.6], [0.1, 0.7, 0.2]]))
    assert torch.allclose(sub.sum(1), torch.ones(2))
    assert shown_positions(torch.tensor([[0, 1], [2, 3]]), [2, 0], 4).tolist() == [[1, 2], [0, 2]]


def test_class_mean_maps_are_summed_for_the_shown_classes_only():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU())
    x, y = torch.rand(40, 1, 6, 6), torch.arange(40) % 8
    means = activation_pass(net, x, map_layers=["1"], labels=y, num_classes=8, map_classes=[5, 2], batch_size=7).means
    with torch.no_grad():
        out = net(x)
    expected = torch.stack([out[y == 5].mean(0), out[y == 2].mean(0)])
    assert means["1"].shape == (2, 3, 6, 6) and torch.allclose(means["1"], expected, atol=1e-6)


def test_pictures_are_bounded_and_large_tiles_shrink_to_fit():
    big = torch.randint(0, 256, (3, 3000, 900), dtype=torch.uint8)
    out = bounded(big)
    assert out.shape[1] <= MAX_HEIGHT and out.shape[2] <= MAX_WIDTH
    assert abs(out.shape[1] / out.shape[2] - 3000 / 900) < 0.01  # aspect kept
    small = torch.zeros(3, 100, 100, dtype=torch.uint8)
    assert bounded(small) is small
    tiles = torch.rand(10, 5, 3, 224, 224)  # ten rows of five 224 px images
    grid = tile_rows(tiles, [f"row {i}" for i in range(10)], [str(j) for j in range(5)], cell=224)
    assert grid.shape[2] <= MAX_WIDTH
    assert shrink(torch.ones(2, 3, 40, 20), 10).shape == (2, 3, 10, 5)
    assert torch.allclose(shrink(torch.ones(2, 3, 40, 20), 10), torch.ones(2, 3, 10, 5))  # a flat image stays flat


# ------------------------------------------------------------------ real fits at 100 classes (zoo models, 32 px)
class HueFashion(Dataset):
    """Real Fashion-MNIST as a user's 100-class dataset: image ``i`` coloured by hue ``i % 10``, label
    ``10 * hue + garment`` (as ``fashion_mnist_100``), 32 px RGB in [0, 1], torchvision's ``targets``/``classes``."""

    def __init__(self, split: str, start: int, n: int, size: int = 32, classes: int = 100) -> None:
        images = read_idx(FASHION / f"{split}-images-idx3-ubyte.gz", 3)[start : start + n]
        garment = read_idx(FASHION / f"{split}-labels-idx1-ubyte.gz", 1)[start : start + n].long()
        self.x, labels, classes = hue_classes(images.unsqueeze(1).float() / 255, garment, classes // 10, size)
        self.targets, self.classes = labels.tolist(), list(classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.x[i], self.targets[i]


CHEAP = {"steps": 8, "warm_steps": 4, "stride": 4, "max_units": 16, "k": 3, "batch_size": 256, "save_png": False}
ZOO = {  # timm's names, no pretrained weights: each kind of net users train
    "resnet18": {},
    "convnext_atto": {},
    "efficientnet_b0": {},
    "mobilenetv3_small_100": {},
    "vgg11_bn": {},
}


def fit_zoo(name: str, root: Path, shown: ShownClasses | None = None, val: int = 300, classes: int = 100):
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, num_classes=classes)
    cbs = {}
    for key, cls in VISUALIZATIONS.items():
        params = inspect.signature(cls.__init__).parameters
        cbs[key] = cls(strict=True, **{k: v for k, v in CHEAP.items() if k in params})
    extra = [shown] if shown is not None else []
    trainer = Trainer(
        max_epochs=1,
        limit_train_batches=2,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(str(root), name=name),
        callbacks=[*extra, *cbs.values()],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(
        Classifier(net),
        DataLoader(HueFashion("train", 0, 64, classes=classes), batch_size=32, shuffle=True),
        DataLoader(HueFashion("t10k", 0, val, classes=classes), batch_size=100),
    )
    return trainer, cbs


def images_of(ea) -> dict[str, np.ndarray]:
    out = {}
    for tag in ea.Tags()["images"]:
        event = ea.Images(tag)[-1]
        out[tag] = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
    return out


@needs_fashion
@pytest.mark.parametrize("classes", [10, 100])
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_every_callback_draws_bounded_pictures(name, classes, tmp_path):
    trainer, cbs = fit_zoo(name, tmp_path, classes=classes)
    ea = read_events(trainer)
    pictures = images_of(ea)
    for key, cb in cbs.items():
        if key == "embedding":
            continue
        if key == "units":  # the unit browser's files, not pictures
            assert list(Path(trainer.logger.log_dir, UNITS_FOLDER).glob("*/epoch_0000/meta.json")), name
            continue
        assert steps_of(ea, cb.technique) or key in {"deconv", "changes"}, f"{name}: {key} logged nothing"
    for tag, img in pictures.items():
        assert img.shape[0] <= MAX_HEIGHT and img.shape[1] <= MAX_WIDTH, (
            f"{name}: {tag} is {img.shape[1]}x{img.shape[0]}"
        )
    # The per-class pictures show ten classes: all of 10; of 100 the default spread 0, 11, ..., 99, and the
    # confusion matrix is then 10 x 11 (an "other" column).
    chart = next(iter(cbs["confusion_matrix"]._charts.values()))
    assert chart.shown == list(default_shown(classes)) and chart.other == (classes > 10)
    labels = torch.tensor(HueFashion("t10k", 0, 300, classes=classes).targets)
    assert sorted(labels[cbs["occlusion"].probe_idx].tolist()) == sorted(default_shown(classes))
    # the histograms' samples are capped in all (2 per class at 100 classes), not per class
    hist = labels[cbs["activations"].histogram_idx]
    assert len(hist) <= HISTOGRAM_MAX and int(hist.bincount().max()) <= HISTOGRAM_MAX // classes
    # actmax draws the shown classes' logits, not all of them
    head = cbs["actmax"].last_linear
    assert cbs["actmax"].last[head].shape[0] == 10
    # the scalars still cover every class: the logged worst recall is the minimum over all of them
    val = HueFashion("t10k", 0, 300, classes=classes)
    net = trainer.lightning_module.net.eval()
    with torch.no_grad():
        pred = net(val.x).argmax(1)
    y = torch.tensor(val.targets)
    recall = torch.stack(
        [(pred[y == c] == c).float().mean() if (y == c).any() else torch.tensor(0.0) for c in range(classes)]
    )
    logged = ea.Scalars("confusion_matrix/worst_class_recall")[-1].value
    assert logged == pytest.approx(float(recall.min()), abs=1e-6)
    # ... from the validation loop's own outputs (a forward hook; this module returns no "preds"), no pass of its own
    seen = owner_of(trainer).scope.predictions  # gathered by the owner for the confusion matrix
    assert seen is not None and torch.equal(seen[0].cpu(), pred)


@needs_fashion
def test_classes_chosen_by_name_are_the_rows_of_every_per_class_picture(tmp_path):
    names = ["azure Coat", "red Bag", 17]
    trainer, cbs = fit_zoo("resnet18", tmp_path, ShownClasses(names=names), val=300)
    wanted = [DATASETS["fashion_mnist_100"].classes.index("azure Coat"), 8, 17]
    labels = torch.tensor(HueFashion("t10k", 0, 300).targets)
    assert labels[cbs["decision"].probe_idx].tolist() == wanted  # one probe image per chosen class, in order
    chart = next(iter(cbs["confusion_matrix"]._charts.values()))
    assert chart.shown == wanted
    sel = next(iter(cbs["selectivity"]._charts.values()))
    assert [t.get_text() for t in sel.live.fig.axes[0].get_yticklabels()] == ["azure Coat", "red Bag", "orange Sneaker"]


@needs_fashion
def test_fashion_mnist_100_is_fashion_mnist_coloured_by_sample_with_hue_and_garment_as_the_class(tmp_path):
    dm = MNISTDataModule("fashion_mnist_100", data_dir=str(tmp_path), download=False, normalize=False)
    x, y = dm.load_split("test")
    garment = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz", 1).long()
    hue = torch.arange(len(garment)) % 10
    assert torch.equal(y, hue * 10 + garment) and y.bincount(minlength=100).min() > 0
    assert dm.num_classes == 100 and dm.classes[37] == "green Sneaker" and x.shape[1:] == (3, 32, 32)
    grey = read_idx(FASHION / "t10k-images-idx3-ubyte.gz", 3)[:4].unsqueeze(1).float() / 255
    assert torch.allclose(x[:4], resize(grey, 32) * torch.tensor(CLASS_TINTS)[hue[:4]].view(-1, 3, 1, 1), atol=1e-5)


def test_no_samples_of_the_classes_asked_for_is_a_clear_error():
    """A training set without any sample of the shown classes (a few batches of a 1,000-class set) says so, instead
    of an IndexError from inside the message about the samples' type."""
    from callbacks.data import _stack

    with pytest.raises(RuntimeError, match="no training samples of the classes asked for"):
        _stack([], "training")
