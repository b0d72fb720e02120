"""Continuous VP purifiers on a uniform time grid (the SDE and the probability-flow ODE share it).

Forward: x_t* = sqrt(alpha_bar(t*)) x + sigma(t*) z. Reverse: n = round(t* / dt) steps of
h = t* / n; step i starts at t = t* - i h (never at t = 0, where the score is singular).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advpure.config.enums import GradMode
from advpure.diffusion.backbone import EpsilonBackbone
from advpure.diffusion.schedule import VPSchedule
from advpure.errors import ConfigError
from advpure.purifiers.base import ReversePurifier


class VPGridPurifier(ReversePurifier):
    """A :class:`ReversePurifier` on the VP-SDE (beta_min, beta_max) with a uniform step ``dt``."""

    def __init__(
        self,
        backbone: EpsilonBackbone,
        t_star: float,
        dt: float,
        beta_min: float,
        beta_max: float,
        grad_mode: GradMode,
        seed: int | None,
        surrogate: nn.Module | None,
        checkpoint_steps: bool,
    ) -> None:
        super().__init__(backbone, t_star, grad_mode, seed, surrogate, checkpoint_steps)
        if not 0.0 < float(dt) <= self.t_star:
            raise ConfigError("purifier.dt", f"{dt!r} is out of range", f"set a value in (0, t_star={self.t_star}]")
        self.dt = float(dt)
        self.schedule = VPSchedule(beta_min, beta_max)

    @property
    def n_steps(self) -> int:
        """round(t* / dt), at least 1."""
        return max(1, round(self.t_star / self.dt))

    @property
    def step_size(self) -> float:
        """h = t* / n_steps (equals dt when t* is a multiple of dt)."""
        return self.t_star / self.n_steps

    def step_time(self, i: int) -> float:
        """Time t at which step ``i`` starts."""
        return self.t_star - i * self.step_size

    def diffuse(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        t_star = torch.tensor(self.t_star, dtype=x.dtype, device=x.device)
        return self.schedule.diffuse(x, t_star, noise)

    def eps_and_coefficients(self, t: float, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(eps_theta(x, t), beta(t), sigma(t)) with t broadcast over the batch."""
        t_tensor = torch.tensor(t, dtype=x.dtype, device=x.device)
        eps = self.backbone(x, t_tensor.expand(x.shape[0]))
        return eps, self.schedule.beta(t_tensor), self.schedule.sigma(t_tensor)

    def grid_settings(self) -> dict[str, Any]:
        return {"dt": self.dt, "beta_min": self.schedule.beta_min, "beta_max": self.schedule.beta_max}
