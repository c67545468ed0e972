"""The coordinator (``callbacks.coordinator``): one per Trainer owns what the callbacks share.

What breaks if the design does: callbacks register at setup (again at each setup, nothing when disabled) instead
of being scanned; one fixed-set pass per epoch serves every callback; a callback turned off after setup drops out of
it; two Trainers over the same callbacks keep apart; the evolution callback gets its snapshots as a listener only.
Small real fits of conftest's class bars (``tests/test_modern.py``'s small RGB CNN).
"""

from __future__ import annotations

import gc
import weakref

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from callbacks import (
    EvolutionCallback,
    FCActivationsCallback,
    FeatureMapsCallback,
    FiltersCallback,
    LayerResponsesCallback,
    SelectivityCallback,
)
from callbacks.coordinator import Source, coordinator_of
from tests.conftest import FakeDataModule, FakeTrainer
from tests.test_any_model import Classifier, read_events
from tests.test_modern import Bars, bars, small_cnn

PER_CLASS = 4
FIXED_SET = 10 * PER_CLASS  # images of the fixed set of PER_CLASS (10 classes)


def sharing_callbacks() -> list[pl.Callback]:
    """Four callbacks that read the same fixed set: unit activations (three) and class-mean maps (one)."""
    return [
        SelectivityCallback(layers=["relu_2"], per_class=PER_CLASS, strict=True),
        FCActivationsCallback(per_class=PER_CLASS, strict=True),
        LayerResponsesCallback(layers=["relu_1", "relu_3"], per_class=PER_CLASS, strict=True),
        FeatureMapsCallback(layers=["conv_2"], per_class=PER_CLASS, max_channels=4, strict=True),
    ]


def trainer_of(root, callbacks: list[pl.Callback], max_epochs: int = 2) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=max_epochs,
        limit_train_batches=2,
        accelerator="cpu",
        devices=1,
        num_sanity_val_steps=1,
        logger=TensorBoardLogger(str(root), name="run"),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )


def fit(trainer: pl.Trainer, module: pl.LightningModule, shuffled_val: bool = False) -> None:
    torch.manual_seed(0)
    trainer.fit(
        module,
        DataLoader(Bars(64, 0), batch_size=32, shuffle=True),
        DataLoader(Bars(200, 1), batch_size=100, shuffle=shuffled_val),
    )


def count_fixed_set_passes(net: torch.nn.Module) -> list[int]:
    """A list that grows by one each time a forward pass over the whole fixed set starts (a pre-hook on the first
    layer: a pass may stop after the last layer it needs)."""
    passes: list[int] = []
    net.conv_1.register_forward_pre_hook(lambda m, args: passes.append(1) if len(args[0]) == FIXED_SET else None)
    return passes


@pytest.mark.parametrize("shuffled_val", [False, True])
def test_one_fixed_set_pass_per_epoch_serves_every_callback(tmp_path, shuffled_val):
    """Validation in order: the validation loop's own passes serve every callback (no pass of their own).
    Shuffled: one pass per drawn epoch, for all four callbacks together, holding every layer they registered."""
    module = Classifier(small_cnn())
    passes = count_fixed_set_passes(module.net)
    cbs = sharing_callbacks()
    trainer = trainer_of(tmp_path, cbs)
    fit(trainer, module, shuffled_val)
    assert len(passes) == (2 if shuffled_val else 0)
    shared = coordinator_of(trainer).passes[PER_CLASS]
    assert shared.key[0] == 1  # the last epoch's
    assert {"relu_2", "relu_1", "relu_3", "fc_1", "fc_2"} <= set(shared.acts) and set(shared.maps) == {"conv_2"}
    ea = read_events(trainer)
    for tag in ("selectivity", "fc_activations/fc_1", "layer_responses", "feature_maps/conv_2/class_mean"):
        assert [e.step for e in ea.Images(tag)] == [0, 1], tag


def test_a_callback_turned_off_after_setup_is_not_in_the_shared_pass(tmp_path):
    cbs = sharing_callbacks()
    selectivity = cbs[0]

    class TurnOff(pl.Callback):
        def on_fit_start(self, trainer, pl_module):  # after every callback's setup
            selectivity.enabled = False

    trainer = trainer_of(tmp_path, [*cbs, TurnOff()], max_epochs=1)
    fit(trainer, Classifier(small_cnn()))
    shared = coordinator_of(trainer).passes[PER_CLASS]
    assert "relu_2" not in shared.acts and {"relu_1", "fc_1"} <= set(shared.acts)
    assert set(coordinator_of(trainer).shared_layers(PER_CLASS)[0]) == {"fc_1", "fc_2", "relu_3", "relu_1"}
    assert "selectivity" not in read_events(trainer).Tags()["images"]


