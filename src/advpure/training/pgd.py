"""Projected gradient descent (Madry et al., 2018) for adversarial training."""

from __future__ import annotations

import torch
from torch import nn

from advpure.attacks.pgd_eot import PGDEOT
from advpure.config.enums import Norm


def pgd_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: Norm,
    eps: float,
    step_size: float,
    steps: int,
) -> torch.Tensor:
    """Maximize cross-entropy in the eps-ball from a random start (torch's global generator, so
    each training batch gets a fresh start); x, result (B, C, H, W) in [0, 1]. One PGD-EOT run
    with a single pass per gradient."""
    attack = PGDEOT(eps, norm=norm, n_iter=steps, n_eot=1, step_size=step_size)
    return attack.run_once(model, x, y, generator=None)
