"""Projected gradient descent (Madry et al., 2018) for adversarial training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advpure.attacks.geometry import GEOMETRIES, clip_to_image
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
    """Maximize cross-entropy in the eps-ball from a random start (torch's global generator);
    x, result (B, C, H, W) in [0, 1]."""
    geometry = GEOMETRIES[Norm(norm)]
    delta = clip_to_image(x, geometry.start(x, eps, None)).detach()
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = clip_to_image(x, geometry.project(delta.detach() + step_size * geometry.ascent(grad), eps)).detach()
    return (x + delta).detach()
