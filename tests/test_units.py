"""The unit browser's data (``callbacks.units``, format ``docs/browser.md``): real fits on real Fashion-MNIST with a
TensorBoardLogger, the folders read back and compared with what the methods compute on the same fixed set."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torchvision
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from callbacks import VISUALIZATIONS
from callbacks.drawing import Drawing
from callbacks.hooks import capture_activations
from callbacks.importance import ImportanceCallback
from callbacks.methods.activations import silent_fraction
from callbacks.methods.changes import profile_change
from callbacks.methods.selectivity import class_means, selectivity_index
from callbacks.methods.top_activations import receptive_field, rf_box, top_activations
from callbacks.scope import Scope
from callbacks.units import FOLDER, UnitsCallback, drawn_epochs, write_epoch
from lit_modules.nets import LeNet5
from tests.conftest import RecordingWriter, scope_over
from tests.test_any_model import HAS_FASHION, Classifier, FashionImages, needs_fashion
from tests.test_any_model import fit as fit_any

N_VAL = 200  # validation images (test_any_model.fit): the fixed set is 12 per class of them at most
CHEAP = {"per_class": 12, "steps": 4}


def fit(root: Path, callbacks: list, epochs: int = 2, net: nn.Module | None = None, rgb: bool = False):
    """``test_any_model.fit``: a plain Trainer and DataLoaders, 64 training and ``N_VAL`` validation images."""
    torch.manual_seed(0)
    module = Classifier(net if net is not None else LeNet5())
    trainer, _ = fit_any(module, rgb, root, epochs, dict(enumerate(callbacks)))
    return trainer, module, FashionImages("t10k", 0, N_VAL, rgb)


def draw(run: Path, units: UnitsCallback, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Path:
    """One drawing (epoch 0) of ``units`` on an eval-mode ``net`` over the fixed set of ``(x, y)``, as the owner draws
    it, without a Trainer; returns the run's ``convscope_units`` folder."""
    units.strict = True
    scope = scope_over(x, y, writer=RecordingWriter())
    scope.techniques = [units]
    units.configure_for(net, tuple(x.shape[1:]))
    scope.draw(units, net, 0, run_dir=str(run))
    return run / FOLDER


def folder(trainer, layer: str, epoch: int) -> Path:
    return Path(trainer.logger.log_dir) / FOLDER / layer / f"epoch_{epoch:04d}"


def read(path: Path) -> tuple[dict, dict, np.ndarray]:
    meta = json.loads((path / "meta.json").read_text())
    stats = json.loads((path / "stats.json").read_text())
    means = np.frombuffer((path / "class_means.f32").read_bytes(), dtype="<f4").reshape(meta["units"], -1)
    return meta, stats, means


def sprite_row(path: Path, kind: str, unit: int, cells: int, cell: int) -> np.ndarray:
    img = np.asarray(Image.open(path / f"{kind}_{unit // 256:03d}.png").convert("RGB"))
    r = unit % 256
    assert img.shape[:2][1] == cells * cell
    return img[r * cell : (r + 1) * cell]


@pytest.fixture(scope="module")
def lenet_fit(tmp_path_factory):
    if not HAS_FASHION:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    units = UnitsCallback(actmax_every=2, **CHEAP)
    importance = ImportanceCallback(per_class=5, every_n_epochs=1)
    trainer, module, val = fit(tmp_path_factory.mktemp("units"), [importance, units])
    return trainer, module, val, units, importance


