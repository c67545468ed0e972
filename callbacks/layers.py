"""Which layers of a CNN matter: the one place where every callback's default layers come from (plain PyTorch).

    roles = layer_roles(net, shapes)     # shapes: {name: output shape without batch}, modules called once per pass
    roles.stages      # ['layer1', 'layer2', 'layer3', 'layer4'] for torchvision's ResNet-50
    roles.features    # per stage, the nonlinearity that ends it where there is one, else the stage output
    roles.hidden      # the head's hidden nonlinearities (LeNet-5: relu_3, relu_4)
    roles.logits      # the last nn.Linear ('fc')

What counts, and why:

- **nonlinearity**: torch's ``ReLU, ReLU6, LeakyReLU, PReLU, ELU, SELU, CELU, GELU, SiLU, Mish, Hardswish,
  Softplus`` and timm's own activation classes (``timm.layers.activations*``: ``GELU``, ``Swish``, ``HardSwish``,
  ``Mish`` ..., which do not all subclass torch's), recognised by the module path of their class, so timm is
  not imported. Sigmoid, Hardsigmoid and Tanh are gates (they scale features), not features.
- **gate blocks**: squeeze-excitation and similar gating blocks (timm ``SqueezeExcite``, ``SEModule``,
  ``EffectiveSEModule``; torchvision ``SqueezeExcitation``; by class name of the module or an ancestor) compute a
  per-channel scale on 1x1 maps: nothing inside one is a default layer.
- **head**: everything that finishes at or after the global pool (``AdaptiveAvgPool2d``/``AdaptiveMaxPool2d``,
  timm's ``SelectAdaptivePool2d``; without one, the first module with a flat output) is the head; spatial
  defaults come from the body before it.
- **stages**: for a timm model, ``net.feature_info``'s module names. Otherwise, walking the module tree from the
  root: the body layers below it, in forward order (a module whose own children form several runs, such as
  torchvision's ``features``, replaced by its children, recursively), are split into runs at each change of
  output resolution (a pooling layer that changes it closes the run it ends, as in conv-ReLU-pool; a strided conv
  opens the next, as in ResNet and ConvNeXt); a run without a conv joins the next one. The last module of each run
  (identities skipped) is a stage output. Where most runs end in a block holding a conv, a first run of loose
  single layers (a ResNet's stem) is not a stage.
- **features**: per stage, its last nonlinearity when only pooling, dropout or identity layers (or the blocks it
  ends) finish after it within the stage, so its output is the stage's; else the stage output itself (a
  ConvNeXt or EfficientNet block ends with a linear layer and a residual sum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import nn

from .hooks import spread

__all__ = [
    "NONLINEARITIES",
    "GATE_BLOCKS",
    "LayerRoles",
    "layer_roles",
    "is_nonlinearity",
    "in_gate_block",
    "following_nonlinearity",
]

NONLINEARITIES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Softplus,
)
_TIMM_ACTIVATIONS = "timm.layers.activations"  # activations, activations_me, activations_jit
_GATE_NAMES = ("sigmoid", "tanh")  # timm's Sigmoid, HardSigmoid, HardSigmoidMe, Tanh: gates
GATE_BLOCKS = frozenset(
    {
        "SqueezeExcite",
        "SEModule",
        "EffectiveSEModule",
        "SqueezeExcitation",
        "SqueezeExciteCl",
        "SEBlock",
        "SELayer",
        "EcaModule",
        "CecaModule",
        "GatherExcite",
        "CbamModule",
        "LightCbamModule",
    }
)
_GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.Identity, nn.Dropout)
_PASSIVE = (nn.MaxPool2d, nn.AvgPool2d, nn.Dropout, nn.Dropout2d, nn.Identity)  # keep what a stage's act computed


def is_nonlinearity(m: nn.Module) -> bool:
    """A feature nonlinearity (not a gate): one of ``NONLINEARITIES`` or a timm activation module."""
    if isinstance(m, NONLINEARITIES):
        return True
    cls = type(m)
    return cls.__module__.startswith(_TIMM_ACTIVATIONS) and not any(g in cls.__name__.lower() for g in _GATE_NAMES)


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def in_gate_block(name: str, modules: dict[str, nn.Module]) -> bool:
    """Whether module ``name`` is, or lies inside, a squeeze-excitation / gating block (``GATE_BLOCKS``)."""
    return any(type(modules[a]).__name__ in GATE_BLOCKS for a in [*_ancestors(name), name] if a in modules)


def _is_global_pool(m: nn.Module) -> bool:
    name = type(m).__name__
    return isinstance(m, _GLOBAL_POOLS) or ("Adaptive" in name and "Pool" in name) or "GlobalPool" in name


def _is_pool(m: nn.Module) -> bool:
    return "Pool" in type(m).__name__ and not _is_global_pool(m)


@dataclass
class LayerRoles:
    """The roles of a net's layers (names are ``named_modules()`` names of modules called once per pass)."""

    body: list[str] = field(default_factory=list)  # (C, H, W) outputs before the head, outside gate blocks
    head: list[str] = field(default_factory=list)  # from the global pool on, outside gate blocks
    stages: list[str] = field(default_factory=list)  # stage outputs, in forward order
    features: list[str] = field(default_factory=list)  # per stage: its ending nonlinearity, else its output
    hidden: list[str] = field(default_factory=list)  # nonlinearities with flat outputs in the head
    convs: list[str] = field(default_factory=list)  # Conv2d layers of the body
    head_linears: list[str] = field(default_factory=list)  # nn.Linear with flat outputs (the classifier)
    logits: str | None = None  # the last nn.Linear run
    nonlinearities: list[str] = field(default_factory=list)  # every one called once, outside gate blocks
    order: list[str] = field(default_factory=list)  # every layer called once, outside gate blocks, forward order

    def penultimate(self, net: nn.Module, shapes: dict[str, tuple[int, ...]]) -> list[str]:
        """``[the layer whose output enters the logits]``: the last one before them with as many values as the
        logits' ``in_features`` (reshapes, dropout, identities and containers of only those skipped, and a container
        whose own layer of that width is taken instead: the same values wherever the classifier was cut off); ``[]``
        if none."""
        if self.logits is None:
            return []
        modules = dict(net.named_modules())
        width = modules[self.logits].in_features
        skip = (nn.Flatten, nn.Unflatten, nn.Identity, nn.modules.dropout._DropoutNd)
        before = self.order[: self.order.index(self.logits)]
        inside = lambda n: [b for b in before if b.startswith(n + ".")]  # noqa: E731
        passive = {n for n in before if isinstance(modules[n], skip)}
        passive |= {n for n in before if inside(n) and set(inside(n)) <= passive}  # a Sequential(Dropout, Identity)
        fits = [n for n in before if n not in passive and math.prod(shapes[n]) == width]
        found = [
            n
            for n in reversed(fits)
            if not self.logits.startswith(n + ".") and not any(f.startswith(n + ".") for f in fits)
        ]
        return found[:1]

    def levels(self, k: int) -> list[str]:
        """A few spatial layers across the depth: every conv of a net with at most ``k`` of them (each is a stage of
        its own), else ``k`` of the stage features, spread (not every conv of a ResNet-50)."""
        return self.convs if len(self.convs) <= k else spread(self.features, k)


