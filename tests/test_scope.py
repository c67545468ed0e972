"""The one owner (``callbacks.scope.Convscope``) and what its techniques share (``Scope``).

What breaks if the design does: one fixed-set pass per epoch serves every technique; a technique turned off after
setup drops out of it; the user's module gets no attribute; the 0.1.0 callbacks still work, through one owner, with
a warning that names the new form. Small real fits of class bars (``tests/test_modern.py``'s small RGB CNN).
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from callbacks import (
    ActMax,
    ActMaxCallback,
    Convscope,
    FCActivations,
    FeatureMaps,
    Filters,
    FiltersCallback,
    LayerResponses,
    Selectivity,
    Units,
)
from callbacks.methods.top_activations import top_activations
from tests.conftest import owner_of
from tests.test_any_model import Classifier, read_events
from tests.test_modern import Bars, small_cnn

PER_CLASS = 4
FIXED_SET = 10 * PER_CLASS  # images of the fixed set of PER_CLASS (10 classes)


def sharing_callbacks() -> list[pl.Callback]:
    """One owner of five techniques that read the same fixed set: unit activations (four), class-mean maps and each
    unit's top samples (the unit browser's)."""
    return [
        Convscope(
            [
                Selectivity(layers=["relu_2"], per_class=PER_CLASS, strict=True),
                FCActivations(per_class=PER_CLASS, strict=True),
                LayerResponses(layers=["relu_1", "relu_3"], per_class=PER_CLASS, strict=True),
                FeatureMaps(layers=["conv_2"], per_class=PER_CLASS, max_channels=4, strict=True),
                Units(layers=["relu_1", "fc_1"], per_class=PER_CLASS, k=3, actmax_every=0, strict=True),
            ],
            drawing="inline",
        )
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
    Shuffled: one pass per drawn epoch, for all five callbacks together, holding every layer they registered. Each
    unit's top samples from it are those of a search of its own over the fixed set."""
    module = Classifier(small_cnn())
    passes = count_fixed_set_passes(module.net)
    cbs = sharing_callbacks()
    trainer = trainer_of(tmp_path, cbs)
    fit(trainer, module, shuffled_val)
    assert len(passes) == (2 if shuffled_val else 0)
    scope = owner_of(trainer).scope
    shared = scope.passes[PER_CLASS]
    assert shared.step == 1  # the last epoch's
    assert {"relu_2", "relu_1", "relu_3", "fc_1", "fc_2"} <= set(shared.acts) and set(shared.maps) == {"conv_2"}
    assert set(shared.tops) == {"relu_1", "fc_1"} and shared.top_k == 3
    x, _ = scope.fixed(owner_of(trainer).techniques[-1], "set", PER_CLASS)
    for layer in ("relu_1", "fc_1"):
        own = top_activations(module.net, x, layer, list(range(len(shared.tops[layer].indices))), 3)
        assert torch.equal(shared.tops[layer].indices, own.indices), layer
        torch.testing.assert_close(shared.tops[layer].values, own.values)
        assert (shared.tops[layer].positions is None) == (layer == "fc_1")
        if layer == "relu_1":
            assert torch.equal(shared.tops[layer].positions, own.positions)
    ea = read_events(trainer)
    for tag in ("selectivity", "fc_activations/fc_1", "layer_responses", "feature_maps/conv_2/class_mean"):
        assert [e.step for e in ea.Images(tag)] == [0, 1], tag


def test_a_callback_turned_off_after_setup_is_not_in_the_shared_pass(tmp_path):
    cbs = sharing_callbacks()
    selectivity = cbs[0].techniques[0]

    class TurnOff(pl.Callback):
        def on_fit_start(self, trainer, pl_module):  # after every callback's setup
            selectivity.enabled = False

    trainer = trainer_of(tmp_path, [*cbs, TurnOff()], max_epochs=1)
    fit(trainer, Classifier(small_cnn()))
    scope = owner_of(trainer).scope
    shared = scope.passes[PER_CLASS]
    assert "relu_2" not in shared.acts and {"relu_1", "fc_1"} <= set(shared.acts)
    assert set(scope.shared_layers(PER_CLASS)[0]) == {"fc_1", "fc_2", "relu_3", "relu_1"}
    assert "selectivity" not in read_events(trainer).Tags()["images"]


def test_the_owner_adds_no_attribute_to_the_users_module(tmp_path):
    watched, plain = Classifier(small_cnn()), Classifier(small_cnn())
    fit(trainer_of(tmp_path, sharing_callbacks(), max_epochs=1), watched)
    fit(trainer_of(tmp_path / "plain", [], max_epochs=1), plain)
    assert set(vars(watched)) == set(vars(plain)) and set(vars(watched.net)) == set(vars(plain.net))


def test_the_0_1_0_callbacks_draw_through_one_owner_with_a_warning_naming_the_new_form(tmp_path):
    with pytest.warns(DeprecationWarning, match=r"Convscope\(\[ActMax\(\.\.\.\)"):
        actmax = ActMaxCallback(layers={"conv_1": [0, 1]}, steps=4, strict=True)
    filters = FiltersCallback(strict=True)
    assert isinstance(actmax, ActMax) and isinstance(actmax, pl.Callback)  # the technique and a callback
    trainer = trainer_of(tmp_path, [filters, actmax], max_epochs=1)
    fit(trainer, Classifier(small_cnn()))
    owners = [cb for cb in trainer.callbacks if isinstance(cb, Convscope)]
    assert len(owners) == 1 and owners[0].techniques == [filters, actmax]
    tags = set(read_events(trainer).Tags()["images"])
    assert {"filters/conv_1", "actmax/conv_1"} <= tags
    with pytest.raises(ValueError, match=r"pass the technique to it instead, Convscope\(\[\.\.\., Filters\(\)\]\)"):
        trainer_of(tmp_path, [Convscope([Filters()]), FiltersCallback()]).fit(
            Classifier(small_cnn()), DataLoader(Bars(64, 0), batch_size=32), DataLoader(Bars(200, 1), batch_size=100)
        )
