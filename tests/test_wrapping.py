"""Any model as people write it: the default layers of a net are the same wherever it sits.

The property: for each zoo net (torchvision ResNet-18, VGG-11-BN, MobileNetV2, EfficientNet-B0; timm ResNet-18,
ConvNeXt-atto, EfficientNet-B0) and each way people hold one in a LightningModule (``self.model``, two wrappers
deep, ``self.backbone`` plus ``self.head``, ``nn.Sequential(body, Flatten, Linear)``), the layer roles and every
callback's default layers equal the bare net's, with the wrapper's prefix and nothing else. Then one real fit per
pattern, every callback strict, the pictures read back; the line each callback prints about its choice; and a net
on which a technique finds no layer: one warning, the fit goes on (and a strict callback stops it).
"""

from __future__ import annotations

import inspect
import logging

import lightning.pytorch as pl
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from callbacks import VISUALIZATIONS, GradCAMCallback, TopActivationsCallback
from callbacks.hooks import LayerError, layer_shapes
from callbacks.layers import layer_roles
from callbacks.technique import once_called_shapes
from tests.test_any_model import CHEAP, assert_every_callback_drew_at_both_epochs, fit, needs_fashion

SHAPE = (3, 32, 32)

ZOO = {
    "tv_resnet18": lambda: torchvision.models.resnet18(weights=None, num_classes=10),
    "tv_vgg11_bn": lambda: torchvision.models.vgg11_bn(weights=None, num_classes=10),
    "tv_mobilenet_v2": lambda: torchvision.models.mobilenet_v2(weights=None, num_classes=10),
    "tv_efficientnet_b0": lambda: torchvision.models.efficientnet_b0(weights=None, num_classes=10),
    "timm_resnet18": lambda: timm.create_model("resnet18", pretrained=False, num_classes=10),
    "timm_convnext_atto": lambda: timm.create_model("convnext_atto", pretrained=False, num_classes=10),
    "timm_efficientnet_b0": lambda: timm.create_model("efficientnet_b0", pretrained=False, num_classes=10),
}


def make(name: str) -> nn.Module:
    torch.manual_seed(0)
    return ZOO[name]().eval()


def headless(net: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """``(backbone, head)``: the net with its last ``nn.Linear`` replaced by ``nn.Identity`` (as people cut off a
    classifier), and a new head of the same width."""
    name, last = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)][-1]
    parent, _, attr = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, attr, nn.Identity())
    return net, nn.Linear(last.in_features, last.out_features)


class Held(nn.Module):
    """``self.model = net``, as in most LightningModules."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.model = net

    def forward(self, x):
        return self.model(x)


class BackboneHead(nn.Module):
    """``self.backbone`` (the classifier cut off) plus ``self.head``."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x):
        return self.head(torch.flatten(self.backbone(x), 1))


def wrapped(pattern: str, name: str) -> tuple[nn.Module, str]:
    """``(the net held the way ``pattern`` says, the prefix its layer names gain)``."""
    if pattern == "self.model":
        return Held(make(name)), "model."
    if pattern == "two wrappers":
        return Held(Held(make(name))), "model.model."
    if pattern == "backbone+head":
        return BackboneHead(*headless(make(name))), "backbone."
    if pattern == "sequential":
        backbone, head = headless(make(name))
        return nn.Sequential(backbone, nn.Flatten(), head), "0."
    raise ValueError(pattern)


PATTERNS = ["self.model", "two wrappers", "backbone+head", "sequential"]
HEAD_CUT = {"backbone+head", "sequential"}  # the classifier is a new module: the logits' name is not prefixed


def chosen(net: nn.Module) -> dict[str, list[str]]:
    """Every callback's default layers on ``net``, as configured at a fit's setup (``["<off>"]``: none suits it);
    the callbacks that name no layer (occlusion, samples, ...) are left out."""
    shapes = once_called_shapes(net, SHAPE)
    out = {}
    for key, cls in VISUALIZATIONS.items():
        if cls.layer_args:
            cb = cls()
            cb.configure_for(net, SHAPE, shapes)
            out[key] = cb.drawn_layers() if cb.off_reason is None else ["<off>"]
    return out


@pytest.fixture(scope="module")
def bare() -> dict[str, tuple]:
    """Per zoo net: its roles, and every callback's default layers, bare."""
    out = {}
    for name in ZOO:
        net = make(name)
        out[name] = (layer_roles(net, layer_shapes(net, SHAPE)), chosen(net))
    return out


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("name", list(ZOO))
def test_wrapping_does_not_change_the_default_layers(bare, name, pattern):
    roles0, chosen0 = bare[name]
    net, prefix = wrapped(pattern, name)
    roles = layer_roles(net, layer_shapes(net, SHAPE))
    p = lambda names: [prefix + n for n in names]  # noqa: E731
    assert roles0.stages and roles0.features, f"{name}: the bare net has stages"
    assert roles.stages == p(roles0.stages)
    assert roles.features == p(roles0.features)
    assert roles.convs == p(roles0.convs)
    assert roles.hidden == p(roles0.hidden)
    if pattern not in HEAD_CUT:
        assert roles.logits == prefix + roles0.logits
    for key, layers in chosen(net).items():
        expected = p(chosen0[key]) if chosen0[key] != ["<off>"] else ["<off>"]
        if pattern in HEAD_CUT:  # the classifier was cut off and is a new module: compare the rest
            logits = prefix + roles0.logits
            expected = [n for n in expected if not (n == logits or logits.startswith(n + "."))]
            layers = [n for n in layers if n.startswith(prefix) or n == "<off>"]
        assert layers == expected, (key, layers, expected)


