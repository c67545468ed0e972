"""Grad-CAM++ (Chattopadhay et al., 2018): Grad-CAM with each channel's gradient weighted per position, so that
several instances of a class in one image all count. Only the channel weights differ from ``gradcam.grad_cam``.

    maps = grad_cam_pp(net, "relu_2", images, targets)   # (N, H, W) in [0, 1]
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from .gradcam import grad_cam

__all__ = ["gradcam_pp_weights", "grad_cam_pp"]


def gradcam_pp_weights(grad: Tensor, acts: Tensor) -> Tensor:
    """``(N, C, 1, 1)``: ``sum_ij relu(g_ij) a_ij`` with ``a_ij = g^2 / (2 g^2 + sum_ab A_ab g^3)`` (the paper's
    closed form for an exponential score, as pytorch-grad-cam computes it)."""
    g2 = grad.pow(2)
    alpha = g2 / (2 * g2 + acts.sum((2, 3), keepdim=True) * g2 * grad + 1e-7)
    alpha = torch.where(grad != 0, alpha, torch.zeros_like(alpha))
    return (grad.clamp_min(0) * alpha).sum((2, 3), keepdim=True)


grad_cam_pp = functools.partial(grad_cam, cam_weights=gradcam_pp_weights)
