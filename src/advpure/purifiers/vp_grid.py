"""Continuous VP purifiers on a uniform time grid (the SDE and the probability-flow ODE share it).

Forward: x_t* = sqrt(alpha_bar(t*)) x + sigma(t*) z. Reverse: n = round(t* / dt) steps of
h = t* / n; step i starts at t = t* - i h (never at t = 0, where the score is singular).
"""

from __future__ import annotations

from typing import Any

import torch
from typing_extensions import Unpack

from advpure.diffusion.backbone import EpsilonBackbone
from advpure.diffusion.schedule import VPSchedule
from advpure.errors import ConfigError
from advpure.purifiers.base import ReverseOptions, ReversePurifier


class VPGridOptions(ReverseOptions, total=False):
    """What DiffPure and DiffPureODE forward unchanged, ``**options: Unpack[VPGridOptions]``: the
    grid's options (:class:`VPGridPurifier` documents them and declares their defaults) and every
    reverse purifier's (:class:`ReverseOptions`)."""

    t_star: float
    dt: float
    beta_min: float
    beta_max: float


class VPGridPurifier(ReversePurifier):
    """A :class:`ReversePurifier` on the VP-SDE (beta_min, beta_max) with a uniform step ``dt``.

    Args:
        backbone: ``(x in [-1, 1], t in [0, 1]) -> eps``, called at the grid's times t in (0, t*].

    Keyword options (:class:`VPGridOptions`; the SDE and the ODE take and forward them):
        t_star: diffusion time in (0, 1] (published: 0.1 for Linf, 0.075 for L2 on CIFAR-10).
        dt: solver step in (0, t*] (published 1e-3: t* = 0.1 is 100 steps); the grid is uniform
            with round(t* / dt) steps.
        beta_min, beta_max: VP-SDE coefficients, 0 < beta_min < beta_max (0.1, 20).
        grad_mode, seed, surrogate, checkpoint_steps: see :class:`ReversePurifier`.

    Shapes: x (B, C, H, W) in [0, 1] -> (B, C, H, W) in [0, 1].
    """

    def __init__(
        self,
        backbone: EpsilonBackbone,
        *,
        t_star: float = 0.1,
        dt: float = 1e-3,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        **options: Unpack[ReverseOptions],
    ) -> None:
        super().__init__(backbone, t_star=t_star, **options)
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
