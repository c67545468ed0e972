"""Activation maximization: the input image that most excites a unit, found by gradient ascent on the pixels.

    images = maximize_activation(net, "fc_3", range(10), pixel_range=dm.pixel_range)    # (10, 1, 28, 28)
    images = maximize_activation(net, "conv_2", [0, 3], init=last_epoch_images)          # warm start
    acts = unit_activation(net, "conv_2", images, [0, 3])                                # (2,)
    dominance = diagonal_dominance(cross_activations(net, "conv_2", images, [0, 3]))     # fraction of units
    r = weight_correlation(mlp.fc_1.weight[:16], maximize_activation(mlp, "fc_1", range(16)))

Pure functions on a plain ``nn.Module`` (no Lightning): they leave no hooks behind, touch no parameter's ``.grad``
or ``requires_grad``, restore every module's train/eval flag, and also work when called under
``torch.inference_mode()`` (as in Lightning's validation loop). Layer outputs are read with
``callbacks.hooks.capture_activations`` (the forward pass stops after the layer).

What a "unit" is: dimension 1 of the layer's output. For a ``(N, C, H, W)`` output (conv, ReLU, pool) it is a
channel, and the ``objective`` says which number of it is maximized: ``"neuron"`` (default) the channel at the
centre position ``(H // 2, W // 2)``, ``"channel"`` the mean of its map. For a ``(N, F)`` output (linear, flatten)
both mean the column; for the last ``nn.Linear`` of a classifier that is the pre-softmax logit.

Why the centre neuron by default: a channel's mean is, for a layer linear in the input (a first conv before its
ReLU), the filter's weight sum times the image's mean (away from the border), so its maximizer is a flat field
whatever the filter's pattern. The centre neuron sees one receptive field; its maximizer is the filter's pattern
(Lucid, Lucent and captum.optim offer both objectives for this reason).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.adam import adam

from ..hooks import LayerError, LayerProbe, capture_activations, check_layers, check_unit_range, dry_pass, eval_mode

__all__ = [
    "maximize_activation",
    "unit_activation",
    "cross_activations",
    "diagonal_dominance",
    "weight_correlation",
    "layer_units",
    "OBJECTIVES",
    "DEFAULT_STEPS",
    "DEFAULT_L2",
    "DEFAULT_TV",
    "DEFAULT_SCALE",
    "DEFAULT_ROTATE",
]

OBJECTIVES = ("neuron", "channel")
"""What is maximized for a unit with a spatial map: its centre position, or the mean of its map."""
DEFAULT_STEPS = 64
"""Default number of Adam steps of ``maximize_activation`` (and of the first ``actmax`` picture)."""
DEFAULT_L2 = 0.2
"""Default weight of the L2 pixel penalty (see ``maximize_activation``)."""
DEFAULT_TV = 0.7
"""Default weight of the total-variation penalty (see ``maximize_activation``)."""
ADAM = dict(amsgrad=False, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, maximize=False)
"""``torch.optim.Adam``'s defaults, for its functional update (``torch.optim.adam.adam``)."""
DEFAULT_SCALE = 0.1
"""Default random zoom: a factor in ``[1 / 1.1, 1.1]`` per image and step (see ``maximize_activation``)."""
DEFAULT_ROTATE = 10.0
"""Default random rotation in degrees, either way (see ``maximize_activation``)."""


# ----------------------------------------------------------------------------------------------- layer access
def _layer_output(net: nn.Module, layer: str, x: Tensor, probe: LayerProbe | None = None) -> Tensor:
    """Output ``(N, units, ...)`` of ``layer`` for ``x``, not detached; the forward pass stops after the layer
    (``probe``: a ``LayerProbe`` on ``layer`` kept across a loop of passes)."""
    if probe is None:
        out = capture_activations(net, x, [layer], detach=False, stop_after_last=True)[layer]
    else:
        out = probe.run(x)[layer]
    if not isinstance(out, Tensor) or out.dim() < 2:
        what = type(out).__name__ if not isinstance(out, Tensor) else f"a {out.dim()}-D tensor"
        raise LayerError(f"layer {layer!r} outputs {what}; activation maximization needs (N, units, ...)")
    return out


