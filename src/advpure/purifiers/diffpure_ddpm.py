"""DiffPure with the discrete DDPM: diffuse to step n = round(T t*), ancestral sampling back to x_0.

Steps are 0-indexed (step i has alpha_bar_i = prod_{j<=i} (1 - beta_j); the backbone sees
t = (i + 1) / T, as in training). The start is x_{n-1} = sqrt(alpha_bar_{n-1}) x + sqrt(1 - alpha_bar_{n-1}) z.
With ``stride`` k > 1 the chain visits n-1, n-1-k, ... (a respaced DDPM, Nichol & Dhariwal 2021):
one step from s to s' < s (s' = -1 is x_0, alpha_bar = 1) uses
    a = alpha_bar_s / alpha_bar_s',  b = 1 - a,
    x_s' = (x_s - b / sqrt(1 - alpha_bar_s) eps(x_s)) / sqrt(a) + sqrt(v) z,
    v = b (1 - alpha_bar_s') / (1 - alpha_bar_s)  (posterior, beta tilde)  or  v = b  (beta),
with no noise on the last step. ``stride=1`` is Ho et al.'s sampler.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advpure.config.enums import DdpmVariance, GradMode
from advpure.diffusion.backbone import EpsilonBackbone
from advpure.diffusion.schedule import DiscreteSchedule
from advpure.errors import ConfigError
from advpure.purifiers.base import ReversePurifier


class DiffPureDDPM(ReversePurifier):
    """DiffPure on the discrete 1000-step DDPM schedule, ancestral sampling.

    Args:
        backbone: ``(x in [-1, 1], t in [0, 1]) -> eps``; called with t = (i + 1) / T.
        t_star: diffusion time in (0, 1]; the chain starts at step round(T t*) (1-based).
        stride: visit every ``stride``-th step (1: all of them).
        variance: ``posterior`` (beta tilde) or ``beta``.
        beta_start, beta_end, num_timesteps: the linear DDPM schedule (1e-4, 0.02, 1000).
        grad_mode, seed, surrogate, checkpoint_steps: see :class:`ReversePurifier`.

    Shapes: x (B, C, H, W) in [0, 1] -> (B, C, H, W) in [0, 1].
    """

    name = "diffpure_ddpm"

    def __init__(
        self,
        backbone: EpsilonBackbone,
        t_star: float = 0.1,
        stride: int = 1,
        variance: DdpmVariance = DdpmVariance.posterior,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        num_timesteps: int = 1000,
        grad_mode: GradMode = GradMode.full,
        seed: int | None = None,
        surrogate: nn.Module | None = None,
        checkpoint_steps: bool = True,
    ) -> None:
        super().__init__(backbone, t_star, grad_mode, seed, surrogate, checkpoint_steps)
        self.schedule = DiscreteSchedule(beta_start, beta_end, num_timesteps)
        self.start_step = round(num_timesteps * self.t_star)
        if self.start_step < 1:
            raise ConfigError(
                "purifier.t_star",
                f"{t_star!r} rounds to step 0 of {num_timesteps}",
                f"set t_star >= {0.5 / num_timesteps:.4g}",
            )
        if stride < 1:
            raise ConfigError("purifier.stride", f"{stride!r} is out of range", "set an integer >= 1")
        self.stride = int(stride)
        self.variance = DdpmVariance(variance)
        alpha_bars = self.schedule.alpha_bars.tolist()
        visited = list(range(self.start_step - 1, -1, -self.stride))
        targets = [*visited[1:], -1]
        # Per-step (index s, sqrt(1/a), b / sqrt(1 - alpha_bar_s), noise std), in float64.
        self._steps: list[tuple[int, float, float, float]] = []
        # Per-step variance v of the step's Gaussian, the last step's included (guidance scales by it).
        self.step_variances: list[float] = []
        for position, (s, s_next) in enumerate(zip(visited, targets, strict=True)):
            ab = alpha_bars[s]
            ab_next = 1.0 if s_next < 0 else alpha_bars[s_next]
            a = ab / ab_next
            b = 1.0 - a
            v = b * (1.0 - ab_next) / (1.0 - ab) if self.variance == DdpmVariance.posterior else b
            last = position == len(visited) - 1
            self.step_variances.append(v)
            self._steps.append((s, a**-0.5, b / (1.0 - ab) ** 0.5, 0.0 if last else v**0.5))
        self._start_alpha_bar = alpha_bars[self.start_step - 1]

    @property
    def n_steps(self) -> int:
        return len(self._steps)

    def diffuse(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self._start_alpha_bar**0.5 * x + (1.0 - self._start_alpha_bar) ** 0.5 * noise

    def step(self, i: int, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        mean = self.step_mean(i, x)
        return mean if z is None else mean + self._steps[i][3] * z

    def step_mean(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Mean of reverse step ``i``'s Gaussian: (x - b / sqrt(1 - alpha_bar_s) eps(x)) / sqrt(a)."""
        s, inv_sqrt_a, eps_coef, _ = self._steps[i]
        t = torch.full((x.shape[0],), (s + 1) / self.schedule.num_timesteps, dtype=x.dtype, device=x.device)
        return inv_sqrt_a * (x - eps_coef * self.backbone(x, t))

    def step_is_random(self, i: int) -> bool:
        return self._steps[i][3] > 0.0

    def variant_settings(self) -> dict[str, Any]:
        return {
            "start_step": self.start_step,
            "stride": self.stride,
            "variance": self.variance.value,
            "beta_start": self.schedule.beta_start,
            "beta_end": self.schedule.beta_end,
            "num_timesteps": self.schedule.num_timesteps,
            "process": "DDPM ancestral sampling",
        }
