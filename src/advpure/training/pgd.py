"""Projected gradient descent (Madry et al., 2018) for adversarial training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advpure.config.enums import Norm


def project(delta: torch.Tensor, norm: Norm, eps: float) -> torch.Tensor:
    """Project perturbations (B, ...) onto the ``norm`` ball of radius ``eps``."""
    if norm == Norm.Linf:
        return delta.clamp(-eps, eps)
    flat = delta.flatten(1)
    scale = (eps / flat.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
    return (flat * scale[:, None]).view_as(delta)


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
    """Maximize cross-entropy in the eps-ball from a random start; x, result (B, C, H, W) in [0, 1]."""
    norm = Norm(norm)
    if norm == Norm.Linf:
        delta = torch.empty_like(x).uniform_(-eps, eps)
    else:
        delta = project(torch.randn_like(x) * eps, norm, eps)
    delta = ((x + delta).clamp(0, 1) - x).detach()
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        if norm == Norm.Linf:
            step = step_size * grad.sign()
        else:
            step = step_size * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.ndim - 1))
        delta = project(delta.detach() + step, norm, eps)
        delta = ((x + delta).clamp(0, 1) - x).detach()
    return (x + delta).detach()