def test_registration_is_per_setup_and_per_trainer():
    """A setup registers the callback's technique and layers (the evolution callback: its listener); another setup
    replaces them (not added twice), a disabled callback has none; another Trainer's coordinator has its own."""
    module = Classifier(small_cnn())
    x, y = bars(200, 1)
    trainer, other = (FakeTrainer(FakeDataModule(x, y, tuple("0123456789")), []) for _ in range(2))
    hub = coordinator_of(trainer)
    assert coordinator_of(trainer) is hub and coordinator_of(other) is not hub
    sel = SelectivityCallback(layers=["relu_3"], per_class=PER_CLASS)
    fm = FeatureMapsCallback(layers=["conv_1"], per_class=PER_CLASS)
    evolution = EvolutionCallback(techniques=["selectivity"])
    for stage in ("fit", "validate"):
        for cb in (sel, fm, evolution):
            cb.setup(trainer, module, stage)
    assert hub.techniques() == ["selectivity", "feature_maps", "evolution"]
    assert hub.shared_layers(PER_CLASS) == (["relu_3"], ["conv_1"]) and hub.shared_layers(500) == ([], [])
    sel.layers = ["relu_2"]
    sel.setup(trainer, module, "fit")
    assert hub.shared_layers(PER_CLASS) == (["relu_2"], ["conv_1"])
    fm.enabled = False  # after setup: out of the shared pass
    assert hub.shared_layers(PER_CLASS) == (["relu_2"], [])
    fm.setup(trainer, module, "fit")  # disabled at setup: nothing registered
    assert sorted(hub.techniques()) == ["evolution", "selectivity"]
    assert coordinator_of(other).techniques() == []
    evolution._fit_last = 3  # as during a fit (``on_fit_start``): snapshots are kept
    hub.publish("selectivity", 0, b"first", Source("selectivity"))  # once, though set up twice
    coordinator_of(other).publish("selectivity", 1, b"other", Source("selectivity"))  # not its Trainer
    assert evolution.snapshots == {"selectivity": {1: b"first"}}
    evolution.enabled = False
    evolution.setup(trainer, module, "fit")
    evolution.enabled = True
    hub.publish("selectivity", 3, b"last", Source("selectivity"))  # no longer listening
    assert evolution.snapshots == {"selectivity": {1: b"first"}}


def test_two_trainers_over_the_same_callbacks_do_not_share(tmp_path):
    """As ``train.py validate`` and a ``Drawer`` do: the same callbacks in a second Trainer register with its own
    coordinator; its pass and its pictures stay its own."""
    module = Classifier(small_cnn())
    cbs = sharing_callbacks()
    first = trainer_of(tmp_path / "a", cbs, max_epochs=1)
    fit(first, module)
    seen_first: list[str] = []
    coordinator_of(first).add_listener(lambda tag, step, png, source: seen_first.append(tag))
    kept = coordinator_of(first).passes[PER_CLASS]
    second = trainer_of(tmp_path / "b", cbs)
    seen_second: list[str] = []
    coordinator_of(second).add_listener(lambda tag, step, png, source: seen_second.append(tag))
    second.validate(module, DataLoader(Bars(200, 1), batch_size=100), verbose=False)
    assert coordinator_of(second) is not coordinator_of(first)
    assert coordinator_of(second).techniques() == coordinator_of(first).techniques()
    assert coordinator_of(second).passes[PER_CLASS] is not kept and coordinator_of(first).passes[PER_CLASS] is kept
    assert seen_first == [] and "selectivity" in seen_second


def test_the_evolution_callback_gets_its_snapshots_as_a_listener_only(tmp_path):
    """The evolution callback, first in the list, checks its techniques at fit start against those registered and
    receives the pictures through the coordinator; a callback that merely has ``record_snapshot`` gets nothing."""

    class Decoy(pl.Callback):
        def __init__(self) -> None:
            self.calls = 0

        def record_snapshot(self, tag: str, step: int, png: bytes, source) -> None:
            self.calls += 1

    decoy = Decoy()
    evolution = EvolutionCallback(techniques=["filters"], save_png=False, strict=True)
    trainer = trainer_of(tmp_path, [evolution, FiltersCallback(layer="conv_1", strict=True), decoy])
    fit(trainer, Classifier(small_cnn()))
    assert set(evolution.snapshots) == {"filters/conv_1"} and set(evolution.snapshots["filters/conv_1"]) == {1, 2}
    assert decoy.calls == 0
    assert "evolution/filters/conv_1" in read_events(trainer).Tags()["images"]
    coordinator_of(trainer).publish("filters/conv_1", 5, b"png", Source("filters"))  # after fit: not kept
    assert set(evolution.snapshots["filters/conv_1"]) == {1, 2}
    with pytest.raises(ValueError, match=r"unknown or empty techniques \['actmax'\]; valid .*: filters, all"):
        trainer_of(tmp_path, [EvolutionCallback(techniques=["actmax"]), FiltersCallback(layer="conv_1")]).fit(
            Classifier(small_cnn()), DataLoader(Bars(64, 0), batch_size=32), DataLoader(Bars(200, 1), batch_size=100)
        )


def test_a_finished_trainer_and_its_coordinator_are_freed(tmp_path):
    """The coordinator holds its callbacks and listeners weakly: Lightning binds the module's ``log`` to every
    callback, so holding them strongly would keep the Trainer, its key, alive for good."""

    def run() -> tuple[weakref.ref, weakref.ref]:
        trainer = trainer_of(tmp_path, [*sharing_callbacks(), EvolutionCallback(save_png=False)], max_epochs=1)
        fit(trainer, Classifier(small_cnn()))
        return weakref.ref(trainer), weakref.ref(coordinator_of(trainer))

    trainer, hub = run()
    gc.collect()
    assert trainer() is None and hub() is None
