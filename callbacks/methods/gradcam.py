"""Grad-CAM (Selvaraju et al., 2017): where in each image a conv layer holds the evidence for a class.

    maps = grad_cam(net, "relu_2", images, targets)     # (N, H, W) in [0, 1], the plain stretch (as Captum)
    rf = receptive_field(net, "relu_2", (1, 28, 28))     # methods.top_activations
    maps = grad_cam(net, "relu_2", images, targets, field=rf)   # each cell at its receptive field's centre

For image ``n`` and target class ``k = targets[n]``, with ``A`` the layer's output ``(C, h, w)`` and ``y_k`` the
net's logit for ``k``: each channel's weight is the spatially averaged gradient ``a_c = mean_ij dy_k / dA_c(i, j)``,
and the map is ``ReLU(sum_c a_c A_c)`` (``h x w``): the positions whose features raise the class's score. It is
upsampled (bilinear) to the image size and divided by its maximum, so 1 is the image's strongest evidence and 0
none (a map with no positive evidence stays all zero). A late layer gives coarse but class-specific maps.

Where the map is drawn matters. The standard resize (Captum's ``LayerAttribution.interpolate``, pytorch-grad-cam)
stretches the ``h x w`` cells over the whole image, but a valid conv's cells are centred on a smaller part of it:
LeNet-5's relu_2 cells (10 x 10) see pixels centred at 4.5, 6.5, ..., 22.5 of a 28 px image, which the stretch puts
at 0.9 .. 26.1, pushing evidence found at a garment's edge out onto the background. With ``field`` (the layer's
``ReceptiveField``) each cell's value is placed at its receptive field's centre ``start + r * stride``, linearly
interpolated between centres and fading to zero one stride beyond the outermost ones (``place_at_field``).

Plain PyTorch (no Lightning), as the other methods: the activation is read with ``callbacks.hooks`` (hooks removed
also on error), the net runs in eval mode with every module's train/eval flag restored, the gradient is taken with
``torch.autograd.grad`` (no parameter's ``.grad`` or ``requires_grad`` is touched), and it works under
``torch.no_grad()`` and ``torch.inference_mode()``, as in Lightning's validation loop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hooks import LayerError, check_images, check_layers, eval_mode, forward_with_activations
from .top_activations import ReceptiveField

__all__ = ["grad_cam", "gradcam_weights", "place_at_field"]


def _tent(size: int, cells: int, start: float, stride: float, device) -> Tensor:
    """``(size, cells)`` linear-interpolation weights: pixel ``i`` takes ``max(0, 1 - |u - j|)`` of cell ``j``,
    where ``u = (i - start) / stride`` is the pixel's position in cell units (cell ``j`` centred at ``u = j``)."""
    u = (torch.arange(size, device=device, dtype=torch.float32) - start) / stride  # (size,)
    return (1 - (u[:, None] - torch.arange(cells, device=device, dtype=torch.float32)).abs()).clamp_min(0)


def place_at_field(cams: Tensor, field: ReceptiveField, size: tuple[int, int]) -> Tensor:
    """Maps ``(N, h, w)`` of a layer's cells as ``(N, H, W)`` images of ``size``, cell ``(r, c)`` drawn at its
    receptive field's centre ``(start + r * stride, start + c * stride)`` (pixel ``i`` centred at ``i``), linearly
    between centres, falling to zero one stride beyond the outermost centres."""
    rows = _tent(size[0], cams.shape[-2], field.start, field.stride, cams.device)  # (H, h)
    cols = _tent(size[1], cams.shape[-1], field.start, field.stride, cams.device)  # (W, w)
    return rows @ cams.float() @ cols.T  # (N, H, W)


def gradcam_weights(grad: Tensor, acts: Tensor) -> Tensor:
    """Grad-CAM's channel weights ``(N, C, 1, 1)``: the spatially averaged gradient of the class score, from the
    gradient and the activations ``(N, C, h, w)``. The seam a variant replaces (``gradcam_pp``)."""
    return grad.mean((2, 3), keepdim=True)


def grad_cam(
    net: nn.Module,
    layer: str,
    images: Tensor,
    targets: Tensor,
    field: ReceptiveField | None = None,
    cam_weights: Callable[[Tensor, Tensor], Tensor] = gradcam_weights,
) -> Tensor:
    """Grad-CAM maps ``(N, H, W)`` float32 in [0, 1] of ``layer`` for ``images`` ``(N, C, H, W)`` and the classes
    ``targets`` ``(N,)`` (one per image), on the images' device. Without ``field`` the ``h x w`` map is stretched
    over the image (bilinear, the standard resize); with the layer's ``field`` each cell is placed at its receptive
    field's centre (``place_at_field``). ``cam_weights(grad, acts)``: the channel weights (Grad-CAM's by default).

    Raises:
        ValueError: ``images`` not a 4-D float tensor; ``targets`` not ``N`` class indices of the net's output.
        LayerError (a ``ValueError``): unknown ``layer`` (the message lists the valid names), or a layer whose
            output is not ``(N, C, h, w)``.
    """
    check_images(images)
    if not isinstance(layer, str):
        raise LayerError(f"layer must be a submodule name (str), got {layer!r}")
    layer = check_layers(net, [layer])[0]
    targets = torch.as_tensor(targets, device=images.device).long().flatten()
    if len(targets) != len(images):
        raise ValueError(f"targets must hold one class per image: {len(images)} images, {len(targets)} targets")
    with torch.inference_mode(False), torch.enable_grad(), eval_mode(net):
        x = images.detach().clone().requires_grad_(True)  # a normal tensor, and every activation depends on it
        logits, acts = forward_with_activations(net, x, [layer], detach=False)
        a = acts[layer]  # (N, C, h, w)
        if not isinstance(a, Tensor) or a.dim() != 4:
            shape = tuple(a.shape[1:]) if isinstance(a, Tensor) else type(a).__name__
            raise LayerError(f"Grad-CAM needs a spatial layer with (C, h, w) outputs; {layer!r} gives {shape}")
        if logits.dim() != 2 or not bool(((targets >= 0) & (targets < logits.shape[1])).all()):
            raise ValueError(f"targets must be class indices in 0..{logits.shape[-1] - 1}, got {targets.tolist()}")
        # one backward pass for every image (independent in eval mode); targets cloned: no inference tensor
        score = logits.gather(1, targets.clone()[:, None]).sum()
        (grad,) = torch.autograd.grad(score, a, allow_unused=True)  # (N, C, h, w)
    if grad is None:  # the class's logit does not depend on the layer
        grad = torch.zeros_like(a)
    weights = cam_weights(grad.detach().float(), a.detach().float())  # (N, C, 1, 1)
    cam = F.relu((weights * a.detach().float()).sum(1, keepdim=True))  # (N, 1, h, w)
    if field is None:
        cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]  # (N, H, W)
    else:
        cam = place_at_field(cam[:, 0], field, tuple(images.shape[-2:]))  # (N, H, W)
    top = cam.flatten(1).amax(1).clamp_min(torch.finfo(cam.dtype).tiny)[:, None, None]  # (N, 1, 1)
    return (cam / top).clamp(0, 1)
