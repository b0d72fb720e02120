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
from typing_extensions import Unpack

from advpure.config.enums import DdpmVariance
from advpure.diffusion.backbone import EpsilonBackbone
from advpure.purifiers.discrete_chain import DiscreteChainOptions, DiscreteChainPurifier


class DdpmChainOptions(DiscreteChainOptions, total=False):
    """What GDMP and AGDM forward to :class:`DiffPureDDPM` unchanged (it documents ``stride`` and
    declares its default; each of them declares its own ``variance``)."""

    stride: int


class DiffPureDDPM(DiscreteChainPurifier):
    """DiffPure on the discrete 1000-step DDPM schedule, ancestral sampling.

    Args:
        backbone: ``(x in [-1, 1], t in [0, 1]) -> eps``; called with t = (i + 1) / T.
        t_star: diffusion time in (0, 1]; the chain starts at step round(T t*) (1-based).
        variance: ``posterior`` (beta tilde) or ``beta``.
        stride: visit every ``stride``-th step, an integer >= 1 (1: all of them).
        beta_start, beta_end, num_timesteps, grad_mode, seed, surrogate, checkpoint_steps: keyword
            options, see :class:`DiscreteChainPurifier`.

    Shapes: x (B, C, H, W) in [0, 1] -> (B, C, H, W) in [0, 1].
    """

    name = "diffpure_ddpm"

    def __init__(
        self,
        backbone: EpsilonBackbone,
        *,
        t_star: float = 0.1,
        variance: DdpmVariance = DdpmVariance.posterior,
        stride: int = 1,
        **options: Unpack[DiscreteChainOptions],
    ) -> None:
        super().__init__(backbone, t_star=t_star, **options)
        self.start_step = self.step_at(self.t_star)
        self.stride = int(stride)
        self.variance = DdpmVariance(variance)
        chain = self.chain(self.stride)
        # Per-step (index s, sqrt(1/a), b / sqrt(1 - alpha_bar_s), noise std), in float64.
        self._steps: list[tuple[int, float, float, float]] = []
        # Per-step variance v of the step's Gaussian, the last step's included (guidance scales by it).
        self.step_variances: list[float] = []
        for position, (s, ab, ab_next) in enumerate(chain):
            a = ab / ab_next
            b = 1.0 - a
            v = b * (1.0 - ab_next) / (1.0 - ab) if self.variance == DdpmVariance.posterior else b
            last = position == len(chain) - 1
            self.step_variances.append(v)
            self._steps.append((s, a**-0.5, b / (1.0 - ab) ** 0.5, 0.0 if last else v**0.5))

    @property
    def n_steps(self) -> int:
        return len(self._steps)

    def step(self, i: int, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        mean = self.step_mean(i, x)
        return mean if z is None else mean + self._steps[i][3] * z

    def step_mean(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Mean of reverse step ``i``'s Gaussian: (x - b / sqrt(1 - alpha_bar_s) eps(x)) / sqrt(a)."""
        s, inv_sqrt_a, eps_coef, _ = self._steps[i]
        return inv_sqrt_a * (x - eps_coef * self.backbone_at(s, x))

    def step_is_random(self, i: int) -> bool:
        return self._steps[i][3] > 0.0

    def variant_settings(self) -> dict[str, Any]:
        return {
            "start_step": self.start_step,
            "stride": self.stride,
            "variance": self.variance.value,
            **self.schedule_settings(),
            "process": "DDPM ancestral sampling",
        }