def test_the_bare_nets_defaults_are_their_stages(bare):
    """What is compared above is worth comparing: every callback found layers on every zoo net, except the
    deconvnet on nets whose nonlinearities it has no rule for (GELU, SiLU, Hardswish, LayerNorm)."""
    relu_only = {"tv_resnet18", "tv_vgg11_bn", "timm_resnet18"}
    for name, (roles, chosen0) in bare.items():
        off = sorted(k for k, v in chosen0.items() if v in (["<off>"], []))
        assert off == ([] if name in relu_only else ["deconv"]), f"{name}: no default layer for {off}"
        assert len(roles.features) >= 4, (name, roles.features)


def test_timm_feature_info_is_found_on_the_timm_model_wherever_it_sits():
    net, prefix = wrapped("backbone+head", "timm_resnet18")
    roles = layer_roles(net, layer_shapes(net, SHAPE))
    info = [prefix + d["module"] for d in net.backbone.feature_info]
    assert roles.stages == info  # act1 (the stem's activation) is a timm stage, which the generic rule would not pick


# ------------------------------------------------------------------------------------------------ real fits
class Model(pl.LightningModule):
    """A LightningModule as users write one: the net held as ``self.model``, ``self.backbone`` + ``self.head``, or
    one ``nn.Sequential``."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        if pattern == "self.model":
            self.model = timm.create_model("resnet18", pretrained=False, num_classes=10)
        elif pattern == "backbone+head":
            self.backbone = torchvision.models.resnet18(weights=None, num_classes=10)
            self.backbone.fc = nn.Identity()
            self.head = nn.Linear(512, 10)
        else:
            body = torchvision.models.resnet18(weights=None, num_classes=10)
            body.fc = nn.Identity()
            self.model = nn.Sequential(body, nn.Linear(512, 10))
        self.pattern = pattern

    def forward(self, x):
        if self.pattern == "backbone+head":
            return self.head(self.backbone(x))
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.02, momentum=0.9)


def strict_cheap_callbacks() -> dict:
    made = {}
    for key, cls in VISUALIZATIONS.items():
        params = inspect.signature(cls.__init__).parameters
        made[key] = cls(strict=True, every_n_epochs=1, **{k: v for k, v in CHEAP.items() if k in params})
    return made


@needs_fashion
@pytest.mark.parametrize("pattern", ["self.model", "backbone+head", "sequential"])
def test_a_real_fit_of_each_pattern_draws_every_picture(tmp_path, pattern, caplog):
    module = Model(pattern)
    cbs = strict_cheap_callbacks()
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
        trainer, cbs = fit(module, rgb=True, root=tmp_path, callbacks=cbs)
    ea = assert_every_callback_drew_at_both_epochs(trainer, cbs)
    prefix = {"self.model": "model.", "backbone+head": "backbone.", "sequential": "model.0."}[pattern]
    stage = "layer4.1.act2" if pattern == "self.model" else "layer4"
    assert f"gradcam/{prefix}{stage}" in ea.Tags()["images"], sorted(ea.Tags()["images"])
    # Each callback that chose layers said which, in one line at fit start.
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("convscope: ")]
    for key, cb in cbs.items():
        layers = cb.drawn_layers()
        if layers:
            line = f"convscope: {key} draws {', '.join(layers)} (chosen by default; name others with --{key}."
            assert sum(m.startswith(line) for m in said) == 1, (key, said)


# ------------------------------------------------------------------------------------- where the search gives up
class Flat(pl.LightningModule):
    """A net with no spatial layer, held as ``self.model``: Grad-CAM has nothing to look at."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.02)


def test_no_usable_layer_turns_the_technique_off_with_one_warning_naming_what_was_seen():
    cb = GradCAMCallback()
    net = Flat().model
    with pytest.warns(UserWarning) as record:
        cb.configure_for(net, SHAPE)
        cb.configure_for(net, SHAPE)  # set up again (a second fit): no second warning
    messages = [str(w.message) for w in record if "GradCAMCallback" in str(w.message)]
    assert len(messages) == 1, messages
    assert "is off for this net" in messages[0] and "no conv stage" in messages[0]
    assert "hidden fully-connected layers 2" in messages[0]  # what the search saw
    assert cb.off_reason is not None and cb.enabled  # off for this net, its configuration unchanged


@needs_fashion
def test_a_fit_goes_on_when_a_technique_finds_no_layer(tmp_path):
    cbs = {"gradcam": GradCAMCallback(every_n_epochs=1), "selectivity": VISUALIZATIONS["selectivity"](per_class=4)}
    with pytest.warns(UserWarning, match="GradCAMCallback is off for this net"):
        trainer, cbs = fit(Flat(), rgb=True, root=tmp_path, callbacks=cbs)
    assert trainer.current_epoch == 2  # it trained to the end
    ea = assert_every_callback_drew_at_both_epochs(trainer, {"selectivity": cbs["selectivity"]})
    assert not [t for t in ea.Tags()["images"] if t.startswith("gradcam")]


def test_a_search_that_gives_up_stops_a_strict_callback_with_what_it_saw():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    with pytest.raises(LayerError, match=r"TopActivationsCallback: no default layer.*no conv stage.*--top_activations"):
        TopActivationsCallback(strict=True).configure_for(net, SHAPE)
    with pytest.warns(UserWarning, match="TopActivationsCallback is off for this net: no default layer"):
        TopActivationsCallback().configure_for(net, SHAPE)  # not strict: off, with a warning


def test_a_wrong_layer_name_is_still_an_error_with_the_valid_names():
    with pytest.raises(LayerError, match=r"unknown layer name\(s\) \['nope'\].*valid: 0, 1, 2, 3"):
        GradCAMCallback(layer="nope").configure_for(Flat().model, SHAPE)
