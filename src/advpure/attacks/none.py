"""No attack: clean evaluation only."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advpure.config.enums import Norm


class NoAttack:
    """Returns the clean images unchanged (``x_adv = x``)."""

    def __init__(
        self,
        norm: Norm = Norm.Linf,
        eps: float = 0.0,
        n_iter: int | None = None,
        n_eot: int | None = None,
    ):
        self.norm = Norm(norm)
        self.eps = 0.0

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.detach().clone()

    def settings(self) -> dict[str, Any]:
        return {"name": "none", "norm": self.norm.value, "eps": 0.0}
