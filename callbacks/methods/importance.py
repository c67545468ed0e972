"""Unit importance by ablation (Morcos et al. 2018, "On the importance of single directions for generalization").

    abl = ablation_importance(net, x, y, "relu_3")   # unit u of relu_3 set to zero, one unit at a time
    abl.acc_drop     # (U,): base accuracy - accuracy with unit u ablated (1.0: the net fails without it)
    abl.loss_rise    # (U,): mean cross-entropy with unit u ablated - base mean cross-entropy
    abl.loss_rise_se # (U,): its standard error, from the per-sample loss differences (std / sqrt(N))
    abl.dead         # (U,): units whose output is zero on every sample (ablating them changes nothing)
    var = variance_importance(acts)                  # (U,): each unit's activation variance across samples

Ablating a unit sets its output to zero for every sample (a conv unit: the whole channel, every position), and
the accuracy and mean cross-entropy of the net over ``(x, y)`` are measured again. Morcos et al. ask whether the
units a net relies on are the class-selective ones (they are not: selectivity predicts importance poorly), and
compare with a unit's activation variance as a cheaper proxy; ``callbacks.importance`` plots both against the loss
rise. The loss rise is the finer measure (accuracy over 500 samples moves in steps of 0.2 points): it is the mean over
samples of each sample's loss difference, so its standard error is the standard deviation of those differences over
sqrt(N), and a rise of more than two standard errors is larger than its sampling noise.

How: the net is split at the layer by ``torch.fx`` (the layer kept as one call, the values that cross it, such as
a residual block's input, carried over). The part up to the layer runs once and gives its output ``A``; only the
rest of the net runs again, on batches that stack copies of ``A``, each with another unit zeroed: several units per
forward pass, at most ``chunk_size`` samples per pass. A net that ``torch.fx`` cannot trace (or a layer called more
than once per forward pass) falls back to a forward hook that zeroes one unit, one forward pass of the whole net
per unit. Both give the same numbers (the loss up to float rounding, ~1e-7).

Pure functions on a plain ``nn.Module`` (no Lightning): the net runs in eval mode (dropout off) and every
module's train/eval flag is restored; hooks are removed also on error; no gradients are taken; they work under
``torch.no_grad()`` and ``torch.inference_mode()``. Losses are computed in at least float32 and summed in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from ..hooks import LayerError, check_layers, check_unit_range, eval_mode

__all__ = ["Ablation", "ablation_importance", "variance_importance", "rank_correlation"]


class Ablation(NamedTuple):
    """The result of ``ablation_importance`` for ``U`` units of one layer over ``N`` samples."""

    acc_drop: Tensor  # (U,) float32: base accuracy - accuracy with the unit zeroed (in [-1, 1])
    loss_rise: Tensor  # (U,) float32: mean cross-entropy with the unit zeroed - base mean cross-entropy
    base_acc: float  # accuracy of the intact net over (x, y)
    base_loss: float  # mean cross-entropy of the intact net over (x, y)
    units: Tensor  # (U,) long: the unit index of each entry
    loss_rise_se: Tensor  # (U,) float32: standard error of loss_rise, std of per-sample differences / sqrt(N) (N > 1)
    dead: Tensor  # (U,) bool: the unit's output is zero on every sample (and position): exactly 0 rise and drop


def _check_inputs(x: Tensor, y, chunk_size: int) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() < 1:
        raise ValueError(f"x must be a tensor of N samples (N, ...), got {type(x).__name__}")
    n = len(x)
    if n == 0:
        raise ValueError("x is empty: accuracy and loss need at least one sample")
    t = y if isinstance(y, Tensor) else torch.as_tensor(y)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ValueError(f"y must be integer class indices, got dtype {t.dtype}")
    if t.dim() != 1 or len(t) != n:
        raise ValueError(f"y must have shape ({n},), one class index per sample of x, got shape {tuple(t.shape)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1 (most samples per forward pass), got {chunk_size!r}")
    return t.to(device=x.device, dtype=torch.long)


def _scores(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample ``(correct, cross-entropy)`` in float64; checks the logits' shape and the targets' range."""
    if not isinstance(logits, Tensor) or logits.dim() != 2 or len(logits) != len(y):
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"the net must return logits shaped (batch, num_classes) = ({len(y)}, K), got {got}")
    k = logits.shape[1]
    bad = y[(y < 0) | (y >= k)]
    if len(bad):
        raise ValueError(
            f"y must hold class indices in 0..{k - 1} (the net has {k} classes), got {bad.unique().tolist()}"
        )
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    correct = (logits.argmax(1) == y).double()
    loss = F.cross_entropy(logits, y, reduction="none").double()
    return correct, loss


