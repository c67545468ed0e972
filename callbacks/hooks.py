"""Forward-hook activation capture and layer-name checks shared by every visualization.

    acts = capture_activations(net, x, ["conv_1", "relu_1"])   # {"conv_1": (N, 6, 28, 28), "relu_1": ...}
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["check_images", "as_int", "spread", "capture_activations", "forward_with_activations", "collect_activations", "activation_pass", "check_unit_range", "layer_shapes", "check_layers", "check_units", "eval_mode", "LayerError"]


class LayerError(ValueError):
    """A layer name or unit index that the net does not have."""


def check_images(images: Tensor) -> None:
    """Raise ``ValueError`` unless ``images`` is a 4-D floating-point tensor ``(N, C, H, W)``."""
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a tensor shaped (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must be a 4-D tensor (N, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a floating-point tensor, got dtype {images.dtype}")


def as_int(value, name: str) -> int:
    """``value`` as an ``int`` (any integer type, not ``bool``), or ``ValueError`` naming ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _modules(net: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in net.named_modules() if name}


def check_layers(net: nn.Module, layers: Sequence[str], what: str = "layer") -> list[str]:
    """Return ``layers`` as a list, or raise ``LayerError`` naming the unknown ones and listing the valid names."""
    modules = _modules(net)
    unknown = [name for name in layers if name not in modules]
    if unknown:
        raise LayerError(
            f"unknown {what} name(s) {unknown} for {type(net).__name__}; valid: {', '.join(modules)}"
        )
    return list(layers)


def capture_activations(
    net: nn.Module, x: Tensor, layers: Sequence[str], detach: bool = True, stop_after_last: bool = False
) -> dict[str, Tensor]:
    """Run ``net(x)`` and return the output of each named layer, ``{name: Tensor}``.

    Hooks are removed when the call returns or raises. With ``stop_after_last`` the forward pass ends at the
    deepest requested layer (the net's output is then not computed), which saves work for early layers.
    """
    check_layers(net, layers)
    modules = _modules(net)
    wanted = set(layers)
    acts: dict[str, Tensor] = {}

    class _Stop(Exception):
        pass

    def hook(name: str):
        def fn(module: nn.Module, inputs, output: Tensor) -> None:
            acts[name] = output.detach() if detach else output
            if stop_after_last and len(acts) == len(wanted):
                raise _Stop

        return fn

    handles = [modules[name].register_forward_hook(hook(name)) for name in wanted]
    try:
        net(x)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [name for name in layers if name not in acts]
    if missing:
        raise LayerError(f"layer(s) {missing} of {type(net).__name__} are not called in the forward pass")
    return {name: acts[name] for name in layers}