def test_a_fit_writes_every_default_layer_at_every_epoch(lenet_fit):
    trainer, module, _, units, _ = lenet_fit
    assert units.layer_names == ["relu_1", "relu_2", "relu_3", "relu_4"]  # stage features, hidden fc layers
    root = Path(trainer.logger.log_dir) / FOLDER
    assert sorted(p.name for p in root.iterdir()) == sorted(units.layer_names)
    for layer in units.layer_names:
        assert drawn_epochs(root / layer) == [0, 1]
        assert not [p for p in (root / layer).iterdir() if p.name.startswith(".")]  # no temporary folder left
        meta, stats, means = read(folder(trainer, layer, 1))
        n = dict(module.net.named_modules())  # the layer's unit count: its output's first dimension
        assert meta["format"] == 1 and meta["layer"] == layer and meta["epoch"] == 1
        assert meta["units"] == units.shapes[layer][0] and means.shape == (meta["units"], 10)
        assert meta["kind"] == ("conv" if layer in ("relu_1", "relu_2") else "fc") and layer in n
        assert meta["classes"][0] == "T-shirt/top" and meta["class_index"] == list(range(10))
        assert meta["fixed_set"] == len(units.fixed_idx) > 100 and meta["input_shape"] == [1, 28, 28]
        for key in ("mean", "selectivity", "preferred_class", "dead_fraction", "importance", "change"):
            assert key in stats
        assert len(stats["top"]) == meta["units"] and all(len(t) == 9 for t in stats["top"])
        # actmax every 2 epochs: epoch 1 (and not epoch 0)
        assert meta["actmax"] is not None and meta["actmax_epochs"] == [1]
        assert read(folder(trainer, layer, 0))[0]["actmax"] is None
        assert (folder(trainer, layer, 1) / "actmax_000.png").is_file()
        assert not (folder(trainer, layer, 0) / "actmax_000.png").exists()
    # a first conv layer's filters: relu_1 follows conv_1
    assert read(folder(trainer, "relu_1", 1))[0]["filters"]["cell"] == 5
    assert read(folder(trainer, "relu_2", 1))[0]["filters"] is None
    # nothing in the event file's image cards
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0})
    ea.Reload()
    assert not [t for t in ea.Tags()["images"] if t.startswith("units")]


def test_unit_top_entries_are_the_top_k_of_that_channel(lenet_fit):
    trainer, module, val, units, _ = lenet_fit
    x, y = val.x[units.fixed_idx], torch.tensor(val.targets)[units.fixed_idx]
    for layer in ("relu_2", "relu_4"):
        _, stats, _ = read(folder(trainer, layer, 1))
        n = units.shapes[layer][0]
        top = top_activations(module.net, x, layer, list(range(n)), 9)
        rf = receptive_field(module.net, layer, (1, 28, 28)) if layer == "relu_2" else None
        for u in range(n):
            got = stats["top"][u]
            assert [e["sample"] for e in got] == top.indices[u].tolist(), (layer, u)
            assert [e["label"] for e in got] == y[top.indices[u]].tolist()
            np.testing.assert_allclose([e["value"] for e in got], top.values[u].numpy(), rtol=1e-3, atol=1e-6)
            if rf is None:
                assert all(e["box"] is None for e in got)
            else:  # the field's window clipped to the image: where in the image the patch comes from
                assert [e["box"] for e in got] == [
                    list(rf_box(rf, r, c, (28, 28))) for r, c in top.positions[u].tolist()
                ]


def test_unit_top_sprite_shows_those_images(lenet_fit):
    trainer, _, val, units, _ = lenet_fit
    meta, stats, _ = read(folder(trainer, "relu_4", 1))
    cell, k = meta["top"]["cell"], meta["top"]["k"]
    assert cell == 28  # 84 units x 9 images fit the budget at the data's size
    x = val.x[units.fixed_idx]
    for u in (0, 83):
        row = sprite_row(folder(trainer, "relu_4", 1), "top", u, k, cell)[..., 0]
        for j, e in enumerate(stats["top"][u]):
            want = (x[e["sample"], 0] * 255).round().numpy()
            assert np.abs(row[:, j * cell : (j + 1) * cell].astype(float) - want).max() <= 1