Split = tuple[Callable[..., tuple[Tensor, ...]], Callable[..., Tensor]]
"""``(head, tail)``: ``head(x)`` gives the layer's output and the other values the rest of the net needs from before
it; ``tail(output, *others)`` gives the logits."""


class _LayerAsLeaf(fx.Tracer):
    """torch.fx's tracer that keeps ``layer`` as one call (the other leaves as usual: torch.nn's own modules)."""

    def __init__(self, layer: str) -> None:
        super().__init__()
        self.layer = layer

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname == self.layer or super().is_leaf_module(m, qualname)


def _traced_split(net: nn.Module, layer: str) -> Split | None:
    """The split of any net that ``torch.fx`` traces, at ``layer`` called once: the graph up to the layer returns
    its output and every earlier value used after it (a skip connection's input); the graph after it takes them
    as inputs. None where tracing fails or the layer is not one call of the graph."""
    try:
        graph = _LayerAsLeaf(layer).trace(net)
    except Exception:  # data-dependent control flow and the like: torch.fx cannot follow every net
        return None
    nodes = list(graph.nodes)
    calls = [node for node in nodes if node.op == "call_module" and node.target == layer]
    if len(calls) != 1:
        return None
    i = nodes.index(calls[0])
    after = set(nodes[i + 1 :])
    constant = {node for node in nodes[:i] if node.op == "get_attr"}  # parameters read directly: copied, not carried
    live = [calls[0]] + [node for node in nodes[:i] if node not in constant and any(u in after for u in node.users)]
    head, env = fx.Graph(), {}
    for node in nodes[: i + 1]:
        env[node] = head.node_copy(node, lambda a: env[a])
    head.output(tuple(env[node] for node in live))
    tail = fx.Graph()
    env = {node: tail.placeholder(f"live_{k}") for k, node in enumerate(live)}
    for node in [n for n in nodes[:i] if n in constant] + nodes[i + 1 :]:
        env[node] = tail.node_copy(node, lambda a: env[a])
    return fx.GraphModule(net, head), fx.GraphModule(net, tail)


def _units(layer: str, units, n: int) -> list[int]:
    if units is None:
        return list(range(n))
    if isinstance(units, Tensor):
        units = units.tolist()
    elif isinstance(units, int):
        units = [units]
    units = list(units)
    if any(isinstance(u, bool) for u in units):
        raise LayerError(f"unit indices must be integers for layer {layer!r}, got {units}")
    check_unit_range(layer, units, n)
    return units


def ablation_importance(
    net: nn.Module,
    x: Tensor,
    y: Tensor | Sequence[int],
    layer: str,
    units: Sequence[int] | Tensor | None = None,
    chunk_size: int = 2048,
) -> Ablation:
    """Zero each unit of ``layer`` in turn and measure the drop in accuracy and the rise in mean cross-entropy.

    Args:
        net: a classifier returning logits ``(B, K)``.
        x: ``(N, ...)`` inputs as the net sees them.
        y: ``(N,)`` integer class of each input.
        layer: name of the submodule whose output is ablated (``(N, U)``, or ``(N, C, H, W)``: unit = channel).
        units: unit indices to ablate, in the order of the result (default: all of the layer's units).
        chunk_size: most samples per forward pass (copies of the set with different units zeroed are stacked up
            to this size; lower it if memory runs short).

    Returns:
        ``Ablation(acc_drop, loss_rise, base_acc, base_loss, units, loss_rise_se, dead)``, entry ``j`` for unit
        ``units[j]``; ``loss_rise_se`` is NaN for a single sample. A dead unit (zero on every sample) gets exactly 0
        drop, rise and standard error (zeroing it changes nothing; float rounding of a differently composed batch
        does not count).

    Raises:
        LayerError: unknown layer (the message lists the valid names), a unit index out of range or an empty
            unit list (the message names the layer and its valid range), a layer without a unit dimension.
        ValueError: bad ``x``, ``y`` or ``chunk_size``; ``y`` out of the net's class range; the net does not
            return ``(B, K)`` logits.
    """
    y = _check_inputs(x, y, chunk_size)
    check_layers(net, [layer])
    n = len(x)
    with eval_mode(net), torch.no_grad():
        split = _traced_split(net, layer)
        if split is not None:
            result = _ablate_split(*split, x, y, layer, units, chunk_size)
            if result is not None:
                return result
        return _ablate_hooked(net, x, y, layer, units, chunk_size, n)


