"""convscope's pictures under modern training settings: bf16 mixed precision, channels-last, ``torch.compile`` and
gradient accumulation (DDP on two CPU processes: ``tests/test_reliability.py``).

Real Trainer runs of a small RGB CNN (with BatchNorm) on synthetic 32 px images (conftest's class bars, tinted by
class), every callback of ``VISUALIZATIONS`` in strict mode with cheap settings, the pictures read back from the
TensorBoard event file (the helpers of ``tests/test_any_model.py``).
"""

from __future__ import annotations

import copy
import io
import shutil
from collections import OrderedDict
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from callbacks import VISUALIZATIONS
from callbacks import scope as coordination
from callbacks.hooks import LayerError, eval_mode
from callbacks.scope import net_of
from lit_modules.datamodule import resize, tint_per_class
from tests.conftest import owner_of, synthetic_digits
from tests.test_any_model import Classifier, assert_every_callback_drew_at_both_epochs, cheap_callbacks, read_events

# torch.compile's default backend (inductor) needs a C compiler; without one, the "eager" backend still makes the
# OptimizedModule with `_orig_mod.` names whose hooks, tracing and names are what the callbacks have to handle.
COMPILE_BACKEND = "inductor" if shutil.which("cc") or shutil.which("gcc") else "eager"
PER_CLASS = 4  # the cheap callbacks' fixed set (test_any_model.CHEAP)


def small_cnn() -> nn.Module:
    """A small CNN for RGB 32 px: (N, 3, 32, 32) -> (N, 10) logits, fixed weights (seed 0)."""
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            conv_1=nn.Conv2d(3, 8, 3, padding=1),
            bn_1=nn.BatchNorm2d(8),
            relu_1=nn.ReLU(),  # (N, 8, 32, 32)
            pool_1=nn.MaxPool2d(2),  # (N, 8, 16, 16)
            conv_2=nn.Conv2d(8, 16, 3, padding=1),
            relu_2=nn.ReLU(),
            pool_2=nn.MaxPool2d(2),  # (N, 16, 8, 8)
            flatten=nn.Flatten(),
            fc_1=nn.Linear(16 * 8 * 8, 32),
            relu_3=nn.ReLU(),  # (N, 32)
            fc_2=nn.Linear(32, 10),  # (N, 10)
        )
    )


