"""Dead units (the numbers behind ``callbacks.activations``' ``dead_fraction`` scalars): units that output zero
for every sample and position of a fixed set get no gradient and do not recover on their own.

    dead = dead_units(acts)        # (U,) bool from (N, U) or (N, C, H, W) activations
    dead_fraction(acts)            # their share, a float

Plain PyTorch (no Lightning).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dead_units", "dead_fraction"]


def dead_units(acts: Tensor) -> Tensor:
    """``(U,)`` bool: units whose activation is zero (or below) for every sample and position of ``acts``
    (``(N, U)`` or ``(N, C, H, W)``). Non-finite activations do not count as alive."""
    a = torch.nan_to_num(acts.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
    per_unit = a.transpose(0, 1).flatten(1)  # (U, N * H * W)
    return ~(per_unit > 0).any(1)


def dead_fraction(acts: Tensor) -> float:
    """Fraction of dead units (see ``dead_units``)."""
    return float(dead_units(acts).float().mean()) if acts.numel() else 0.0