def _unit_count(layer: str, out) -> int:
    if not isinstance(out, Tensor) or out.dim() < 2:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise LayerError(f"layer {layer!r} has no unit dimension to ablate: its output is {got}, not (N, U, ...)")
    return out.shape[1]


def _result(
    correct: Tensor,
    diff_sum: Tensor,
    diff_sq: Tensor,
    base_correct: Tensor,
    base_loss: Tensor,
    n: int,
    units: list[int],
    alive: Tensor,
) -> Ablation:
    """The ``Ablation`` from per-unit sums over samples: correct predictions, loss differences (ablated - intact)
    and their squares; ``base_*`` per sample; ``alive`` ``(U,)``: the unit is non-zero somewhere."""
    base_acc, base_l = float(base_correct.sum()) / n, float(base_loss.sum()) / n
    dead = ~alive
    rise = diff_sum / n
    var = ((diff_sq - diff_sum * rise) / (n - 1)).clamp(min=0) if n > 1 else torch.full_like(rise, math.nan)
    se = (var / n).sqrt()
    zero = torch.zeros((), dtype=rise.dtype, device=rise.device)
    return Ablation(
        acc_drop=torch.where(dead, zero, base_acc - correct / n).float(),
        loss_rise=torch.where(dead, zero, rise).float(),
        base_acc=base_acc,
        base_loss=base_l,
        units=torch.tensor(units, dtype=torch.long, device=rise.device),
        loss_rise_se=torch.where(dead, zero, se).float(),
        dead=dead,
    )


def _alive(out: Tensor) -> Tensor:
    """``(U,)`` bool: each unit of ``out`` ``(N, U, ...)`` is non-zero on some sample (and position)."""
    return (out != 0).flatten(2).any(2).any(0) if out.dim() > 2 else (out != 0).any(0)


def _ablate_split(head, tail, x: Tensor, y: Tensor, layer: str, units, chunk_size: int) -> Ablation | None:
    """Ablation through a ``Split``: ``head`` once over ``x``, ``tail`` on stacked copies with one unit zeroed each.
    None when what crosses the split is not one tensor row per sample (then the hook path is used)."""
    n = len(x)
    parts = [head(x[s : s + chunk_size]) for s in range(0, n, chunk_size)]
    live = [torch.cat(vals) if all(isinstance(v, Tensor) and v.dim() for v in vals) else None for vals in zip(*parts)]
    if any(v is None or len(v) != n for v in live):
        return None
    acts, others = live[0], live[1:]
    units = _units(layer, units, _unit_count(layer, acts))
    dev = acts.device
    base = [
        _scores(tail(acts[s : s + chunk_size], *(o[s : s + chunk_size] for o in others)), y[s : s + chunk_size])
        for s in range(0, n, chunk_size)
    ]
    base_correct, base_loss = torch.cat([c for c, _ in base]), torch.cat([loss for _, loss in base])  # (N,) each
    u_t = torch.tensor(units, dtype=torch.long, device=dev)
    correct, diff_sum, diff_sq = (torch.zeros(len(units), dtype=torch.float64, device=dev) for _ in range(3))
    # the flat index j over (unit entry, sample), unit-major: entry j // n, sample j % n
    for s in range(0, len(units) * n, chunk_size):
        j = torch.arange(s, min(s + chunk_size, len(units) * n), device=dev)
        entry, sample = j // n, j % n
        batch = acts[sample]  # a fresh copy
        batch[torch.arange(len(j), device=dev), u_t[entry]] = 0  # conv: the whole (H, W) map of the channel
        c, loss = _scores(tail(batch, *(o[sample] for o in others)), y[sample])
        diff = loss - base_loss[sample]  # this sample's loss rise
        correct.index_add_(0, entry, c)
        diff_sum.index_add_(0, entry, diff)
        diff_sq.index_add_(0, entry, diff * diff)
    return _result(correct, diff_sum, diff_sq, base_correct, base_loss, n, units, _alive(acts)[u_t])