class _RedirectedReLU(torch.autograd.Function):
    """``relu(x)`` whose gradient is not stuck at zero for an image where the ReLU passes nothing back.

    Per image: where the exact ReLU gradient is non-zero anywhere, it is used unchanged. Where it is zero
    everywhere (the unit is dead on that image, e.g. a channel whose bias is negative on a dark start), the
    gradient passes through except where it would push an already negative input further down. Lucid's
    "redirected ReLU" (Olah et al., Feature Visualization, 2017); without it such units never move.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        positive = x > 0
        alive = (positive & grad.ne(0)).flatten(1).any(1)
        if grad.device.type == "cpu" and alive.all():  # the common case, exact for every image (no device sync)
            return grad * positive
        dead = ~alive.view(-1, *(1,) * (grad.dim() - 1))
        return grad * (positive | (dead & (grad > 0)))


def _redirect_relu_hook(module: nn.Module, inputs, output) -> Tensor | None:
    x = inputs[0] if inputs else None
    if not isinstance(x, Tensor) or x.dim() < 2 or not x.requires_grad or x.shape != output.shape:
        return None
    return _RedirectedReLU.apply(x)


class _redirected_relus:
    """Context manager: every ``nn.ReLU`` of ``net`` passes the redirected gradient; hooks removed on exit."""

    def __init__(self, net: nn.Module) -> None:
        self.net, self.handles = net, []

    def __enter__(self) -> None:
        try:
            for m in self.net.modules():
                if type(m) is nn.ReLU:
                    self.handles.append(m.register_forward_hook(_redirect_relu_hook))
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        while self.handles:
            self.handles.pop().remove()


def _place(net: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(net.parameters(), None)
    if p is None:
        p = next(net.buffers(), None)
    if p is None:
        return torch.device("cpu"), torch.float32
    return p.device, p.dtype if p.dtype.is_floating_point else torch.float32


def _units_of(net: nn.Module, layer: str, input_shape: tuple[int, ...], device, dtype) -> int:
    with torch.no_grad(), dry_pass(input_shape):
        return int(_layer_output(net, layer, torch.zeros(1, *input_shape, device=device, dtype=dtype)).shape[1])


def _as_units(units: Sequence[int]) -> list[int]:
    if isinstance(units, Tensor):
        units = units.reshape(-1).tolist()
    try:
        out = [operator.index(u) for u in units]
    except TypeError as e:
        raise ValueError(f"units must be a sequence of integer indices, got {units!r}") from e
    return out


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")


def _picked(out: Tensor, units: Tensor, objective: str) -> Tensor:
    """Activation of unit ``units[i]`` in sample ``i``: ``out[i, units[i]]`` at the centre of any spatial dims
    (``"neuron"``) or averaged over them (``"channel"``)."""
    picked = out[torch.arange(len(units), device=out.device), units]
    if picked.dim() == 1:
        return picked
    if objective == "channel":
        return picked.flatten(1).mean(1)
    return picked[(slice(None), *(s // 2 for s in picked.shape[1:]))]


def layer_units(net: nn.Module, layer: str, input_shape: tuple[int, int, int] = (1, 28, 28)) -> int:
    """Number of units (size of output dimension 1) of ``layer``, from one dry forward of a zero image.

    Raises:
        LayerError (a ``ValueError``): ``layer`` is not a submodule name; the message lists the valid names.
    """
    check_layers(net, [layer])
    device, dtype = _place(net)
    with torch.inference_mode(False), eval_mode(net):
        return _units_of(net, layer, tuple(input_shape), device, dtype)


def unit_activation(net: nn.Module, layer: str, x: Tensor, units: Sequence[int], objective: str = "neuron") -> Tensor:
    """Activation of unit ``units[i]`` of ``layer`` on image ``x[i]``, shape ``(len(units),)``, detached.

    The number ``maximize_activation`` maximizes with the same ``objective`` (centre neuron or channel mean for
    ``(N, C, H, W)`` outputs, the column for ``(N, F)``), computed in eval mode without gradients. To score one
    unit on many images pass ``[u] * len(x)``.
    """
    units = _as_units(units)
    _check_objective(objective)
    check_layers(net, [layer])
    if x.dim() < 2 or len(x) != len(units):
        raise ValueError(f"x must hold one image per unit: got x of shape {tuple(x.shape)} for {len(units)} units")
    device, dtype = _place(net)
    with torch.no_grad(), eval_mode(net):
        out = _layer_output(net, layer, x.to(device=device, dtype=dtype))
        check_unit_range(layer, units, int(out.shape[1]))
        return _picked(out, torch.tensor(units, device=device), objective).detach()


def cross_activations(
    net: nn.Module, layer: str, images: Tensor, units: Sequence[int], objective: str = "neuron"
) -> Tensor:
    """``(len(images), len(units))``: entry ``[i, j]`` is unit ``units[j]``'s activation on ``images[i]``.

    For the images ``maximize_activation`` made for ``units`` (one per unit, same order) the diagonal holds
    each unit's own image; ``diagonal_dominance`` scores it.
    """
    units = _as_units(units)
    n = len(images)
    x = images.repeat_interleave(len(units), 0)  # image i for every unit, then image i + 1, ...
    return unit_activation(net, layer, x, units * n, objective).view(n, len(units))


def diagonal_dominance(acts: Tensor) -> float:
    """Fraction of units ``j`` whose own image ``j`` drives them more than any other image of the set does,
    from a square ``cross_activations`` matrix (one image per unit). 1.0 for a single unit."""
    if acts.dim() != 2 or acts.shape[0] != acts.shape[1]:
        raise ValueError(f"need a square (images, units) matrix, one image per unit; got {tuple(acts.shape)}")
    n = acts.shape[0]
    if n == 1:
        return 1.0
    others = acts.masked_fill(torch.eye(n, dtype=torch.bool, device=acts.device), float("-inf")).max(0).values
    return float((acts.diagonal() > others).float().mean())


# ------------------------------------------------------------------------------------------------ regularizers
def _gaussian_kernel(sigma: float, channels: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    radius = max(1, math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k1 = torch.exp(-0.5 * (t / sigma) ** 2)
    k1 = k1 / k1.sum()
    k2 = torch.outer(k1, k1).to(device=device, dtype=dtype)
    return k2.expand(channels, 1, *k2.shape).contiguous()  # depthwise: (C, 1, k, k)


def _blur(x: Tensor, kernel: Tensor) -> Tensor:
    r = kernel.shape[-1] // 2
    return F.conv2d(F.pad(x, (r, r, r, r), mode="replicate"), kernel, groups=x.shape[1])


def _penalty_grad(z: Tensor, l2: float, tv: float, z0: Tensor | float = 0.0) -> Tensor:
    """Gradient, in closed form, of the penalty ``l2 * sum((z - z0) ** 2) + tv * sum(squared neighbour
    differences of z)``.

    Summed over the batch, with respect to ``z`` ``(N, C, H, W)``; neighbours are vertical and horizontal.
    """
    g = (2 * l2) * (z - z0)
    if tv:
        dh = (2 * tv) * (z[..., 1:, :] - z[..., :-1, :])
        dw = (2 * tv) * (z[..., :, 1:] - z[..., :, :-1])
        g[..., 1:, :] += dh
        g[..., :-1, :] -= dh
        g[..., :, 1:] += dw
        g[..., :, :-1] -= dw
    return g


def _transforms(
    steps: int, n: int, jitter: int, scale: float, rotate: float, gen: torch.Generator, size: tuple[int, int]
) -> Tensor | None:
    """Per step and image an affine map ``(steps, n, 2, 3)`` for ``F.affine_grid``: a shift of up to ``jitter``
    whole pixels, a zoom in ``[1 / (1 + scale), 1 + scale]`` and a rotation of up to ``rotate`` degrees; None
    when all are off. Drawn from ``gen`` up front, so a call is reproducible."""
    if not (jitter or scale or rotate):
        return None
    h, w = size
    shift = torch.randint(-jitter, jitter + 1, (steps, n, 2), generator=gen).double()
    shift = shift * 2 / torch.tensor([w, h], dtype=torch.float64)  # whole pixels in affine_grid's [-1, 1] units
    zoom = torch.exp((2 * torch.rand(steps, n, generator=gen, dtype=torch.float64) - 1) * math.log1p(scale))
    angle = (2 * torch.rand(steps, n, generator=gen, dtype=torch.float64) - 1) * math.radians(rotate)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin * h / w, shift[..., 0]], -1), torch.stack([sin * w / h, cos, shift[..., 1]], -1)], -2
    )
    return theta  # (steps, n, 2, 3)


def _warp(x: Tensor, theta: Tensor, background: Tensor | float) -> Tensor:
    """``x`` moved by the affine maps ``theta`` (bilinear), with ``background`` shown where it moved in from
    outside the image (not the wrap-around of ``torch.roll``). Whole-pixel shifts alone are exact."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + background


