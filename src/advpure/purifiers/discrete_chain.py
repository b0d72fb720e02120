"""Purifiers whose reverse chain visits steps of the discrete DDPM schedule (the DDPM chains of
DiffPure-DDPM, GDMP and AGDM, and MimicDiffusion's DDIM chain share it).

Steps are 0-indexed: step s has alpha_bar_s = prod_{j<=s} (1 - beta_j), and the backbone sees
t = (s + 1) / T there, as in training. A chain that starts at (1-based) step n begins from
x_{n-1} = sqrt(alpha_bar_{n-1}) x + sqrt(1 - alpha_bar_{n-1}) z and, with stride k, visits
n - 1, n - 1 - k, ... down to x_0 (alpha_bar = 1).
"""

from __future__ import annotations

from typing import Any

import torch
from typing_extensions import Unpack

from advpure.diffusion.backbone import EpsilonBackbone
from advpure.diffusion.schedule import DiscreteSchedule
from advpure.errors import ConfigError
from advpure.purifiers.base import ReverseOptions, ReversePurifier


class DiscreteChainOptions(ReverseOptions, total=False):
    """The options a discrete-chain variant forwards, ``**options: Unpack[DiscreteChainOptions]``;
    :class:`DiscreteChainPurifier` documents them and declares their defaults."""

    beta_start: float
    beta_end: float
    num_timesteps: int


class DiscreteChainPurifier(ReversePurifier):
    """A :class:`ReversePurifier` on the linear DDPM schedule (``beta_start``, ``beta_end``, T).

    Args:
        backbone: ``(x in [-1, 1], t in [0, 1]) -> eps``; called with t = (s + 1) / T at step s.
        t_star: diffusion time in (0, 1] (keyword; each variant declares its published default).

    Keyword options (:class:`DiscreteChainOptions`; every variant takes and forwards them):
        beta_start, beta_end, num_timesteps: the linear DDPM schedule, 0 < beta_start < beta_end < 1
            and T >= 2 (1e-4, 0.02, 1000: the CIFAR-10 DDPM's).
        grad_mode, seed, surrogate, checkpoint_steps: see :class:`ReversePurifier`.

    A variant sets ``start_step`` (1-based, in [1, T]; :meth:`step_at` rounds a time to one)
    before it lays out its :meth:`chain`; :meth:`diffuse` diffuses to that step.

    Shapes: x (B, C, H, W) in [0, 1] -> (B, C, H, W) in [0, 1].
    """

    start_step: int  # the chain starts from x_{start_step - 1}

    def __init__(
        self,
        backbone: EpsilonBackbone,
        *,
        t_star: float,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        num_timesteps: int = 1000,
        **options: Unpack[ReverseOptions],
    ) -> None:
        super().__init__(backbone, t_star, **options)
        self.schedule = DiscreteSchedule(beta_start, beta_end, num_timesteps)

    def step_at(self, t: float) -> int:
        """The 1-based step round(T t) a chain diffused to time t in (0, 1] starts at;
        ``ConfigError`` on ``purifier.t_star`` when it rounds to 0."""
        num_timesteps = self.schedule.num_timesteps
        step = round(num_timesteps * t)
        if step < 1:
            raise ConfigError(
                "purifier.t_star",
                f"{t!r} rounds to step 0 of {num_timesteps}",
                f"set t_star >= {0.5 / num_timesteps:.4g}",
            )
        return step

    def chain(self, stride: int) -> list[tuple[int, float, float]]:
        """The steps visited from ``start_step`` every ``stride``-th step, in order: (s, alpha_bar_s,
        alpha_bar_s'), s' the next visited step (alpha_bar 1 after the last: x_0), in float64.
        ``ConfigError`` on ``purifier.stride`` unless it is an integer >= 1."""
        if stride < 1:
            raise ConfigError("purifier.stride", f"{stride!r} is out of range", "set an integer >= 1")
        alpha_bars = self.schedule.alpha_bars.tolist()
        visited = list(range(self.start_step - 1, -1, -stride))
        targets = [*visited[1:], -1]
        return [
            (s, alpha_bars[s], 1.0 if s_next < 0 else alpha_bars[s_next])
            for s, s_next in zip(visited, targets, strict=True)
        ]

    def diffuse(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in [-1, 1], standard-normal noise -> x_{start_step - 1}."""
        alpha_bar = self.schedule.alpha_bars[self.start_step - 1].item()
        return alpha_bar**0.5 * x + (1.0 - alpha_bar) ** 0.5 * noise

    def backbone_at(self, s: int, x: torch.Tensor) -> torch.Tensor:
        """eps_theta(x, t = (s + 1) / T) at step ``s``: x (B, C, H, W) -> (B, C, H, W)."""
        t = torch.full((x.shape[0],), (s + 1) / self.schedule.num_timesteps, dtype=x.dtype, device=x.device)
        return self.backbone(x, t)

    def schedule_settings(self) -> dict[str, Any]:
        return {
            "beta_start": self.schedule.beta_start,
            "beta_end": self.schedule.beta_end,
            "num_timesteps": self.schedule.num_timesteps,
        }
