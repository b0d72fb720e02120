"""No purification: the undefended classifier, through the same interface as every purifier."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advpure.config.enums import GradMode
from advpure.purifiers.noise import NoiseSource


class IdentityPurifier(nn.Module):
    """Returns its input: (B, C, H, W) in [0, 1] -> the same tensor (exact gradient: identity).

    A :class:`~advpure.purifiers.protocol.Purifier` like every other; ``backbone`` is accepted and
    ignored (``uses_backbone`` is False: no diffusion model is loaded for it)."""

    name = "none"
    uses_backbone = False
    supports_adjoint = False
    supports_guidance = False

    def __init__(self, backbone: Any = None, grad_mode: GradMode = GradMode.full) -> None:
        super().__init__()
        self.grad_mode = GradMode(grad_mode)

    def forward(self, x: torch.Tensor, noise: NoiseSource | None = None) -> torch.Tensor:
        return x

    def purify_copies(self, x: torch.Tensor, n_copies: int, noise: NoiseSource | None = None) -> torch.Tensor:
        """x (B, C, H, W) -> (K, B, C, H, W), K identical copies."""
        return x.unsqueeze(0).expand(n_copies, *x.shape)

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "grad_mode": self.grad_mode.value, "gradient_is_approximation": False}
