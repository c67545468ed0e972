"""Every callback on the CNNs users train: timm and torchvision ConvNeXt, EfficientNet, MobileNetV3, ResNet, VGG,
RegNet and DenseNet (``pretrained=False``, 32 px RGB), at its defaults with ``strict=True``.

Known answers for the layer roles (``callbacks.layers``): stage outputs, no default inside a squeeze-excitation
block, actmax on a few stages plus the logits, the classifier's Linear layers; the deconvnet on a GELU net warns
and draws nothing while every other picture is drawn; the deconvnet through a strided conv, BatchNorm and average
pooling equals a projection computed by hand; receptive fields traced along the forward pass have the stride of
the maps they belong to.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import callbacks.deconv
import callbacks.hooks
import callbacks.methods.deconv
import callbacks.technique
import callbacks.top_activations
from callbacks import VISUALIZATIONS
from callbacks.deconv import DeconvCallback
from callbacks.hooks import layer_shapes
from callbacks.layers import is_nonlinearity, layer_roles
from callbacks.methods.deconv import deconv_blockers, deconvnet_with_channels
from callbacks.top_activations import receptive_field
from callbacks.units import FOLDER as UNITS_FOLDER
from tests.test_any_model import Classifier, cheap_callbacks, fit, needs_fashion, read_events, steps_of

SHAPE = (3, 32, 32)
MODELS = {
    "timm_convnext_atto": lambda: timm.create_model("convnext_atto", pretrained=False, num_classes=10),
    "tv_convnext_tiny": lambda: torchvision.models.convnext_tiny(num_classes=10),
    "timm_efficientnet_b0": lambda: timm.create_model("efficientnet_b0", pretrained=False, num_classes=10),
    "tv_efficientnet_b0": lambda: torchvision.models.efficientnet_b0(num_classes=10),
    "timm_mobilenetv3_small_100": lambda: timm.create_model("mobilenetv3_small_100", pretrained=False, num_classes=10),
    "timm_resnet18": lambda: timm.create_model("resnet18", pretrained=False, num_classes=10),
    "tv_resnet50": lambda: torchvision.models.resnet50(num_classes=10),
    "timm_vgg11_bn": lambda: timm.create_model("vgg11_bn", pretrained=False, num_classes=10),
    "timm_regnetx_002": lambda: timm.create_model("regnetx_002", pretrained=False, num_classes=10),
    "tv_densenet121": lambda: torchvision.models.densenet121(num_classes=10),
}
# Cheaper still than test_any_model's settings, for one epoch of a real ConvNeXt on 2 CPU cores.
CHEAPER = {
    "actmax": {"steps": 2, "warm_steps": 1},
    "invariance": {"per_class": 1, "transformations": ["rotate"]},
    "samples": {"graph": False},
    "occlusion": {"stride": 8},
    "top_activations": {"units": 2},
    "importance": {"layers": ["stages.3"]},
}
RELU_ONLY = {"timm_resnet18", "tv_resnet50", "timm_vgg11_bn", "timm_regnetx_002", "tv_densenet121"}
SE_BLOCKS = ("SqueezeExcite", "SqueezeExcitation", "SEModule", "EffectiveSEModule")


@functools.cache
def model(key: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[key]().eval()


@functools.cache
def roles(key: str):
    calls: dict[str, int] = {}
    shapes = {n: s for n, s in layer_shapes(model(key), SHAPE, calls).items() if calls[n] == 1}
    return layer_roles(model(key), shapes), shapes


def resolved(cb) -> list[str]:
    """Every layer a configured callback will read."""
    names = []
    for attr in ("layer_names", "mean_names", "stage_names", "fc_names"):
        names += list(getattr(cb, attr, None) or [])
    for attr in ("layer_name",):
        names += [getattr(cb, attr)] if getattr(cb, attr, None) else []
    return names


def inside_se(net: nn.Module, name: str) -> bool:
    modules = dict(net.named_modules())
    parts = name.split(".")
    return any(type(modules[".".join(parts[:i])]).__name__ in SE_BLOCKS for i in range(1, len(parts) + 1))


def remembered(real):
    """``hooks.layer_shapes`` that runs the dry forward pass once per net and input shape (each callback's setup
    runs one; the answer does not change, and on a 2-core CPU a ResNet-50's pass takes about a second)."""
    memo: dict = {}

    def layer_shapes(net, input_shape=(1, 28, 28), calls=None):
        key = (id(net), tuple(input_shape))
        if key not in memo:
            counts: dict[str, int] = {}
            memo[key] = (net, real(net, input_shape, counts), counts)  # the net is kept, so its id is not reused
        _, shapes, counts = memo[key]
        if calls is not None:
            calls.update(counts)
        return dict(shapes)

    return layer_shapes


@functools.cache
def configured(key: str) -> dict:
    """Every callback of VISUALIZATIONS configured on the model with strict=True (``configure_for``, as at a
    Trainer's setup), and the warnings each raised."""
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        fast = remembered(callbacks.hooks.layer_shapes)
        for module in (callbacks.technique, callbacks.deconv, callbacks.top_activations, callbacks.methods.deconv):
            mp.setattr(module, "layer_shapes", fast)
        for name, cls in VISUALIZATIONS.items():
            cb = cls(strict=True)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cb.configure_for(model(key), SHAPE)
            out[name] = (cb, [str(w.message) for w in caught])
    return out


# ------------------------------------------------------------------------------------- every callback, every net
@pytest.mark.parametrize("key", list(MODELS))
def test_every_callback_configures_strictly_with_sensible_defaults(key):
    net, cbs = model(key), configured(key)
    modules = dict(net.named_modules())
    r, shapes = roles(key)
    assert len(r.stages) >= 4 and all(len(shapes[s]) == 3 for s in r.stages), r.stages
    for name, (cb, _) in cbs.items():
        for layer in resolved(cb):
            assert not inside_se(net, layer), f"{key}: {name} defaults to {layer!r}, inside a squeeze-excitation block"
    # actmax: at most four spatial layers (16 channels each) plus the logits, not every conv of the net
    actmax = cbs["actmax"][0].layer_units
    spatial = [n for n in actmax if len(shapes[n]) == 3]
    assert 1 <= len(spatial) <= 4 and all(len(u) <= 16 for n, u in actmax.items() if n in spatial), actmax
    assert list(actmax)[-1] == r.logits and isinstance(modules[r.logits], nn.Linear) and len(actmax) == len(spatial) + 1
    # the classifier's Linear layers only (torchvision ConvNeXt's block MLPs are Linear too, channels last)
    fc = cbs["fc_activations"][0].layer_names
    assert fc and all(isinstance(modules[n], nn.Linear) and len(shapes[n]) == 1 for n in fc) and fc[-1] == r.logits
    # the analyses of stages read stage layers: each a stage output or the nonlinearity that ends one
    for name in ("selectivity", "top_activations", "feature_maps", "decision", "changes", "importance"):
        cb = cbs[name][0]
        layers = cb.stage_names if name == "decision" else cb.layer_names
        assert layers and all(n in r.stages + r.features + r.hidden for n in layers), (name, layers)
    # the deconvnet: drawn on ReLU nets, skipped with one warning naming it on GELU / SiLU / Hardswish nets
    dc, said = cbs["deconv"]
    if key in RELU_ONLY:
        assert dc.layer_names and set(dc.layer_names) <= set(r.stages) and not said, said
    else:
        assert dc.layer_names == [] and len(said) == 1 and said[0].startswith("DeconvCallback is off for this net: "), (
            said
        )
        assert "the deconvnet (Zeiler & Fergus) has a rule for nn.ReLU" in said[0] and dc.off_reason


def test_known_stage_outputs():
    assert roles("tv_resnet50")[0].stages == ["layer1", "layer2", "layer3", "layer4"]
    assert roles("timm_convnext_atto")[0].stages == ["stages.0", "stages.1", "stages.2", "stages.3"]
    assert roles("tv_convnext_tiny")[0].stages == ["features.1", "features.3", "features.5", "features.7"]
    assert roles("tv_efficientnet_b0")[0].stages == [
        "features.1",
        "features.2",
        "features.3",
        "features.5",
        "features.8",
    ]
    assert roles("tv_densenet121")[0].stages[:3] == [
        "features.denseblock1",
        "features.denseblock2",
        "features.denseblock3",
    ]
    # timm's ResNet ends each stage with a ReLU module of its own: the stage's feature layer is that ReLU
    assert roles("timm_resnet18")[0].features[1:] == [f"layer{i}.1.act2" for i in range(1, 5)]
    # on ResNet-50 the defaults are the stages, not the stem, not every conv
    cbs = configured("tv_resnet50")
    assert cbs["actmax"][0].layer_names == ["layer1", "layer2", "layer3", "layer4", "fc"]
    assert cbs["deconv"][0].layer_names == ["layer1", "layer2", "layer3", "layer4"]
    assert cbs["importance"][0].layer_names == ["layer4"]  # the last stage: an earlier one costs a pass per unit
    assert cbs["invariance"][0].layer_names == ["layer1", "avgpool"]
    assert configured("tv_convnext_tiny")["fc_activations"][0].layer_names == ["classifier.2"]


@pytest.mark.parametrize(
    "key, expected",
    [
        ("timm_convnext_atto", ["stages.0", "stages.1", "stages.2", "stages.3"]),  # feature_info: the same
        ("timm_resnet18", ["layer1", "layer2", "layer3", "layer4"]),  # feature_info adds the stem's act1
        ("timm_regnetx_002", ["stem", "s1", "s2", "s3", "s4"]),  # the same
        (
            "timm_efficientnet_b0",
            ["blocks.0", "blocks.1", "blocks.2", "blocks.4", "bn2"],
        ),  # feature_info: blocks.6 last
    ],
)
def test_the_generic_stage_rule_finds_timms_stages_without_feature_info(key, expected):
    net = MODELS[key]()
    net.feature_info = None  # the generic rule: resolution runs over the module tree
    calls: dict[str, int] = {}
    shapes = {n: s for n, s in layer_shapes(net, SHAPE, calls).items() if calls[n] == 1}
    assert layer_roles(net, shapes).stages == expected


def test_nonlinearities_of_torch_and_timm_and_gates():
    for m in (nn.ReLU(), nn.GELU(), nn.SiLU(), nn.Hardswish(), nn.Mish(), nn.LeakyReLU(), nn.ELU(), nn.Softplus()):
        assert is_nonlinearity(m), m
    for m in (nn.Sigmoid(), nn.Hardsigmoid(), nn.Tanh(), nn.Conv2d(1, 1, 1), nn.LayerNorm(3)):
        assert not is_nonlinearity(m), m
    from timm.layers import activations

    assert is_nonlinearity(activations.GELU()) and is_nonlinearity(activations.Swish())
    assert is_nonlinearity(activations.HardSwish())
    assert not is_nonlinearity(activations.HardSigmoid()) and not is_nonlinearity(activations.Sigmoid())


def test_top_activations_on_convnext_reads_stage_layers_with_traced_fields_and_warns_once():
    cb, said = configured("timm_convnext_atto")["top_activations"]
    assert cb.layer_names == ["stages.0", "stages.1", "stages.2", "stages.3"]
    # LayerNorm, channels-last Linear and GELU keep each position's field; the 4x4 stride-4 stem sets the stride
    assert [cb.fields[n].stride for n in cb.layer_names] == [4, 8, 16, 32]
    assert not any(cb.projectable.values())  # no deconvnet through GELU
    assert len(said) == 1 and said[0].startswith("TopActivationsCallback: ") and "GELU" in said[0], said
    # a second setup (a resumed fit) does not warn again
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cb.configure_for(model("timm_convnext_atto"), SHAPE)
    assert not caught


def test_receptive_fields_follow_the_forward_pass_past_parallel_shortcuts():
    net = model("tv_resnet50")
    for layer, stride in (("layer1", 4), ("layer2", 8), ("layer3", 16), ("layer4", 32)):
        assert receptive_field(net, layer, (3, 64, 64)).stride == stride  # 64 px / the stage's map size
    # in registration order the strided 1x1 shortcut conv would be counted as if it ran after the block
    assert receptive_field(net, "layer2").stride == 16


# ------------------------------------------------------------------------------------------------ the deconvnet
class Linearish(nn.Sequential):
    """A strided conv, BatchNorm, ReLU, average pooling, a 1x1 conv and a ReLU: every part but the ReLUs linear."""

    def __init__(self, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.relu1 = act()
        self.pool = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(2, 3, 1)
        self.relu2 = nn.ReLU()


def test_deconvnet_through_strided_conv_batchnorm_and_average_pooling_equals_a_hand_projection():
    torch.manual_seed(0)
    net = Linearish().eval()
    with torch.no_grad():
        net.bn.running_mean.copy_(torch.tensor([0.1, -0.2]))
        net.bn.running_var.copy_(torch.tensor([0.5, 2.0]))
        net.bn.weight.copy_(torch.tensor([1.5, -0.7]))
        net.bn.bias.copy_(torch.tensor([0.3, 0.1]))
    x = torch.randn(2, 1, 8, 8)
    assert deconv_blockers(net, "relu2", (1, 8, 8)) == []
    act = net(x).detach()
    c = int(act.flatten(2).amax(2).amin(0).argmax())  # a channel active in both images
    assert (act[:, c].flatten(1).amax(1) > 0).all()
    proj, ch = deconvnet_with_channels(net, x, "relu2", channel=c)
    # by hand: keep channel c of relu2, then each layer's transpose, rectifying at relu1 (Zeiler & Fergus)
    g = torch.zeros_like(act)
    g[:, c] = act[:, c]
    g = F.conv_transpose2d(g, net.conv2.weight)  # 1x1 conv: W^T, no bias
    g = g.repeat_interleave(2, 2).repeat_interleave(2, 3) / 4  # 2x2 average pooling: spread evenly
    g = F.relu(g)  # the deconvnet's rectification
    g = g * (net.bn.weight / torch.sqrt(net.bn.running_var + net.bn.eps)).view(1, -1, 1, 1)  # BatchNorm in eval
    g = F.conv_transpose2d(g, net.conv1.weight, stride=2, padding=1, output_padding=1)  # the strided conv's W^T
    assert ch.tolist() == [c, c] and g.abs().max() > 0
    assert torch.allclose(proj, g, atol=1e-6)


def test_deconvnet_names_what_it_has_no_rule_for():
    net = Linearish(nn.GELU).eval()
    assert deconv_blockers(net, "relu2", (1, 8, 8)) == ["relu1 (GELU)"]
    assert deconv_blockers(net, "bn", (1, 8, 8)) == []  # a layer before the GELU is still projected
    cb = DeconvCallback(layers=["bn", "relu2"], strict=True)
    with pytest.warns(UserWarning, match=r"DeconvCallback: .*relu2 depend\(s\) on relu1 \(GELU\).*only bn are drawn"):
        cb.configure_for(net, (1, 8, 8))
    assert cb.layer_names == ["bn"]


# ----------------------------------------------------------------------------------------- one real Trainer fit
@needs_fashion
def test_on_a_gelu_convnext_every_picture_but_the_deconvnet_is_drawn(tmp_path):
    torch.manual_seed(0)
    net = timm.create_model("convnext_atto", pretrained=False, num_classes=10)
    cbs = cheap_callbacks(CHEAPER)
    with pytest.warns(UserWarning, match="DeconvCallback is off for this net: the deconvnet"):
        trainer, cbs = fit(Classifier(net), rgb=True, root=tmp_path, max_epochs=1, callbacks=cbs)
    ea = read_events(trainer)
    assert not steps_of(ea, "deconv")
    for key, cb in cbs.items():
        if key in ("deconv", "changes", "embedding"):  # changes compares two drawings; embedding: projector files
            continue
        if key == "units":  # the unit browser's files, not pictures
            assert list(Path(trainer.logger.log_dir, UNITS_FOLDER).glob("*/epoch_0000/meta.json"))
            continue
        tags = steps_of(ea, cb.technique)
        assert tags, f"{key} drew nothing"
        if key not in ("samples", "evolution"):  # drawn once, at fit start and end
            assert any(0 in steps for steps in tags.values()), f"{key} drew nothing at epoch 0: {tags}"
    assert {t for t in ea.Tags()["images"] if t.startswith("top_activations/")} == {
        f"top_activations/stages.{i}" for i in range(4)
    }