def bars(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` RGB 32 px images in [0, 1] whose class is a bright bar at a class-specific place, tinted by class."""
    images, labels = synthetic_digits(n, seed)
    y = torch.from_numpy(labels).long()
    return tint_per_class(resize(torch.from_numpy(images).unsqueeze(1).float() / 255, 32), y), y


class Bars(Dataset):
    """The bars as a user's own map-style dataset, with ``targets`` and ``classes``."""

    def __init__(self, n: int, seed: int) -> None:
        self.x, y = bars(n, seed)
        self.targets = y.tolist()
        self.classes = [f"bar{c}" for c in range(10)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.x[i], self.targets[i]


def fit(module: pl.LightningModule, root: Path, callbacks: dict | None = None, n_train: int = 64, **trainer_kwargs):
    """A plain Trainer on plain DataLoaders (``n_train`` training images in batches of 32, 200 validation images in
    order in batches of 100), 2 epochs, every callback strict and cheap unless ``callbacks`` are given."""
    cbs = cheap_callbacks() if callbacks is None else callbacks
    kwargs = (
        dict(
            max_epochs=2,
            limit_train_batches=2,
            accelerator="cpu",
            devices=1,
            num_sanity_val_steps=1,
            logger=TensorBoardLogger(str(root), name="run"),
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
        )
        | trainer_kwargs
    )
    trainer = pl.Trainer(callbacks=list(cbs.values()), **kwargs)
    torch.manual_seed(0)
    trainer.fit(
        module, DataLoader(Bars(n_train, 0), batch_size=32, shuffle=True), DataLoader(Bars(200, 1), batch_size=100)
    )
    return trainer, cbs


def pictures(ea, step: int) -> dict[str, bytes]:
    """``{tag: PNG bytes}`` of every image logged at ``step``."""
    out = {}
    for tag in ea.Tags()["images"]:
        for e in ea.Images(tag):
            if e.step == step:
                out[tag] = e.encoded_image_string
    return out


def assert_fixed_set_statistics_are_float32_numbers_of(trainer, net: nn.Module) -> coordination.SharedPass:
    """The last drawn epoch's fixed-set statistics (the cache every callback reads) equal a float32 pass of the
    eager ``net`` over the fixed set, without autocast; returns the cache."""
    cache = owner_of(trainer).scope.passes[PER_CLASS]
    cb = next(cb for cb in trainer.callbacks if getattr(cb, "shared_layers", None))
    x, y = owner_of(trainer).scope.fixed(cb, "set", PER_CLASS)
    units, maps = list(cache.acts), list(cache.maps)
    assert units and maps and cache.step == trainer.current_epoch - 1
    with eval_mode(net), torch.no_grad():
        acts, means, _ = coordination.activation_pass(net, x, units, maps, labels=y, num_classes=10)
    for name in units:
        assert cache.acts[name].dtype == torch.float32, name
        torch.testing.assert_close(cache.acts[name], acts[name], rtol=0, atol=1e-6)
    for name in maps:
        torch.testing.assert_close(cache.maps[name], means[name], rtol=0, atol=1e-6)
    return cache


# ------------------------------------------------------------------------------------------------- bf16-mixed
# Drawn again by hand after the fit; all but actmax (warm-started from its last drawing) give the fit's last picture.
REDRAWN = [
    "filters",
    "feature_maps",
    "fc_activations",
    "actmax",
    "deconv",
    "selectivity",
    "layer_responses",
    "decision",
    "top_activations",
    "importance",
    "occlusion",
    "invariance",
    "confusion_matrix",
]


def test_bf16_mixed_every_callback_draws_and_the_pictures_are_float32(tmp_path):
    module = Classifier(small_cnn())
    trainer, cbs = fit(module, tmp_path, precision="bf16-mixed")
    assert trainer.precision == "bf16-mixed"
    ea = assert_every_callback_drew_at_both_epochs(trainer, cbs)
    assert all(p.dtype == torch.float32 for p in module.parameters())  # mixed: the weights stay float32
    # The validation loop ran under autocast (bf16 activations): the fixed-set statistics are not taken from it
    # but from a float32 pass, the numbers a run without mixed precision gets from the same weights.
    assert_fixed_set_statistics_are_float32_numbers_of(trainer, module.net)
    # Drawn again by hand at the same step from the same weights and the same callback state, inside a bf16
    # autocast region (as a strategy or a user's code may call it) and outside: the same pictures, byte for byte,
    # and those of the fit's last epoch.
    recorder = Recorder()
    owner_of(trainer).scope.listeners.append(recorder.record)
    states = {key: copy.deepcopy(cbs[key].get_state()) for key in REDRAWN}
    for autocast in (True, False):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            for key in REDRAWN:
                cbs[key].set_state(copy.deepcopy(states[key]))
                cbs[key].draw(trainer, module, step=1)
    under_autocast, plain = (
        recorder.pictures[: len(recorder.pictures) // 2],
        recorder.pictures[len(recorder.pictures) // 2 :],
    )
    last = pictures(ea, 1)
    assert len(plain) >= 20 and [tag for tag, _ in under_autocast] == [tag for tag, _ in plain]
    for (tag, png), (_, png_autocast) in zip(plain, under_autocast):
        assert png_autocast == png, f"{tag}: drawn under autocast, the picture differs"
        if not tag.startswith("actmax/"):
            assert last[tag] == png, f"{tag}: drawn again from the same weights, the picture differs from the fit's"
        assert np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).std() > 0, tag


class Recorder:
    """Keeps the PNG of every picture drawn (a listener of the Trainer's coordinator, which ``RenderContext.add_image``
    publishes each picture to)."""

    def __init__(self) -> None:
        self.pictures: list[tuple[str, bytes]] = []

    def record(self, tag: str, step: int, png: bytes, source, fit_last=None) -> None:
        self.pictures.append((tag, png))


# ------------------------------------------------------------------------------------------------ channels-last
class BarsData(pl.LightningDataModule):
    """A user's datamodule holding its splits as tensors (``split(name) -> (x, y)``, which convscope reads
    directly); ``channels_last``: the tensors, hence the callbacks' inputs, and the batches stored channels-last."""

    def __init__(self, channels_last: bool) -> None:
        super().__init__()
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.splits = {
            name: (x.contiguous(memory_format=fmt), y)
            for name, (x, y) in (("train", bars(64, 0)), ("val", bars(200, 1)))
        }
        self.fmt = fmt
        self.classes = [f"bar{c}" for c in range(10)]

    def split(self, name: str):
        return self.splits[name]

    def _collate(self, batch):
        x, y = torch.utils.data.default_collate(batch)
        return x.contiguous(memory_format=self.fmt), y

    def val_dataloader(self):
        return DataLoader(TensorDataset(*self.splits["val"]), batch_size=100, collate_fn=self._collate)


def validate(net: nn.Module, root: Path, channels_last: bool):
    dm = BarsData(channels_last)
    cbs = cheap_callbacks()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(str(root), name="run"),
        callbacks=list(cbs.values()),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(Classifier(net), datamodule=dm)
    return trainer, dm


def test_channels_last_net_and_inputs_give_the_same_pictures(tmp_path):
    net = small_cnn()
    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    assert net_cl.conv_1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not net_cl.conv_1.weight.is_contiguous()
    plain, _ = validate(net, tmp_path / "plain", channels_last=False)
    cl, dm = validate(net_cl, tmp_path / "cl", channels_last=True)
    x = dm.split("val")[0]
    fm = next(cb for cb in cl.callbacks if getattr(cb, "technique", "") == "feature_maps")
    probes = owner_of(cl).scope.fixed(fm, "probe", 1)[0]
    for t in (x, probes):  # the data and the images the callbacks draw from are channels-last
        assert t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    a, b = read_events(plain), read_events(cl)
    want, got = pictures(a, 0), pictures(b, 0)
    assert len(want) >= 20 and set(got) == set(want)
    # Channels-last convolutions round differently (about 3e-7 here), so a value on a colour step's edge may fall
    # on its other side: a picture is the same but for a few such pixels (a layout mix-up changes most of them).
    for tag, png in want.items():
        if got[tag] != png:
            a_img, b_img = (np.asarray(Image.open(io.BytesIO(p)).convert("RGB")).astype(int) for p in (png, got[tag]))
            assert a_img.shape == b_img.shape, tag
            differ = (np.abs(a_img - b_img).max(2) > 0).mean()
            assert differ < 0.002, f"{tag}: {differ:.2%} of the pixels differ with a channels-last net and inputs"
    for tag in a.Tags()["scalars"]:
        assert [e.value for e in b.Scalars(tag)] == pytest.approx([e.value for e in a.Scalars(tag)], abs=1e-5), tag
    # The numbers behind them: the fixed set's per-sample unit means and class-mean maps.
    ca = owner_of(plain).scope.passes[PER_CLASS]
    cb = owner_of(cl).scope.passes[PER_CLASS]
    for kind in ("acts", "maps"):
        want, got = getattr(ca, kind), getattr(cb, kind)
        assert want and set(want) == set(got)
        for name in want:
            torch.testing.assert_close(got[name].contiguous(), want[name], rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------ torch.compile
def test_compiled_net_every_callback_draws_from_its_eager_module(tmp_path):
    net = small_cnn()
    compiled = torch.compile(net, backend=COMPILE_BACKEND)
    assert [n for n, _ in compiled.named_modules()][1] == "_orig_mod"  # its names carry the prefix
    module = Classifier(compiled)
    # A user's layer names, copied from the compiled net (with the prefix) or from the eager one (without).
    cbs = cheap_callbacks(
        {
            "filters": {"layer": "_orig_mod.conv_2"},
            "feature_maps": {"layers": ["_orig_mod.conv_1", "relu_2"]},
            "actmax": {"layers": {"_orig_mod.conv_2": [0, 1], "fc_2": [0, 1, 2]}},
            "top_activations": {"layers": ["_orig_mod.relu_1", "relu_3"]},
            "selectivity": {"layers": ["_orig_mod.relu_3"]},
            "decision": {"stages": ["_orig_mod.pool_1", "pool_2"], "fc_layers": ["_orig_mod.relu_3"]},
        }
    )
    trainer, cbs = fit(module, tmp_path, callbacks=cbs)
    ea = assert_every_callback_drew_at_both_epochs(trainer, cbs)
    tags = [*ea.Tags()["images"], *ea.Tags()["scalars"], *ea.Tags()["histograms"]]
    assert not [t for t in tags if "_orig_mod" in t]  # tags name the layers as the eager net does
    for tag in (
        "filters/conv_2",
        "feature_maps/conv_1",
        "feature_maps/relu_2",
        "top_activations/relu_1",
        "top_activations/relu_3",
        "selectivity/relu_3/mean_index",
    ):
        assert tag in tags, tag
    assert cbs["actmax"].layer_units == {"conv_2": [0, 1], "fc_2": [0, 1, 2]}
    assert ea.Tags()["graph"]  # the samples callback's graph: traced from the eager module
    assert compiled._orig_mod is net and module.net is compiled  # the user's module is left compiled
    assert all(not m._forward_hooks for m in net.modules())
    assert_fixed_set_statistics_are_float32_numbers_of(trainer, net)


def test_a_wrong_layer_name_on_a_compiled_net_lists_the_eager_names():
    module = Classifier(torch.compile(small_cnn(), backend=COMPILE_BACKEND))
    for key, kwargs in (
        ("feature_maps", {"layers": ["_orig_mod.conv_9"]}),
        ("filters", {"layer": "conv_9"}),
        ("actmax", {"layers": {"_orig_mod.conv_9": [0]}}),
    ):
        cb = VISUALIZATIONS[key](**kwargs)
        with pytest.raises(LayerError) as e:
            cb.configure_for(net_of(module), (3, 32, 32))
        msg = str(e.value)
        assert "conv_9" in msg and "valid: conv_1, bn_1, relu_1" in msg and "fc_2" in msg, msg
        assert "valid: _orig_mod" not in msg and "_orig_mod.conv_1" not in msg, msg


# ------------------------------------------------------------------------------------- gradient accumulation
def test_gradient_accumulation_draws_every_epoch_from_the_weights_of_that_epoch(tmp_path, monkeypatch):
    passes = []
    real_pass = coordination.activation_pass
    monkeypatch.setattr(coordination, "activation_pass", lambda *a, **k: passes.append(len(a[1])) or real_pass(*a, **k))
    module = Classifier(small_cnn())
    # 3 batches per epoch in pairs: an optimizer step after batches 2 and 3 (Lightning steps at the epoch's end).
    trainer, cbs = fit(module, tmp_path, accumulate_grad_batches=2, n_train=96, limit_train_batches=3)
    assert trainer.global_step == 4
    assert_every_callback_drew_at_both_epochs(trainer, cbs)
    # The statistics of the per_class=4 set came from the validation loop's own passes (EpochCapture; only the
    # activations callback's larger set may need a pass of its own) of the last epoch's drawing, and equal a pass
    # over the final weights.
    assert PER_CLASS * 10 not in passes, f"the per_class={PER_CLASS} set had passes of its own: {passes}"
    assert_fixed_set_statistics_are_float32_numbers_of(trainer, module.net)
