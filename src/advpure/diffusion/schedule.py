"""The VP family in its two time conventions (continuous VP-SDE and discrete DDPM).

Continuous: beta(t) = beta_min + t (beta_max - beta_min), t in [0, 1],
alpha_bar(t) = exp(-beta_min t - (beta_max - beta_min) t^2 / 2).
Discrete: beta_i linear from beta_start to beta_end, i = 0..T-1, alpha_bar_i = prod_{j<=i} (1 - beta_j);
step i corresponds to t = (i + 1) / T.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class VPSchedule:
    """Continuous VP-SDE coefficients; every method takes ``t`` as a tensor in [0, 1]."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """beta(t) = beta_min + t (beta_max - beta_min)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """log alpha_bar(t) = -beta_min t - (beta_max - beta_min) t^2 / 2."""
        return -self.beta_min * t - 0.5 * (self.beta_max - self.beta_min) * t**2

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """Signal variance alpha_bar(t) of x_t given x_0."""
        return torch.exp(self.log_alpha_bar(t))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise standard deviation sqrt(1 - alpha_bar(t))."""
        return torch.sqrt(-torch.expm1(self.log_alpha_bar(t)))

    def diffuse(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar(t)) x0 + sqrt(1 - alpha_bar(t)) noise (x0 in [-1, 1], t broadcastable)."""
        return torch.exp(0.5 * self.log_alpha_bar(t)) * x0 + self.sigma(t) * noise


@dataclass(frozen=True)
class DiscreteSchedule:
    """Discrete DDPM schedule (Ho et al.): linear betas over ``num_timesteps`` steps."""

    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_timesteps: int = 1000

    @property
    def betas(self) -> torch.Tensor:
        """(T,) float64 betas."""
        return torch.linspace(self.beta_start, self.beta_end, self.num_timesteps, dtype=torch.float64)

    @property
    def alpha_bars(self) -> torch.Tensor:
        """(T,) float64 cumulative products of (1 - beta)."""
        return torch.cumprod(1.0 - self.betas, dim=0)

    def time_of_step(self, step: torch.Tensor) -> torch.Tensor:
        """Continuous time t = (i + 1) / T of integer step i (the backbone is called with 999 t)."""
        return (step.to(torch.float32) + 1.0) / self.num_timesteps

    def continuous(self) -> VPSchedule:
        """The VP-SDE this schedule discretizes: beta_min = T beta_start, beta_max = T beta_end."""
        return VPSchedule(self.beta_start * self.num_timesteps, self.beta_end * self.num_timesteps)