def _ablate_hooked(net: nn.Module, x: Tensor, y: Tensor, layer: str, units, chunk_size: int, n: int) -> Ablation:
    module = dict(net.named_modules())[layer]
    state: dict = {"unit": None, "count": None, "alive": None}

    def hook(mod, inputs, output):
        state["count"] = _unit_count(layer, output)
        if state["unit"] is None:
            alive = _alive(output)
            state["alive"] = alive if state["alive"] is None else state["alive"] | alive
            return None
        out = output.clone()
        out[:, state["unit"]] = 0
        return out

    def run() -> tuple[Tensor, Tensor]:
        """Per-sample ``(correct, loss)``, each ``(N,)``."""
        scores = [_scores(net(x[s : s + chunk_size]), y[s : s + chunk_size]) for s in range(0, n, chunk_size)]
        return torch.cat([c for c, _ in scores]), torch.cat([loss for _, loss in scores])

    handle = module.register_forward_hook(hook)
    try:
        base_correct, base_loss = run()
        if state["count"] is None:
            raise LayerError(f"layer {layer!r} did not run in the net's forward pass, so it cannot be ablated")
        units = _units(layer, units, state["count"])
        correct, diff_sum, diff_sq = (torch.zeros(len(units), dtype=torch.float64, device=x.device) for _ in range(3))
        for k, u in enumerate(units):
            state["unit"] = u
            c, loss = run()
            diff = loss - base_loss
            correct[k], diff_sum[k], diff_sq[k] = c.sum(), diff.sum(), (diff * diff).sum()
    finally:
        handle.remove()
    alive = state["alive"][torch.tensor(units, dtype=torch.long, device=state["alive"].device)]
    return _result(correct, diff_sum, diff_sq, base_correct, base_loss, n, units, alive.to(x.device))


def variance_importance(acts: Tensor) -> Tensor:
    """``(U,)`` variance across the ``N`` samples of each unit's activation (population variance, dividing by N);
    ``acts`` is ``(N, U)`` or ``(N, C, H, W)``, whose units are the channels' spatial means. In float32 or wider."""
    if not isinstance(acts, Tensor) or acts.dim() < 2 or len(acts) == 0:
        got = tuple(acts.shape) if isinstance(acts, Tensor) else type(acts).__name__
        raise ValueError(f"acts must be a non-empty tensor (N, U) or (N, C, H, W), got {got}")
    a = acts.detach()
    a = a.to(torch.promote_types(a.dtype, torch.float32))
    a = a.flatten(2).mean(2) if a.dim() > 2 else a
    return a.var(dim=0, correction=0)


def _ranks(v: Tensor) -> Tensor:
    """Ranks 0..n-1 in float64, tied values sharing their average rank."""
    v = v.double().flatten()
    order = torch.argsort(v, stable=True)
    sorted_v = v[order]
    _, inverse, counts = torch.unique_consecutive(sorted_v, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg = ends - (counts.double() + 1) / 2  # mean of positions start..end-1
    ranks = torch.empty_like(v)
    ranks[order] = avg[inverse]
    return ranks


def rank_correlation(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation of two equally long vectors (ties get average ranks); NaN where undefined:
    fewer than two finite pairs, or either vector constant over them."""
    a, b = a.detach().double().flatten().cpu(), b.detach().double().flatten().cpu()
    if a.shape != b.shape:
        raise ValueError(f"rank_correlation needs vectors of equal length, got {len(a)} and {len(b)}")
    keep = torch.isfinite(a) & torch.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 2:
        return math.nan
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum()) * float((rb * rb).sum()))
    return float((ra * rb).sum()) / denom if denom > 0 else math.nan