def test_stats_are_the_methods_outputs(lenet_fit):
    trainer, module, val, units, importance = lenet_fit
    x, y = val.x[units.fixed_idx], torch.tensor(val.targets)[units.fixed_idx]
    for layer in units.layer_names:
        meta, stats, means = read(folder(trainer, layer, 1))
        with torch.no_grad():
            a = capture_activations(module.net.eval(), x, [layer])[layer]
        flat = a.flatten(2).mean(2) if a.dim() == 4 else a
        m = class_means(flat, y, 10)
        np.testing.assert_allclose(means, m.T.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(stats["mean"], flat.mean(0).numpy(), rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(stats["selectivity"], selectivity_index(m).numpy(), rtol=1e-3, atol=1e-5)
        assert stats["preferred_class"] == m.argmax(0).tolist()
        np.testing.assert_allclose(stats["dead_fraction"], silent_fraction(a).numpy(), atol=1e-4)
    # importance: where the importance callback ablated (its default layers: relu_3, relu_4), its accuracy drops
    assert importance.layer_names == ["relu_3", "relu_4"]
    assert read(folder(trainer, "relu_2", 1))[1]["importance"] is None
    _, stats, _ = read(folder(trainer, "relu_4", 1))
    imp = stats["importance"]
    assert len(imp) == 84 and all(v is not None for v in imp)
    assert all(-1 <= v <= 1 for v in imp) and any(v != 0 for v in imp)


def test_change_at_epoch_one_is_the_profile_change_of_the_two_epochs_class_means(lenet_fit):
    trainer, _, _, units, _ = lenet_fit
    for layer in units.layer_names:
        _, stats0, then = read(folder(trainer, layer, 0))
        _, stats1, now = read(folder(trainer, layer, 1))
        assert stats0["change"] is None
        want = profile_change(torch.from_numpy(then.T.copy()), torch.from_numpy(now.T.copy())).numpy()
        got = np.array([np.nan if v is None else v for v in stats1["change"]], dtype=float)
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6, equal_nan=True)
        assert np.isfinite(got).any()


@needs_fashion
def test_a_512_unit_resnet18_layer4_fits_the_size_budget(tmp_path):
    """torchvision's ResNet-18 at 32 px colour: layer4 has 512 channels; every file of its epoch folder together
    stays under 2 MB, with actmax of all 512 units drawn."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    units = UnitsCallback(layers=["layer4"], per_class=12, actmax_every=1, actmax_units=512, steps=1)
    trainer, _, _ = fit(tmp_path, [units], epochs=1, net=net, rgb=True)
    path = folder(trainer, "layer4", 0)
    meta, stats, _ = read(path)
    assert meta["units"] == 512 and meta["actmax"]["units"] == 512 and meta["top"]["chunks"] == 2
    size = sum(p.stat().st_size for p in path.iterdir())
    assert size <= 2_000_000, f"{size} bytes"
    top = Image.open(path / "top_001.png")
    assert top.size == (9 * meta["top"]["cell"], 256 * meta["top"]["cell"])


def test_a_writer_killed_mid_write_leaves_only_a_dot_folder(tmp_path):
    layer_dir = tmp_path / FOLDER / "relu_1"
    write_epoch(layer_dir, 0, {"meta.json": b"{}", "stats.json": b"{}"})
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from callbacks.units import write_epoch

        class Killed(dict):
            def items(self):
                yield "meta.json", b"{{}}"
                os.kill(os.getpid(), signal.SIGKILL)  # mid-write: one file written, the rest never
                yield "stats.json", b"{{}}"

        write_epoch(Path({str(layer_dir)!r}), 1, Killed())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[1])
    assert done.returncode == -9
    names = sorted(p.name for p in layer_dir.iterdir())
    assert names[1] == "epoch_0000" and len(names) == 2 and names[0].startswith(".tmp-epoch_0001-")
    assert (layer_dir / names[0] / "meta.json").is_file()  # it was killed after its first file
    assert drawn_epochs(layer_dir) == [0]
    write_epoch(layer_dir, 1, {"meta.json": b"{}", "stats.json": b"{}"})  # the next writer clears it up
    assert sorted(p.name for p in layer_dir.iterdir()) == ["epoch_0000", "epoch_0001"]


@needs_fashion
def test_background_mode_writes_the_same_files_as_inline(tmp_path):
    made = []
    for mode in ("inline", "background"):
        units = UnitsCallback(layers=["relu_2", "relu_3"], actmax_every=2, **CHEAP)
        trainer, _, _ = fit(tmp_path / mode, [units, Drawing(mode)])
        made.append(Path(trainer.logger.log_dir) / FOLDER)
    inline, background = made
    files = sorted(str(p.relative_to(inline)) for p in inline.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(background)) for p in background.rglob("*") if p.is_file())
    assert any(f.endswith("actmax_000.png") for f in files) and any(f.endswith("top_000.png") for f in files)
    for f in files:
        a, b = (inline / f).read_bytes(), (background / f).read_bytes()
        if f.endswith(".png") or f.endswith(".f32"):
            assert a == b, f
        else:
            assert json.loads(a) == json.loads(b), f


def test_bad_settings_are_refused_early():
    with pytest.raises(ValueError, match="actmax_every must be an integer >= 0"):
        UnitsCallback(actmax_every=-1)
    with pytest.raises(ValueError, match="max_units must be an integer >= 1"):
        UnitsCallback(max_units=0)
    cb = UnitsCallback(layers=["conv_9"])
    with pytest.raises(ValueError, match=r"conv_9.*valid: .*relu_1"):
        cb.configure_for(LeNet5(), (1, 28, 28))
    cb = UnitsCallback(layers=["flatten"])
    net = LeNet5()
    if "flatten" in dict(net.named_modules()):
        cb.configure_for(net, (1, 28, 28))  # (U,) of a flat layer is fine
    assert "units" in VISUALIZATIONS and list(VISUALIZATIONS).index("units") == len(VISUALIZATIONS) - 2


def test_the_coordinator_hands_a_measurement_to_the_same_drawing_only():
    hub = Scope(None)
    hub.post("importance", "relu_3", 4, ([0, 2], torch.tensor([0.1, 0.2])))
    assert hub.result("importance", "relu_3", 4)[0] == [0, 2]
    assert hub.result("importance", "relu_3", 5) is None and hub.result("importance", "relu_4", 4) is None


@needs_fashion
def test_a_resumed_fit_goes_on_from_the_folders_on_disk(tmp_path):
    """A fit stopped after epoch 0 and resumed from its checkpoint by a new Trainer and new callbacks: epoch 1's
    change is against epoch 0's class means, read from disk, and its actmax epochs include epoch 0's."""

    def trainer(epochs: int, cb: UnitsCallback) -> pl.Trainer:
        return pl.Trainer(
            max_epochs=epochs,
            limit_train_batches=2,
            accelerator="cpu",
            devices=1,
            logger=TensorBoardLogger(str(tmp_path), name="run", version=0),
            callbacks=[cb],
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )

    train = DataLoader(FashionImages("train", 0, 64, False), batch_size=32)
    val = DataLoader(FashionImages("t10k", 0, N_VAL, False), batch_size=60)
    torch.manual_seed(0)
    first = trainer(1, UnitsCallback(layers=["relu_2"], actmax_every=1, **CHEAP))
    first.fit(Classifier(LeNet5()), train, val)
    ckpt = next(Path(tmp_path, "run", "version_0", "checkpoints").glob("*.ckpt"))
    second = trainer(2, UnitsCallback(layers=["relu_2"], actmax_every=1, **CHEAP))
    second.fit(Classifier(LeNet5()), train, val, ckpt_path=str(ckpt))
    meta0, _, then = read(folder(second, "relu_2", 0))
    meta1, stats1, now = read(folder(second, "relu_2", 1))
    assert meta0["actmax_epochs"] == [0] and meta1["actmax_epochs"] == [0, 1]
    want = profile_change(torch.from_numpy(then.T.copy()), torch.from_numpy(now.T.copy())).numpy()
    got = np.array([np.nan if v is None else v for v in stats1["change"]], dtype=float)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6, equal_nan=True)
    assert (got > 0).any()


def test_a_wide_layer_is_drawn_in_chunks_with_the_same_top_sprites(tmp_path, monkeypatch):
    """A 2,048-unit layer of whole 224 px images was 11 GB of tiles at once (the process was killed on a ResNet-50);
    gathered ``TILE_BYTES`` at a time, and actmax ``capture_bytes`` at a time, the top sprites are the same bytes
    and every unit still gets its actmax image."""
    from callbacks import units as units_module

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x, y = torch.rand(40, 3, 32, 32), torch.arange(40) % 10

    def drawn(run: Path, tile_bytes: int, capture_bytes: int) -> Path:
        monkeypatch.setattr(units_module, "TILE_BYTES", tile_bytes)
        technique = UnitsCallback(layers=["layer4"], per_class=4, actmax_units=12, steps=2)
        technique.capture_bytes = capture_bytes
        return draw(run, technique, net, x, y) / "layer4" / "epoch_0000"

    whole = drawn(tmp_path / "whole", 2**30, 2**30)
    per_unit = 9 * 3 * 32 * 32 * 4
    chunked = drawn(tmp_path / "chunked", 100 * per_unit, 1)  # 100 units' tiles at a time; actmax one unit at a time
    tops = sorted(p.name for p in whole.glob("top_*.png"))
    assert tops == ["top_000.png", "top_001.png"]
    for name in tops:
        assert (whole / name).read_bytes() == (chunked / name).read_bytes(), name
    meta = json.loads((chunked / "meta.json").read_text())
    assert meta["actmax"]["units"] == 12
    sprite = np.asarray(Image.open(chunked / "actmax_000.png"))
    assert sprite.shape[0] == 12 * meta["actmax"]["cell"]


@needs_fashion
def test_a_field_covering_the_image_has_no_box_and_a_smaller_one_a_box_inside_the_image(tmp_path):
    """ResNet-18 at 32 px: layer1's and layer4's receptive fields are larger than the image, so their top patches are
    whole images and have no box (it was ``[-217, -217, 218, 218]`` on layer4, printed as such under the patch); the
    stem's ReLU sees 7 px windows (padding 3), whose boxes are the windows clipped to the image."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    val = FashionImages("t10k", 0, 60, rgb=True)
    x, y = val.x, torch.tensor(val.targets)
    units = UnitsCallback(layers=["relu", "layer1", "layer4"], per_class=6, actmax_every=0)
    root = draw(tmp_path, units, net, x, y)
    fields = {layer: receptive_field(net, layer, (3, 32, 32)) for layer in units.layer_names}
    assert fields["relu"].size == 7 and fields["layer1"].size > 32 and fields["layer4"].size > 32
    for layer in ("layer1", "layer4"):
        meta, stats, _ = read(root / layer / "epoch_0000")
        assert meta["top"]["patch"].startswith("whole image")
        assert all(e["box"] is None for row in stats["top"] for e in row), layer
    meta, stats, _ = read(root / "relu" / "epoch_0000")
    assert meta["top"]["patch"] == "receptive field 7 px"
    fixed = x[units.fixed_idx]
    top = top_activations(net, fixed, "relu", list(range(64)), 9)
    boxes = [e["box"] for row in stats["top"] for e in row]
    want = [list(rf_box(fields["relu"], r, c, (32, 32))) for row in top.positions.tolist() for r, c in row]
    assert boxes == want
    assert all(0 <= y0 < y1 <= 32 and 0 <= x0 < x1 <= 32 for y0, x0, y1, x1 in boxes)
    assert any(y1 - y0 < 7 or x1 - x0 < 7 for y0, x0, y1, x1 in boxes)  # some windows reach past an edge: clipped