# ------------------------------------------------------------------------------------------------- the method
def maximize_activation(
    net: nn.Module,
    layer: str,
    units: Sequence[int],
    *,
    objective: str = "neuron",
    steps: int = DEFAULT_STEPS,
    lr: float = 0.05,
    pixel_range: tuple[float, float] = (0.0, 1.0),
    l2: float = DEFAULT_L2,
    tv: float = DEFAULT_TV,
    jitter: int = 1,
    scale: float = DEFAULT_SCALE,
    rotate: float = DEFAULT_ROTATE,
    blur_every: int = 16,
    blur_sigma: float = 0.5,
    prior_mean: Tensor | None = None,
    init: Tensor | None = None,
    input_shape: tuple[int, int, int] = (1, 28, 28),
    seed: int = 0,
) -> Tensor:
    """Images ``(len(units), C, H, W)`` where image ``i`` maximizes unit ``units[i]`` of ``layer``.

    All units are optimized together as one batch (the net runs in eval mode, so the images do not interact).
    Every step, for each image ``x`` and its unit ``u``, with ``z = (x - mid) / half`` the pixels measured from
    the midpoint of ``pixel_range`` in units of its half-width and ``T`` a random small shift, zoom and rotation::

        ascent  = d act_u(T(x)) / dz,  rescaled to mean |ascent| = 1 per image
        descent = d/dz [ l2 * sum((z - z_ref) ** 2) + tv * sum((neighbour differences of z) ** 2) ]
        Adam step on x along ascent - descent, blur every ``blur_every`` steps, clamp x to ``pixel_range``

    ``z_ref`` is mid-grey, or the data's mean image when ``prior_mean`` is given. The transformations make the
    image work for the unit at neighbouring positions, sizes and angles, so it shows the feature rather than one
    pixel pattern that happens to excite it (Lucid's transformation robustness); where ``T`` moves the image,
    the background comes in (the low end of ``pixel_range``, or the mean border value of ``prior_mean``), never
    the wrapped-around opposite edge.

    Where a ``nn.ReLU`` of the net passes no gradient back for an image at all (the unit is dead on it, as a
    channel with a negative bias can be on the start image), its gradient is redirected for that image: passed
    through except where it would push negative inputs further down (Lucid's "redirected ReLU"); elsewhere
    gradients are exact.

    The rescaling makes the penalty weights mean the same for every layer and at every stage of training, and
    measuring pixels in half-ranges makes them mean the same for ``[0, 1]`` and normalized pixels (Adam ignores
    the gradient's overall scale, so ``lr`` stays in pixel units). ``benchmarks/actmax_quality.py`` measures
    the choices (objective, transformations, mean-image prior) on a trained LeNet-5.

    Args:
        net: the model; input ``(N, *input_shape)``. Left as found: mode, hooks, ``.grad``, ``requires_grad``.
        layer: a submodule name, as in ``dict(net.named_modules())`` (e.g. ``"conv_2"``, ``"relu_1"``, ``"fc_3"``).
        units: unit indices, repeats allowed: dimension 1 of the layer's output.
        objective: for ``(N, C, H, W)`` outputs, ``"neuron"`` maximizes channel ``u`` at the centre position
            ``(H // 2, W // 2)`` (one receptive field: the image shows the unit's pattern), ``"channel"`` the mean
            of its map (the pattern wherever it fits, which for a layer linear in the input is a flat field).
            For ``(N, F)`` outputs both mean column ``u`` (for the last ``nn.Linear`` the pre-softmax logit).
        steps: number of Adam steps (>= 1).
        lr: Adam learning rate in pixel units (Adam moves each pixel by at most about ``lr`` per step).
        pixel_range: ``(low, high)`` of valid input pixels, e.g. the datamodule's ``pixel_range``; ``x`` is
            clamped to it after every step; ``low`` is the background.
        l2: weight of the L2 pull towards mid-grey (or ``prior_mean``): pixels that do not help the unit go back.
        tv: weight of the (squared) total-variation penalty: it suppresses high-frequency checkerboards.
        jitter: random shift of up to ``jitter`` whole pixels in each direction, per image and step (0: none).
        scale: random zoom by a factor in ``[1 / (1 + scale), 1 + scale]`` per image and step (0: none).
        rotate: random rotation of up to ``rotate`` degrees either way per image and step (0: none).
        blur_every: every ``blur_every`` steps (never after the last step) the images are smoothed by a
            Gaussian of ``blur_sigma`` pixels, which removes the finest noise Adam lets through (0: never).
        blur_sigma: standard deviation of that blur in pixels (> 0).
        prior_mean: optional ``(C, H, W)`` image, e.g. the training set's mean image: the start and the L2
            pull are centred on it instead of mid-grey, and its mean border value is the background.
        init: optional start ``(len(units), *input_shape)`` (e.g. last epoch's result, for a warm start); moved
            to the net's device and clamped to ``pixel_range``; NaNs become the midpoint. Not modified.
        input_shape: ``(C, H, W)`` of one input image.
        seed: seeds a private ``torch.Generator`` for the start (mid-grey or ``prior_mean``, plus Gaussian noise
            of 5% of the half-range) and the transformations; the global RNG is not touched. The same call gives
            the same images (on the same device).

    Returns:
        A detached, finite tensor ``(len(units), *input_shape)`` on the net's device, within ``pixel_range``.

    Raises:
        LayerError (a ``ValueError``): unknown ``layer`` (lists the valid names), a unit index out of range (names
            the layer and its valid range, found by one dry forward pass of a zero image), empty ``units``.
        ValueError: an unknown ``objective``, ``steps < 1`` or another invalid option, ``init`` or
            ``prior_mean`` of the wrong shape.
    """
    units = _as_units(units)
    _check_objective(objective)
    check_layers(net, [layer])
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    lo, hi = (float(v) for v in pixel_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"pixel_range must be finite (low, high) with low < high, got {pixel_range!r}")
    if not lr > 0 or not l2 >= 0 or not tv >= 0:
        raise ValueError(f"need lr > 0, l2 >= 0 and tv >= 0, got lr={lr!r}, l2={l2!r}, tv={tv!r}")
    if not isinstance(jitter, int) or jitter < 0 or not isinstance(blur_every, int) or blur_every < 0:
        raise ValueError(
            f"jitter and blur_every must be integers >= 0, got jitter={jitter!r}, blur_every={blur_every!r}"
        )
    if not (0 <= scale < 1 and 0 <= rotate <= 180):
        raise ValueError(f"need 0 <= scale < 1 and 0 <= rotate <= 180, got scale={scale!r}, rotate={rotate!r}")
    if blur_every and not blur_sigma > 0:
        raise ValueError(f"blur_sigma must be > 0 when blur_every > 0, got {blur_sigma!r}")
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape!r}")
    shape = (len(units), *input_shape)
    if init is not None and tuple(init.shape) != shape:
        raise ValueError(f"init must have shape {shape} (one image per unit), got {tuple(init.shape)}")
    if prior_mean is not None and tuple(prior_mean.shape) != input_shape:
        raise ValueError(f"prior_mean must have shape {input_shape} (one input image), got {tuple(prior_mean.shape)}")

    device, dtype = _place(net)
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    gen = torch.Generator().manual_seed(seed)
    # Under Lightning's validation loop inference mode is on: leave it, and build every tensor afresh inside.
    with torch.inference_mode(False), torch.enable_grad(), eval_mode(net), _redirected_relus(net):
        check_unit_range(layer, units, _units_of(net, layer, input_shape, device, dtype))
        noise = 0.05 * half * torch.randn(shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
        if prior_mean is None:
            ref, background = torch.tensor(mid, device=device, dtype=dtype), lo
        else:
            ref = prior_mean.detach().to(device=device, dtype=dtype).clone()
            border = torch.cat([ref[:, 0], ref[:, -1], ref[:, :, 0], ref[:, :, -1]], -1)  # (C, 2H + 2W)
            background = border.mean(-1).view(-1, 1, 1)
        if init is None:
            x = ref + noise
        else:
            x = torch.nan_to_num(init.detach().to(device=device, dtype=dtype).clone(), nan=mid)
        x = x.clamp_(lo, hi).requires_grad_(True)
        z_ref = (ref - mid) / half
        target = torch.tensor(units, device=device)
        thetas = _transforms(steps, len(units), jitter, scale, rotate, gen, input_shape[-2:])
        kernel = _gaussian_kernel(blur_sigma, input_shape[0], device, dtype) if blur_every else None
        # torch.optim.Adam's own update, called as a function: Optimizer.step's per-call accelerator check would
        # cost more than the update on a small net
        moments, count = (torch.zeros_like(x), torch.zeros_like(x)), torch.tensor(0.0)
        with LayerProbe(net, [layer], detach=False, stop_after_last=True) as probe:
            for step in range(steps):
                xin = _warp(x, thetas[step].to(device), background) if thetas is not None else x
                act = _picked(_layer_output(net, layer, xin, probe), target, objective)
                (ascent,) = torch.autograd.grad(act.sum(), x)
                ascent = ascent / ascent.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
                with torch.no_grad():
                    descent = _penalty_grad((x - mid) / half, l2, tv, z_ref)  # d penalty / dz: both in z units
                    adam([x], [descent - ascent], [moments[0]], [moments[1]], [], [count], **ADAM, lr=lr)
                    if kernel is not None and (step + 1) % blur_every == 0 and step + 1 < steps:
                        x.copy_(_blur(x, kernel))
                    x.clamp_(lo, hi)
        return torch.nan_to_num(x.detach(), nan=mid).clamp_(lo, hi)


# ------------------------------------------------------------------------------------------------ comparisons
def weight_correlation(weights: Tensor, images: Tensor) -> Tensor:
    """Pearson correlation between each unit's weight image and its actmax image, shape ``(U,)``.

    ``weights`` ``(U, D)`` (e.g. ``mlp.fc_1.weight[units]``) and ``images`` ``(U, C, H, W)`` with ``C * H * W
    = D`` (from ``maximize_activation(mlp, "fc_1", units)``) are flattened per unit; any shapes with ``U`` rows
    of the same size work. A constant row (zero variance) gives 0.

    For a first-layer unit of an MLP the input is ``w . x + b``, so its gradient is ``w`` everywhere and the
    actmax image is ``w`` pushed towards the ends of the pixel range, smoothed by the priors.
    """
    w = weights.detach().flatten(1).double()
    x = images.detach().flatten(1).double().to(w.device)
    if w.shape != x.shape:
        raise ValueError(
            f"weights and images must have one row of equal size per unit: got {tuple(weights.shape)} "
            f"and {tuple(images.shape)}"
        )
    w = w - w.mean(1, keepdim=True)
    x = x - x.mean(1, keepdim=True)
    denom = w.norm(dim=1) * x.norm(dim=1)
    r = (w * x).sum(1) / denom.clamp_min(torch.finfo(torch.float64).tiny)
    r = torch.where(denom > 0, r, torch.zeros_like(r)).clamp_(-1, 1)
    return r.to(weights.dtype if weights.is_floating_point() else torch.float32)
