"""convscope's callbacks on a model and data they were not written for, as a new user adds them.

torchvision's ResNet-18 in a plain ``LightningModule``, plain ``DataLoader``s over real Fashion-MNIST (grey 28 px,
and resized to 32 px and coloured by class as RGB), a plain ``Trainer`` with every callback of
``callbacks.VISUALIZATIONS`` in strict mode; the pictures are read back from the TensorBoard event file. Also: a
LightningModule that is itself the net, drawing that leaves every bit of the model and the random state as found,
bad layer names on a nested net, and the data side of the ResNet-18 example (``fashion_mnist_rgb``, ``cifar10``).
"""

from __future__ import annotations

import inspect
import io
import random
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import MulticlassAccuracy

from callbacks import VISUALIZATIONS, ChangesCallback, FCActivationsCallback, FeatureMapsCallback, ImportanceCallback
from callbacks import scope as coordination
from callbacks.hooks import LayerError
from callbacks.units import FOLDER as UNITS_FOLDER
from callbacks.units import drawn_epochs
from lit_modules.datamodule import (
    CLASS_TINTS,
    DATASETS,
    DataNotFoundError,
    MNISTDataModule,
    read_idx,
    resize,
    tint_per_class,
)
from lit_modules.nets import ResNet18
from tests.conftest import owner_of

FASHION = Path("/usr/share/datasets/fashion-mnist")
HAS_FASHION = all(
    (FASHION / f"{s}-{k}-idx{d}-ubyte.gz").is_file()
    for s in ("train", "t10k")
    for k, d in (("images", 3), ("labels", 1))
)
needs_fashion = pytest.mark.skipif(
    not HAS_FASHION, reason=f"Fashion-MNIST not in {FASHION} (apt-get install dataset-fashion-mnist)"
)

# Cheap settings, for the callbacks that have these knobs (each callback gets those its constructor takes).
CHEAP = {
    "per_class": 4,
    "dead_per_class": 10,
    "steps": 8,
    "warm_steps": 4,
    "stride": 4,
    "max_channels": 4,
    "max_units": 16,
    "units": 4,
    "k": 3,
    "top": 4,
    "batch_size": 256,
    "save_png": False,
}
# Ablation runs the whole net once per unit of its layers: on ResNet-18, a 64-unit stage instead of the default.
RESNET_CHEAP = {"importance": {"layers": ["layer1"]}}
DRAWN_ONCE = {"samples", "evolution"}  # the training samples at fit start; the evolution strips at fit end
COMPARES_EPOCHS = {"changes"}  # what changed since the previous drawing: nothing to compare at the first


