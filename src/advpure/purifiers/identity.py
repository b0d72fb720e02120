"""No purification: the undefended classifier, through the same interface as every purifier."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advpure.config.enums import GradMode


class IdentityPurifier(nn.Module):
    """Returns its input: (B, C, H, W) in [0, 1] -> the same tensor."""

    uses_backbone = False

    def __init__(self, backbone: Any = None, grad_mode: GradMode = GradMode.full) -> None:
        super().__init__()
        self.grad_mode = GradMode(grad_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def settings(self) -> dict[str, Any]:
        return {"name": "none", "grad_mode": self.grad_mode.value}
