"""Exponential moving average of a module's parameters (buffers copied)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """Holds ``shadow``, a frozen copy of ``model`` updated as ``shadow = d shadow + (1 - d) param``."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        shadow_params = list(self.shadow.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(shadow_params, params, 1.0 - self.decay)
        for shadow_buffer, buffer in zip(self.shadow.buffers(), model.buffers(), strict=True):
            shadow_buffer.copy_(buffer)