def following_nonlinearity(net: nn.Module, layer: str, order: list[str] | None = None) -> str | None:
    """The nonlinearity that directly follows ``layer`` in ``order`` (forward order, e.g. the keys of ``shapes``;
    default: the order of ``named_modules()``), with only normalization or identity layers (or the block that
    ``layer`` ends) between; None if there is none."""
    modules = dict(net.named_modules())
    order = list(order) if order is not None else [n for n in modules if n]
    for name in order[order.index(layer) + 1 :]:
        m = modules[name]
        if is_nonlinearity(m):
            return name
        if not (layer.startswith(name + ".") or isinstance(m, _NORMS)):
            return None
    return None


def layer_roles(net: nn.Module, shapes: dict[str, tuple[int, ...]]) -> LayerRoles:
    """The roles of ``net``'s layers, from ``shapes`` (``{name: output shape}`` of the modules called once per
    forward pass, in the order they finished, as ``VisualizationCallback.configure_for`` finds them)."""
    modules = dict(net.named_modules())
    order = [n for n in shapes if n in modules and n and not in_gate_block(n, modules)]
    start = _head_start(order, modules, shapes)
    # Wrappers (``self.model``, a backbone that pools, a Sequential of body and head) hold the first layer and a
    # head layer: they are not layers of the net, and without them its roles are the bare net's, prefixed.
    wrappers = {n for n in order if order[0].startswith(n + ".") and any(h.startswith(n + ".") for h in order[start:])}
    order = [n for n in order if n not in wrappers]
    start = _head_start(order, modules, shapes)
    roles = LayerRoles(order=order)
    roles.body = [n for n in order[:start] if len(shapes[n]) == 3]
    roles.head = order[start:]
    roles.convs = [n for n in roles.body if isinstance(modules[n], nn.Conv2d)]
    roles.nonlinearities = [n for n in order if is_nonlinearity(modules[n])]
    roles.hidden = [n for n in roles.head if is_nonlinearity(modules[n]) and len(shapes[n]) == 1]
    linears = [n for n in order if isinstance(modules[n], nn.Linear)]
    roles.logits = linears[-1] if linears else None
    roles.head_linears = [n for n in linears if len(shapes[n]) == 1]
    roles.stages = _timm_stages(net, roles.body) or _Stages(modules, shapes, roles.body).of("")
    roles.features = _features(roles.stages, order, modules)
    return roles


