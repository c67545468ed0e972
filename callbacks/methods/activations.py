"""Dead units (the numbers behind ``callbacks.activations``' ``dead_fraction`` scalars): units that output zero
for every sample and position of a fixed set get no gradient and do not recover on their own.

    dead = dead_units(acts)        # (U,) bool from (N, U) or (N, C, H, W) activations
    dead_fraction(acts)            # their share, a float
    silent_fraction(acts)          # (U,) per unit: the share of samples on which it is zero everywhere

Plain PyTorch (no Lightning).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dead_units", "dead_fraction", "silent_fraction"]


def dead_units(acts: Tensor) -> Tensor:
    """``(U,)`` bool: units whose activation is zero (or below) for every sample and position of ``acts``
    (``(N, U)`` or ``(N, C, H, W)``). Non-finite activations do not count as alive."""
    a = torch.nan_to_num(acts.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
    per_unit = a.transpose(0, 1).flatten(1)  # (U, N * H * W)
    return ~(per_unit > 0).any(1)


def dead_fraction(acts: Tensor) -> float:
    """Fraction of dead units (see ``dead_units``)."""
    return float(dead_units(acts).float().mean()) if acts.numel() else 0.0


def silent_fraction(acts: Tensor) -> Tensor:
    """``(U,)`` float: for each unit, the fraction of samples of ``acts`` (``(N, U)`` or ``(N, C, H, W)``) on which it
    is zero (or below) at every position; 1 for a dead unit (``dead_units``). For a post-ReLU layer the per-sample
    spatial means that the fixed-set pass keeps give the same numbers as the maps (all values are >= 0)."""
    a = torch.nan_to_num(acts.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
    fires = (a.flatten(2) > 0).any(2) if a.dim() > 2 else a > 0  # (N, U)
    return 1 - fires.float().mean(0) if len(a) else torch.zeros(a.shape[1] if a.dim() > 1 else 0)