def forward_with_activations(net: nn.Module, x: Tensor, layers: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
    """``(net(x), {name: detached output of that layer})`` from one forward pass; hooks removed afterwards."""
    check_layers(net, layers)
    modules = _modules(net)
    acts: dict[str, Tensor] = {}
    handles = [modules[name].register_forward_hook(lambda m, i, o, name=name: acts.__setitem__(name, o.detach()))
               for name in dict.fromkeys(layers)]
    try:
        out = net(x)
    finally:
        for h in handles:
            h.remove()
    return out, {name: acts[name] for name in layers}


@torch.no_grad()
def layer_shapes(
    net: nn.Module, input_shape: Sequence[int] = (1, 28, 28), calls: dict[str, int] | None = None
) -> dict[str, tuple[int, ...]]:
    """Output shape (without the batch dimension) of every named submodule, from one dry forward pass of a zero
    image; modules not called are left out. ``calls``, when given, is filled with how often each module ran (a
    module reused within one forward pass, like torchvision ResNet's ``relu``, has no single output)."""
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    modules = _modules(net)
    shapes: dict[str, tuple[int, ...]] = {}
    counts = {name: 0 for name in modules}

    def hook(name: str):
        def fn(module: nn.Module, inputs, output) -> None:
            counts[name] += 1
            if isinstance(output, Tensor) and name not in shapes:
                shapes[name] = tuple(output.shape[1:])

        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in modules.items()]
    try:
        with eval_mode(net):
            net(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    if calls is not None:
        calls.update(counts)
    return shapes


def spread(names: Sequence, k: int) -> list:
    """At most ``k`` of ``names``, evenly spaced, the first and the last included (a deep net's default layers:
    a few across its depth instead of every one of them; the units a wide layer's ablation samples)."""
    names = list(names)
    if len(names) <= k:
        return names
    if k <= 1:
        return names[:k]
    return [names[round(i * (len(names) - 1) / (k - 1))] for i in range(k)]


def check_units(net: nn.Module, layer: str, units: Sequence[int], shapes: dict[str, tuple[int, ...]] | None = None) -> list[int]:
    """Return ``units`` as a list, or raise ``LayerError`` naming the layer and its valid unit range."""
    check_layers(net, [layer])
    shapes = shapes or layer_shapes(net)
    if layer not in shapes:
        raise LayerError(
            f"layer {layer!r} has no single output: it is not called, or called several times, in one forward pass "
            f"(a reused module, like torchvision ResNet's relu); name a module called once, e.g. one of: "
            f"{', '.join(list(shapes)[:12])}"
        )
    check_unit_range(layer, list(units), shapes[layer][0])
    return list(units)


def check_unit_range(layer: str, units: list[int], n: int) -> None:
    """Raise ``LayerError`` for an empty ``units`` list or an index outside ``0..n-1`` of ``layer``."""
    if not units:
        raise LayerError(f"empty unit list for layer {layer!r}; give indices in 0..{n - 1}")
    bad = [u for u in units if not isinstance(u, int) or not 0 <= u < n]
    if bad:
        raise LayerError(f"unit index(es) {bad} out of range for layer {layer!r}: it has {n} units, valid 0..{n - 1}")


class eval_mode:
    """Context manager: put ``net`` in eval mode and restore each module's own train/eval flag afterwards."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def __enter__(self) -> nn.Module:
        self.modes = {m: m.training for m in self.net.modules()}
        self.net.eval()
        return self.net

    def __exit__(self, *exc) -> None:
        for m, mode in self.modes.items():
            m.training = mode


@torch.no_grad()
def activation_pass(
    net: nn.Module,
    x: Tensor,
    unit_layers: Sequence[str] = (),
    map_layers: Sequence[str] = (),
    labels: Tensor | None = None,
    num_classes: int = 0,
    batch_size: int = 1000,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """One batched pass over ``x`` that serves both kinds of fixed-set statistics, so that one forward pass per
    epoch feeds every callback:

    - ``{layer: (N, U)}`` per-sample unit activations of ``unit_layers`` (conv units: the mean of their map),
      on the net's device;
    - ``{layer: (num_classes, *shape)}`` the output of ``map_layers`` averaged over each class's samples (by
      ``labels``), on the CPU; a class without samples gets zeros.

    Only per-batch reductions are kept, so memory stays small."""
    unit_layers, map_layers = list(unit_layers), list(map_layers)
    layers = list(dict.fromkeys(unit_layers + map_layers))
    parts: dict[str, list[Tensor]] = {name: [] for name in unit_layers}
    sums: dict[str, Tensor] = {}
    if map_layers and labels is None:
        raise ValueError("activation_pass: map_layers need the samples' labels")
    for start in range(0, len(x) if layers else 0, batch_size):
        acts = capture_activations(net, x[start : start + batch_size], layers, stop_after_last=True)
        for name in unit_layers:
            a = acts[name]
            parts[name].append(a.flatten(2).mean(2) if a.dim() > 2 else a.flatten(1))
        for name in map_layers:
            a = acts[name].float()
            if name not in sums:
                sums[name] = torch.zeros(num_classes, *a.shape[1:], device=a.device)
            sums[name].index_add_(0, labels[start : start + batch_size].long().to(a.device), a)
    counts = torch.bincount(labels.long().cpu(), minlength=num_classes).clamp(min=1).float() if map_layers else None
    means = {name: sums[name].cpu() / counts.view(-1, *[1] * (sums[name].dim() - 1)) for name in map_layers}
    return {name: torch.cat(v) for name, v in parts.items()}, means


def collect_activations(net: nn.Module, x: Tensor, layers: list[str], batch_size: int = 1000) -> dict[str, Tensor]:
    """Per-sample unit activations ``{layer: (N, U)}`` over ``x`` in batches, one pass for every layer; conv
    units are reduced to the mean of their map batch by batch, so memory stays small (``activation_pass``)."""
    return activation_pass(net, x, unit_layers=layers, batch_size=batch_size)[0]
