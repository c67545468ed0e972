"""The slider tells the truth: a net whose weights do not change between epochs gets the same picture from every
visualization at every epoch (a real 3-epoch fit of LeNet-5 with learning rate 0, every callback drawing at every
epoch, read back from the TensorBoard event file); and the converse, weights that moved give changed pictures."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks import VISUALIZATIONS
from tests.conftest import _fit, _images, changed_box, only_epoch_label_differs

EPOCHS = 3
# Callbacks whose pictures are not a per-epoch drawing of the net, with what is checked instead (or why nothing).
NOT_PER_EPOCH = {
    "samples": "draws the training samples once per fit, before training: nothing to compare",
    "evolution": "draws once, at fit end, from the pictures the others logged (checked here themselves)",
    "embedding": "writes projector files, not images: test_embedding_files_are_byte_identical",
    "activations": "logs histograms and scalars, not images: test_histograms_and_scalars_are_identical",
    "changes": "compares each epoch with the previous one and names both: test_changes_reports_no_change",
    "units": "writes the unit browser's files, not images: test_unit_browser_files_are_the_same_at_every_epoch",
}


@pytest.fixture(scope="module")
def frozen_run(idx_dir, tmp_path_factory):
    """A fit whose optimizer has learning rate 0 (Adam then adds exactly 0 to every weight; LeNet-5 has no
    BatchNorm statistics), every callback drawing at every epoch."""
    root = tmp_path_factory.mktemp("frozen")
    every = [a for key in VISUALIZATIONS if key != "evolution" for a in (f"--{key}.every_n_epochs", "1")]
    cli = _fit(
        idx_dir,
        root,
        extra=[
            *every,
            "--model.optimizer.init_args.lr",
            "0",
            "--trainer.max_epochs",
            str(EPOCHS),
            "--trainer.limit_train_batches",
            "2",
        ],
    )
    run = root / "lightning_logs" / "version_0"
    ea = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0, "histograms": 0})
    ea.Reload()
    return cli, ea, run


def _tags(ea, technique: str) -> list[str]:
    return [t for t in ea.Tags()["images"] if t == technique or t.startswith(technique + "/")]


@pytest.mark.parametrize("key", [k for k in VISUALIZATIONS if k not in NOT_PER_EPOCH])
def test_every_picture_is_the_same_at_every_epoch(frozen_run, key):
    _, ea, _ = frozen_run
    technique = VISUALIZATIONS[key].technique
    tags = _tags(ea, technique)
    assert tags, f"{key}: no picture logged"
    for tag in tags:
        imgs = _images(ea, tag)
        assert sorted(imgs) == list(range(EPOCHS)), tag
        for step in range(1, EPOCHS):
            assert only_epoch_label_differs(imgs[step - 1], imgs[step]), (
                f"{tag}: epochs {step - 1} and {step} differ at {changed_box(imgs[step - 1], imgs[step])}"
            )


def test_the_weights_really_were_frozen(frozen_run):
    cli, ea, _ = frozen_run
    assert cli.trainer.global_step == 2 * EPOCHS  # the optimizer stepped ...
    for tag in [t for t in ea.Tags()["scalars"] if t.endswith("/weight_change")]:
        assert [e.value for e in ea.Scalars(tag)] == [0.0] * (EPOCHS - 1), tag  # ... and moved nothing


def test_changes_reports_no_change(frozen_run):
    """``changes`` draws what changed since the previous drawn epoch, naming it: its right invariant is that
    nothing changed (its picture names the two epochs in several places, so it differs by more than one digit)."""
    _, ea, _ = frozen_run
    layers = {t.split("/")[1] for t in _tags(ea, "changes")}
    assert layers
    for layer in layers:
        values = {
            k: [e.value for e in ea.Scalars(f"changes/{layer}/{k}")]
            for k in ("weight_change", "profile_change", "dead_units", "preferred_class_switches")
        }
        assert values["weight_change"] == [0.0] * (EPOCHS - 1)
        assert values["preferred_class_switches"] == [0.0] * (EPOCHS - 1)
        assert max(values["profile_change"]) < 1e-9  # 1 - correlation of identical class means: rounding only
        assert len(set(values["dead_units"])) == 1


def test_unit_browser_files_are_the_same_at_every_epoch(frozen_run):
    """The unit browser's data of a frozen net: the same sprites and class means at every epoch, the same statistics,
    and no change since the previous drawing (0, or null for a flat profile)."""
    _, _, run = frozen_run
    layers = sorted((run / "convscope_units").iterdir())
    assert [p.name for p in layers] == ["relu_1", "relu_2", "relu_3", "relu_4"]
    for layer in layers:
        folders = [layer / f"epoch_{e:04d}" for e in range(EPOCHS)]
        for name in ("top_000.png", "class_means.f32"):
            assert len({(f / name).read_bytes() for f in folders}) == 1, (layer.name, name)
        stats = [json.loads((f / "stats.json").read_text()) for f in folders]
        assert stats[0]["change"] is None
        for s in stats[1:]:
            assert all(v in (0, None) for v in s["change"]) and any(v == 0 for v in s["change"]), layer.name
            assert {**s, "change": None} == stats[0], layer.name


def test_embedding_files_are_byte_identical(frozen_run):
    _, _, run = frozen_run
    folders = sorted(run.glob("0000*/embedding*"))
    assert [f.parent.name for f in folders] == [f"{s:05d}" for s in range(EPOCHS)]
    for name in ("tensors.tsv", "metadata.tsv", "sprite.png"):
        first = (folders[0] / name).read_bytes()
        assert all((f / name).read_bytes() == first for f in folders[1:]), name


def test_histograms_and_scalars_are_identical(frozen_run):
    """Every histogram (``activations``) and every scalar but the training-time ones is the same at every epoch."""
    _, ea, _ = frozen_run
    histograms = ea.Tags()["histograms"]
    assert any(t.startswith("activations/") for t in histograms)
    for tag in histograms:
        values = [e.histogram_value for e in ea.Histograms(tag)]
        assert len(values) == EPOCHS and all(v == values[0] for v in values[1:]), tag
    for tag in ea.Tags()["scalars"]:
        if tag.startswith(("activations/", "sparsity/", "selectivity/", "val/", "importance/", "actmax/")):
            values = [e.value for e in ea.Scalars(tag)]
            assert len(values) == EPOCHS and len(set(values)) == 1, (tag, values)


def test_changed_weights_give_changed_pictures(idx_dir, tmp_path):
    """The converse: weights that moved (Adam at lr 0.05, 4 steps an epoch) change more than the epoch number of
    actmax (every drawing from the same noise, so the change is the weights'), filters, feature maps and deconv.
    (At the shared run's lr 1e-3 the filters move by less than the palette's tolerance.)"""
    keep = {"filters", "feature_maps", "actmax", "deconv"}
    off = [a for key in VISUALIZATIONS if key not in keep for a in (f"--{key}.enabled", "false")]
    _fit(idx_dir, tmp_path, extra=[*off, "--model.optimizer.init_args.lr", "0.05"])
    ea = EventAccumulator(str(tmp_path / "lightning_logs" / "version_0"), size_guidance={"images": 0})
    ea.Reload()
    # (not every tag: at this rate a ReLU layer may die, and a dead layer's maps stay zero at both epochs)
    tags = {
        "actmax/conv_1",
        "actmax/conv_2",
        "actmax/fc_3",
        "filters/conv_1",
        "deconv",
        "feature_maps/conv_1",
        "feature_maps/conv_1/class_mean",
    }
    for tag in sorted(tags):
        imgs = _images(ea, tag)
        assert sorted(imgs) == [0, 1], tag
        assert not only_epoch_label_differs(imgs[0], imgs[1]), f"{tag} did not change with the weights"