# ------------------------------------------------------------------------------------------ the user's side
class FashionImages(Dataset):
    """Real Fashion-MNIST as a user's own dataset: ``(C, H, W)`` tensors in [0, 1] (ToTensor's convention), with
    ``targets`` and ``classes`` as torchvision's datasets have them; ``rgb``: resized to 32 px, coloured by class."""

    def __init__(self, split: str, start: int, n: int, rgb: bool) -> None:
        images = read_idx(FASHION / f"{split}-images-idx3-ubyte.gz", 3)[start : start + n]
        labels = read_idx(FASHION / f"{split}-labels-idx1-ubyte.gz", 1)[start : start + n].long()
        x = images.unsqueeze(1).float() / 255  # (n, 1, 28, 28)
        self.x = tint_per_class(resize(x, 32), labels) if rgb else x  # (n, 3, 32, 32) or (n, 1, 28, 28)
        self.targets = labels.tolist()
        self.classes = list(DATASETS["fashion_mnist"].classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.x[i], self.targets[i]


class Classifier(pl.LightningModule):
    """A plain LightningModule around any net, as in Lightning's docs (nothing convscope-specific)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.02, momentum=0.9)


class NetIsTheModule(pl.LightningModule):
    """No ``.net``: the LightningModule holds the layers itself, with a loss module and a metric that are modules
    too but are not called in ``forward``."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (N, 8, 14, 14)
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (N, 16, 7, 7)
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(16 * 7 * 7, 10))
        self.loss_fn = nn.CrossEntropyLoss()
        self.val_acc = MulticlassAccuracy(10)

    def forward(self, x):
        return self.classifier(self.features(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.loss_fn(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_acc(self(x), y)
        self.log("val_acc", self.val_acc)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def resnet18(rgb: bool) -> nn.Module:
    """torchvision's ResNet-18 untouched for RGB 32 px (its 7x7 stride-2 stem and max-pool take 32 px to 8 px);
    for grey 28 px only the first conv takes one channel (layer4's maps are then 1x1)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    if not rgb:
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


def cheap_callbacks(overrides: dict | None = None) -> dict:
    """Every callback of ``VISUALIZATIONS``, strict, with the cheap settings its constructor takes."""
    made = {}
    for key, cls in VISUALIZATIONS.items():
        params = inspect.signature(cls.__init__).parameters
        kwargs = (
            {k: v for k, v in CHEAP.items() if k in params} | {"every_n_epochs": 1} | (overrides or {}).get(key, {})
        )
        made[key] = cls(strict=True, **kwargs)
    return made


def fit(module: pl.LightningModule, rgb: bool, root: Path, max_epochs: int = 2, callbacks: dict | None = None):
    """A plain Trainer on plain DataLoaders: 64 training and 200 validation images of real Fashion-MNIST."""
    train = FashionImages("train", 0, 64, rgb)
    val = FashionImages("t10k", 0, 200, rgb)
    cbs = cheap_callbacks(RESNET_CHEAP if hasattr(module, "net") else None) if callbacks is None else callbacks
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        limit_train_batches=2,
        limit_val_batches=2,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(str(root), name="run"),
        callbacks=list(cbs.values()),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=1,
    )
    torch.manual_seed(0)
    trainer.fit(module, DataLoader(train, batch_size=32, shuffle=True), DataLoader(val, batch_size=100))
    return trainer, cbs


def read_events(trainer) -> EventAccumulator:
    ea = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0, "scalars": 0, "histograms": 0})
    ea.Reload()
    return ea


def steps_of(ea: EventAccumulator, technique: str) -> dict[str, list[int]]:
    """``{tag: steps}`` of every image, scalar and histogram tag of a technique (``<technique>[/...]``)."""
    out = {}
    for kind, read in (("images", ea.Images), ("scalars", ea.Scalars), ("histograms", ea.Histograms)):
        for tag in ea.Tags()[kind]:
            if tag == technique or tag.startswith(technique + "/"):
                out[tag] = sorted(e.step for e in read(tag))
    return out


def assert_every_callback_drew_at_both_epochs(trainer, cbs: dict) -> EventAccumulator:
    ea = read_events(trainer)
    run = Path(trainer.logger.log_dir)
    for key, cb in cbs.items():
        if key == "embedding":  # the projector writes its own files, one folder per step
            for step in (0, 1):
                assert list(run.glob(f"{step:05d}/*/tensors.tsv")), f"embedding: no projector data at step {step}"
            assert (run / "projector_config.pbtxt").is_file()
            continue
        if key == "units":  # the unit browser's files, one folder per layer and step
            for layer in cb.layer_names:
                assert drawn_epochs(run / UNITS_FOLDER / layer) == [0, 1], f"units: {layer}"
            continue
        tags = steps_of(ea, cb.technique)
        assert tags, f"{key} logged nothing (tags: {sorted(ea.Tags()['images'])})"
        if key in DRAWN_ONCE:
            assert any(tag in ea.Tags()["images"] for tag in tags), f"{key} logged no picture"
            continue
        assert any(tag in ea.Tags()["images"] or tag in ea.Tags()["histograms"] for tag in tags), f"{key}: no picture"
        expected = [1] if key in COMPARES_EPOCHS else [0, 1]
        for tag, steps in tags.items():
            if tag in ea.Tags()["images"] or tag in ea.Tags()["histograms"]:
                assert steps == expected, f"{key}: {tag} logged at steps {steps}, expected one picture at each epoch"
            else:  # a scalar is skipped where it is undefined (a rank correlation of constant values)
                assert steps and set(steps) <= set(expected), f"{key}: {tag} logged at steps {steps}"
    return ea


def picture(ea: EventAccumulator, tag: str, step: int) -> np.ndarray:
    event = next(e for e in ea.Images(tag) if e.step == step)
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


def tints_seen(img: np.ndarray, min_pixels: int = 20) -> set[int]:
    """The classes whose tint colours at least ``min_pixels`` pixels of ``img``: pixels of clear colour (channels
    differ by 40 or more out of 255) whose RGB direction is that class's tint (a tinted image is grey x tint)."""
    px = img.reshape(-1, 3).astype(np.float64)
    px = px[(px.max(1) - px.min(1)) >= 40]
    if not len(px):
        return set()
    unit = px / np.linalg.norm(px, axis=1, keepdims=True)
    tints = np.asarray(CLASS_TINTS)
    cos = unit @ (tints / np.linalg.norm(tints, axis=1, keepdims=True)).T  # (pixels, 10)
    best, which = cos.max(1), cos.argmax(1)
    counts = np.bincount(which[best > 0.998], minlength=len(tints))
    return {int(c) for c in np.nonzero(counts >= min_pixels)[0]}


# ----------------------------------------------------------------------------------------- (a) ResNet-18 fits
@pytest.fixture(scope="module")
def grey_run(tmp_path_factory):
    return fit(Classifier(resnet18(rgb=False)), rgb=False, root=tmp_path_factory.mktemp("grey"))


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory):
    return fit(Classifier(resnet18(rgb=True)), rgb=True, root=tmp_path_factory.mktemp("rgb"))


@needs_fashion
def test_resnet18_on_grey_28px_every_callback_draws_at_both_epochs(grey_run):
    trainer, cbs = grey_run
    ea = assert_every_callback_drew_at_both_epochs(trainer, cbs)
    assert trainer.current_epoch == 2 and trainer.global_step == 4  # it trained
    # Inputs are grey: the training samples picture has no tinted pixels.
    assert tints_seen(picture(ea, "samples/train", 0)) == set()


@needs_fashion
def test_resnet18_on_rgb_32px_every_callback_draws_at_both_epochs_in_colour(rgb_run, grey_run):
    trainer, cbs = rgb_run
    ea = assert_every_callback_drew_at_both_epochs(trainer, cbs)
    grey = read_events(grey_run[0])
    # Where a picture shows input images, they keep their class colours (RGB drawn as RGB, not as a channel mean);
    # the same picture of the grey run has none of them.
    shown = {
        tag for tag in ea.Tags()["images"] if tag.split("/")[0] in ("samples", "top_activations", "deconv", "occlusion")
    }
    assert "samples/train" in shown
    for tag in sorted(shown):
        step = 0 if tag.startswith("samples") else 1
        seen = tints_seen(picture(ea, tag, step))
        assert len(seen) >= 3, f"{tag}: input images not drawn in their colours (class tints seen: {sorted(seen)})"
        if tag in grey.Tags()["images"]:
            assert len(tints_seen(picture(grey, tag, step))) < len(seen), tag
    assert len(tints_seen(picture(ea, "samples/train", 0))) == 10  # every class, in its own colour
    # The first conv has 3 input channels: its filters are drawn as RGB, so some tiles are coloured.
    filters = [t for t in ea.Tags()["images"] if t.startswith("filters/")]
    assert filters == ["filters/conv1"], filters
    img = picture(ea, "filters/conv1", 1).astype(int)
    assert ((img.max(2) - img.min(2)) > 60).mean() > 0.01


@needs_fashion
def test_callbacks_take_classes_shape_and_range_from_the_validation_dataset(rgb_run):
    trainer, cbs = rgb_run
    facts = owner_of(trainer).scope.facts  # what every technique of the owner reads
    assert facts.classes == tuple(DATASETS["fashion_mnist"].classes)
    assert facts.input_shape == (3, 32, 32)
    val = trainer.val_dataloaders.dataset
    assert facts.pixel_range == pytest.approx((float(val.x.min()), float(val.x.max())))
    # The probe images are the first validation image of each class, in class order, the same for every callback.
    targets = torch.tensor(val.targets)
    first = [int(torch.nonzero(targets == c)[0]) for c in range(10)]
    probes = [cb.probe_idx.tolist() for cb in cbs.values() if getattr(cb, "probe_idx", None) is not None]
    # (a callback with several probes per class, like invariance, takes the first few of each class)
    assert probes and all(p == first for p in probes if len(p) == 10), probes
    assert all(set(first) <= set(p) for p in probes), probes


# ------------------------------------------------------------------------- (b) the module itself is the net
@needs_fashion
def test_a_module_without_net_is_the_net(tmp_path):
    module = NetIsTheModule()
    trainer, cbs = fit(module, rgb=False, root=tmp_path)
    ea = assert_every_callback_drew_at_both_epochs(trainer, cbs)
    assert "filters/features.0" in ea.Tags()["images"]  # its layers are addressed by their own nested names


# ------------------------------------------------- the fixed-set statistics from the validation loop's own passes
@needs_fashion
@pytest.mark.parametrize("how", ["in order", "in order, MNISTDataModule", "shuffled", "partly seen"])
def test_fixed_set_statistics_come_from_the_validation_loop_when_it_sees_the_whole_set(
    how, tmp_path, monkeypatch, idx_dir
):
    """When validation runs over the samples in order, the per-sample unit means and the class-mean maps of the
    fixed set are gathered from its own forward passes: no pass of their own. They equal a pass of their own
    exactly. A shuffled or partly seen validation set falls back to that pass, with the same result."""
    passes = []
    real_pass = coordination.activation_pass
    monkeypatch.setattr(coordination, "activation_pass", lambda *a, **k: passes.append(1) or real_pass(*a, **k))
    val = FashionImages("t10k", 0, 200, rgb=False)
    # changes draws every 2 epochs: at the first, its layers are in the same pass all the same
    cbs = [
        FCActivationsCallback(per_class=4, strict=True),
        FeatureMapsCallback(per_class=4, strict=True),
        ChangesCallback(per_class=4, strict=True),
    ]
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1 if how == "partly seen" else 1.0,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(str(tmp_path), name="run"),
        callbacks=cbs,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    module = NetIsTheModule()
    if how.endswith("MNISTDataModule"):  # the fast path: batches sliced from the split's tensors
        trainer.fit(
            module,
            datamodule=MNISTDataModule(
                "mnist", data_dir=str(idx_dir), val_size=200, eval_batch_size=64, download=False
            ),
        )
    else:
        trainer.fit(
            module,
            DataLoader(FashionImages("train", 0, 64, rgb=False), batch_size=32),
            DataLoader(val, batch_size=50, shuffle=how == "shuffled"),
        )
    assert len(passes) == (0 if how.startswith("in order") else 2)  # one own pass per drawn epoch when it falls back
    cache = owner_of(trainer).scope.passes[4]
    x, y = owner_of(trainer).scope.fixed(cbs[0], "set", 4)
    assert len(x) == 40 and cache.step == 1  # the last epoch's statistics
    units, maps = list(cache.acts), list(cache.maps)
    assert "classifier.2" in units and "features.0" in maps
    with torch.no_grad():
        acts, means, _ = real_pass(module.eval(), x, units, maps, labels=y, num_classes=10)
    for name in units:
        torch.testing.assert_close(cache.acts[name], acts[name], rtol=0, atol=1e-6)
    for name in maps:
        torch.testing.assert_close(cache.maps[name], means[name], rtol=0, atol=1e-6)
    assert all(not m._forward_hooks for m in module.modules())  # the validation-time hooks are gone


@needs_fashion
def test_importance_ablates_the_set_capped_by_max_samples(tmp_path):
    """``max_samples`` caps the ablation's set (2 per class here). The set is chosen when the validation loop starts
    gathering the shared activations, so that choice must use the cap too: it once took ``per_class`` of every
    class, and the ablation (a pass of the net's tail per unit) ran over 4 times the samples at 100 classes."""
    cb = ImportanceCallback(max_samples=20, max_units=4, strict=True)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(str(tmp_path), name="run"),
        callbacks=[cb],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    val = FashionImages("t10k", 0, 200, rgb=False)
    torch.manual_seed(0)
    trainer.fit(
        NetIsTheModule(),
        DataLoader(FashionImages("train", 0, 64, rgb=False), batch_size=32),
        DataLoader(val, batch_size=50),
    )
    labels = torch.as_tensor(val.targets)[cb.fixed_idx]
    assert cb.samples_per_class(10) == 2 and labels.bincount(minlength=10).tolist() == [2] * 10
    ea = EventAccumulator(str(trainer.logger.log_dir), size_guidance={"images": 0})
    ea.Reload()
    assert {f"importance/{n}" for n in cb.layer_names} <= set(ea.Tags()["images"])


# ------------------------------------------------------------------- (c) drawing changes nothing in the model
def _state(module: pl.LightningModule) -> dict:
    return {
        "params": {n: p.detach().clone() for n, p in module.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in module.named_parameters()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in module.named_parameters()},
        "buffers": {n: b.clone() for n, b in module.named_buffers()},
        "training": {n: m.training for n, m in module.named_modules()},
        "hooks": {
            n: (
                len(m._forward_hooks),
                len(m._forward_pre_hooks),
                len(m._backward_hooks),
                len(getattr(m, "_backward_pre_hooks", {})),
            )
            for n, m in module.named_modules()
        },
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state(),
        "grad_enabled": torch.is_grad_enabled(),
    }


def _assert_same(before: dict, after: dict, key: str) -> None:
    for what in ("params", "buffers"):
        for name, t in before[what].items():
            assert t.dtype == after[what][name].dtype and torch.equal(t, after[what][name]), (
                f"{key} changed {what[:-1]} {name}"
            )
    for name, g in before["grads"].items():
        h = after["grads"][name]
        assert (g is None) == (h is None) and (g is None or torch.equal(g, h)), f"{key} touched {name}.grad"
    for what in ("requires_grad", "training", "hooks", "grad_enabled"):
        assert before[what] == after[what], f"{key} changed {what}"
    assert torch.equal(before["torch_rng"], after["torch_rng"]), f"{key} drew from torch's global RNG"
    assert before["python_rng"] == after["python_rng"], f"{key} drew from python's random"
    b, a = before["numpy_rng"], after["numpy_rng"]
    assert b[0] == a[0] and np.array_equal(b[1], a[1]) and b[2:] == a[2:], f"{key} drew from numpy's RNG"


@pytest.fixture(scope="module")
def ready_trainer(tmp_path_factory):
    """A Trainer set up on ResNet-18 (a Dropout before its last Linear) and RGB data, with every callback; no
    epoch trained (``max_epochs=0``: only setup and the sanity check run), so each test draws once by hand."""
    net = resnet18(rgb=True)
    net.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(512, 10))
    module = Classifier(net)
    trainer, cbs = fit(module, rgb=True, root=tmp_path_factory.mktemp("state"), max_epochs=0)
    return trainer, module, cbs


@needs_fashion
@pytest.mark.parametrize("key", list(VISUALIZATIONS))
def test_drawing_leaves_the_model_and_random_state_bit_for_bit(key, ready_trainer):
    trainer, module, cbs = ready_trainer
    cb = cbs[key]
    module.train()
    module.net.layer3.eval()  # a mixed pattern: each module's own flag must come back, not one flag for all
    g = torch.Generator().manual_seed(1)
    for i, p in enumerate(module.parameters()):  # gradients present on half the parameters, None on the others
        p.grad = torch.randn(p.shape, generator=g) if i % 2 else None
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    before = _state(module)
    logged_before = len(cb.seconds)
    cb.draw(trainer, module, step=5)
    assert len(cb.seconds) == logged_before + 1  # it really drew (strict: an error would have been raised)
    _assert_same(before, _state(module), key)


# ------------------------------------------------------------------------- (d) bad names on a nested net
BAD = "layer1.0.conv9"
BAD_ARGS = {
    "filters": {"layer": BAD},
    "embedding": {"layer": BAD},
    "actmax": {"layers": {BAD: [0]}},
    "decision": {"stages": [BAD]},
}


@pytest.mark.parametrize(
    "key",
    [k for k, cls in VISUALIZATIONS.items() if k in BAD_ARGS or "layers" in inspect.signature(cls.__init__).parameters],
)
def test_a_bad_layer_name_lists_the_valid_nested_names(key):
    cls = VISUALIZATIONS[key]
    cb = cls(**BAD_ARGS.get(key, {"layers": [BAD]}))
    net = resnet18(rgb=True)
    with pytest.raises(LayerError) as e:
        cb.configure_for(net, (3, 32, 32))
    msg = str(e.value)
    assert BAD in msg and cls.__name__ in msg
    assert "layer1.0.conv1" in msg and "layer4.1.bn2" in msg and "fc" in msg  # nested names are listed


@needs_fashion
def test_a_bad_layer_name_fails_before_the_first_training_step(tmp_path):
    module = Classifier(resnet18(rgb=True))
    cbs = {"feature_maps": VISUALIZATIONS["feature_maps"](layers=["layer1.0.relu", "layer2.9"])}
    with pytest.raises(LayerError, match=r"\['layer2\.9'\].*layer2\.0\.downsample\.0"):
        fit(module, rgb=True, root=tmp_path, callbacks=cbs)
    assert module.global_step == 0


# ------------------------------------------------------------------ the data side of the ResNet-18 example
@needs_fashion
def test_fashion_mnist_rgb_is_fashion_mnist_resized_and_coloured_by_class(tmp_path):
    dm = MNISTDataModule("fashion_mnist_rgb", data_dir=str(tmp_path), val_size=1000, download=False)
    grey = MNISTDataModule("fashion_mnist", data_dir=str(tmp_path), val_size=1000, download=False, normalize=False)
    dm.setup("fit")
    grey.setup("fit")
    x, y = dm.split("val")
    g, gy = grey.split("val")
    assert x.shape == (1000, 3, 32, 32) and dm.input_shape == (3, 32, 32) and torch.equal(y, gy)
    assert dm.classes == DATASETS["fashion_mnist"].classes and dm.num_classes == 10
    # Undo the per-channel normalization: each image is its grey original, resized, times its class's tint.
    raw = x * torch.tensor(dm.std).view(1, 3, 1, 1) + torch.tensor(dm.mean).view(1, 3, 1, 1)
    expected = resize(g, 32) * torch.tensor(CLASS_TINTS)[y].view(-1, 3, 1, 1)
    assert torch.allclose(raw, expected, atol=1e-5)
    # The stated pixel range covers every channel's black and white, and the data fills it.
    lo, hi = dm.pixel_range
    assert [pytest.approx(v, abs=1e-4) for v in (lo, hi)] == [
        min(r[0] for r in dm.channel_ranges),
        max(r[1] for r in dm.channel_ranges),
    ]
    assert lo - 1e-4 <= float(x.min()) and float(x.max()) <= hi + 1e-4
    assert float(x.min()) == pytest.approx(lo, abs=0.02)
    # The training set is standardized per channel (the spec's statistics are those of the training images).
    xt, _ = dm.split("train")
    assert xt.mean((0, 2, 3)).abs().max() < 0.02 and (xt.std((0, 2, 3)) - 1).abs().max() < 0.02


def test_cifar10_missing_offline_fails_early_naming_the_folder_and_remedies(tmp_path):
    dm = MNISTDataModule("cifar10", data_dir=str(tmp_path / "data"), download=False)
    assert dm.input_shape == (3, 32, 32) and dm.classes[0] == "airplane" and dm.num_classes == 10
    with pytest.raises(DataNotFoundError) as e:
        dm.prepare_data()
    msg = str(e.value)
    assert str(tmp_path / "data" / "cifar-10-batches-py") in msg
    assert "--data.download true" in msg and "--data.dataset fashion_mnist_rgb" in msg
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py"):
        dm.setup("fit")  # setup without prepare_data fails the same way, not deep inside torchvision


def test_cifar10_files_that_are_not_genuine_are_refused_by_torchvision_checksums(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"not a pickle")
    dm = MNISTDataModule("cifar10", data_dir=str(tmp_path), download=False)
    dm.prepare_data()  # every file is there by name
    with pytest.raises(DataNotFoundError, match="torchvision could not read it"):
        dm.setup("fit")


def test_resnet18_example_net_takes_32px_grey_or_rgb_and_keeps_torchvision_names():
    reference = [n for n, _ in torchvision.models.resnet18(weights=None).named_modules()]
    for channels in (1, 3):
        net = ResNet18(in_channels=channels).eval()
        assert [n for n, _ in net.named_modules()] == reference
        maps = {}
        hooks = [
            net.get_submodule(n).register_forward_hook(lambda m, i, o, n=n, maps=maps: maps.__setitem__(n, o.shape[1:]))
            for n in ("conv1", "layer1", "layer4")
        ]
        with torch.no_grad():
            out = net(torch.randn(2, channels, 32, 32))
        for h in hooks:
            h.remove()
        assert out.shape == (2, 10)
        assert maps == {"conv1": (64, 32, 32), "layer1": (64, 32, 32), "layer4": (512, 4, 4)}
        assert not any(isinstance(m, nn.ReLU) and m.inplace for m in net.modules())
    with pytest.raises(ValueError, match="in_channels"):
        ResNet18(in_channels=2)


@needs_fashion
def test_background_drawing_on_plain_dataloaders_equals_inline(grey_run, tmp_path):
    """``Drawing("background")`` with a plain LightningModule and DataLoaders (no datamodule): the drawing process
    gets the validation DataLoader and draws every picture of the inline fit, byte for byte."""
    from callbacks.drawing import Drawing

    cbs = {**cheap_callbacks(RESNET_CHEAP), "drawing": Drawing("background")}
    trainer, _ = fit(Classifier(resnet18(rgb=False)), rgb=False, root=tmp_path, callbacks=cbs)
    assert cbs["drawing"].drawn == [0, 1]  # drawn by the other process
    inline, background = read_events(grey_run[0]), read_events(trainer)
    tags = inline.Tags()["images"]
    assert set(background.Tags()["images"]) == set(tags) and len(tags) > 20
    for tag in tags:
        a = {e.step: e.encoded_image_string for e in inline.Images(tag)}
        b = {e.step: e.encoded_image_string for e in background.Images(tag)}
        assert a == b, tag