def _head_start(order: list[str], modules: dict[str, nn.Module], shapes: dict[str, tuple[int, ...]]) -> int:
    """The index in ``order`` where the head begins: the global pool, else the first layer with a flat output."""
    start = next((i for i, n in enumerate(order) if _is_global_pool(modules[n])), None)
    return start if start is not None else next((i for i, n in enumerate(order) if len(shapes[n]) != 3), len(order))


def _timm_stages(net: nn.Module, body: list[str]) -> list[str]:
    """The module names of timm's ``feature_info`` that are body layers, in forward order. The timm model may sit
    anywhere in ``net`` (``self.model``, a backbone, a ``Sequential``): its names get its own prefix."""
    names: set[str] = set()
    for prefix, module in net.named_modules():
        info = getattr(module, "feature_info", None)
        try:
            modules = [d["module"] for d in info] if isinstance(info, list) else []
        except (TypeError, KeyError):
            continue
        names |= {f"{prefix}.{m}" if prefix else m for m in modules}
    return [n for n in body if n in names]


class _Stages:
    """The generic stage rule of the module docstring (resolution runs, walked from the root)."""

    def __init__(self, modules: dict[str, nn.Module], shapes: dict[str, tuple[int, ...]], body: list[str]) -> None:
        self.modules, self.shapes = modules, shapes
        self.rank = {n: i for i, n in enumerate(body)}  # forward (completion) order of the body layers

    def kids(self, name: str) -> list[str]:
        """The body layers directly below ``name``, in forward order. A child that is not itself a body layer is
        looked through: a container never called (a ``ModuleList``), and a wrapper whose output is not a body
        output (``self.model`` holding the whole net, a backbone that pools, a ``Sequential`` of body and head),
        so that wrapping a net does not change its stages."""
        out = []
        for child, _ in self.modules[name].named_children():
            full = f"{name}.{child}" if name else child
            out += [full] if full in self.rank else self.kids(full)
        return sorted(out, key=self.rank.__getitem__)

    def has_conv(self, name: str) -> bool:
        return any(isinstance(m, nn.Conv2d) for m in self.modules[name].modules())

    def runs(self, kids: list[str]) -> list[list[str]]:
        runs: list[list[str]] = []
        closed = True
        for k in kids:
            res = self.shapes[k][1:]
            if closed or res != self.shapes[runs[-1][-1]][1:]:
                if runs and not closed and _is_pool(self.modules[k]):
                    runs[-1].append(k)  # a pool that changes the resolution ends the stage it summarises
                    closed = True
                    continue
                runs.append([k])
                closed = False
            else:
                runs[-1].append(k)
        merged: list[list[str]] = []
        pending: list[str] = []
        for run in runs:  # a run without a conv joins the next one (or, at the end, the previous one)
            run = pending + run
            if any(self.has_conv(k) for k in run):
                merged.append(run)
                pending = []
            else:
                pending = run
        if pending:
            if merged:
                merged[-1] += pending
            else:
                merged.append(pending)
        return merged

    def flat(self, name: str) -> list[str]:
        """The body layers below ``name``, with each one whose own children form several runs (a container of
        several stages, such as torchvision's ``features``) replaced by its own such layers."""
        out = []
        for k in self.kids(name):
            out += self.flat(k) if len(self.runs(self.kids(k))) > 1 else [k]
        return out

    def of(self, name: str) -> list[str]:
        runs = self.runs(self.flat(name))
        block = lambda k: any(True for _ in self.modules[k].children())  # noqa: E731
        if sum(block(r[-1]) and self.has_conv(r[-1]) for r in runs) > len(runs) / 2 and not any(map(block, runs[0])):
            runs = runs[1:]  # loose single layers before a net of blocks: its stem
        # each run's output: its last layer that is not a no-op (ConvNeXt's identity ``norm_pre``)
        return [
            next((k for k in reversed(r) if not isinstance(self.modules[k], (nn.Identity, nn.Dropout))), r[-1])
            for r in runs
        ]


def _features(stages: list[str], order: list[str], modules: dict[str, nn.Module]) -> list[str]:
    """Per stage, the nonlinearity that ends it (only passive layers, or blocks it ends, finish after it within
    the stage), else the stage output."""
    out, begin = [], 0
    for stage in stages:
        end = order.index(stage)
        span = order[begin : end + 1]
        pick = stage
        for i in reversed(range(len(span))):
            if is_nonlinearity(modules[span[i]]):
                after = span[i + 1 :]
                if all(isinstance(modules[a], _PASSIVE) or span[i].startswith(a + ".") for a in after):
                    pick = span[i]
                break
        out.append(pick)
        begin = end + 1
    return out
