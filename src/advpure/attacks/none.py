"""No attack: clean evaluation only."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advpure.attacks.base import Attack, Trace
from advpure.config.enums import Norm


class NoAttack(Attack):
    """Returns the clean images unchanged (``x_adv = x``); its verdict is one draw of the model
    on the clean images (correct = robust), so the results' own-verdict row is a clean accuracy.
    ``n_iter`` and ``n_eot`` are accepted for a uniform command line and ignored."""

    name = "none"
    verdict_rule = "no attack: robust = one draw of the model classifies the clean image correctly"
    selection = "no attack: the adversarial example is the clean image"
    uses_gradients = False

    def __init__(
        self,
        norm: Norm = Norm.Linf,
        eps: float = 0.0,
        n_iter: int | None = None,
        n_eot: int | None = None,
    ):
        super().__init__(0.0, norm)

    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.last_verdict = model(x).argmax(1) == y
        self.last_trace = Trace().data
        self.last_checks = None
        return x.detach().clone()

    def options(self) -> dict[str, Any]:
        return {}
