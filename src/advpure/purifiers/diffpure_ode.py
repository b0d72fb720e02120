"""DiffPure with the probability-flow ODE of the same VP-SDE (deterministic given x_t*).

In u = 1 - t the ODE is dx/du = beta(t) x / 2 - beta(t) eps_theta(x, t) / (2 sigma(t)); it has the
SDE's marginals. n = round(t* / dt) uniform steps of h = t* / n, Euler or Heun (Heun's last step,
which would evaluate the score at t = 0, falls back to Euler). Only the forward diffusion is random.
"""

from __future__ import annotations

from typing import Any

import torch
from typing_extensions import Unpack

from advpure.config.enums import OdeMethod
from advpure.diffusion.backbone import EpsilonBackbone
from advpure.purifiers.vp_grid import VPGridOptions, VPGridPurifier


class DiffPureODE(VPGridPurifier):
    """Probability-flow ODE purification.

    Args:
        backbone: ``(x in [-1, 1], t in [0, 1]) -> eps``.
        method: ``euler`` (first order) or ``heun`` (second order, two network calls per step).
        t_star, dt, beta_min, beta_max, grad_mode, seed, surrogate, checkpoint_steps: keyword options,
            see :class:`VPGridPurifier`.

    Shapes: x (B, C, H, W) in [0, 1] -> (B, C, H, W) in [0, 1].
    """

    name = "diffpure_ode"

    def __init__(
        self,
        backbone: EpsilonBackbone,
        *,
        method: OdeMethod = OdeMethod.euler,
        **options: Unpack[VPGridOptions],
    ) -> None:
        super().__init__(backbone, **options)
        self.method = OdeMethod(method)

    def velocity(self, t: float, x: torch.Tensor) -> torch.Tensor:
        """dx/du at time t: beta x / 2 - beta eps / (2 sigma)."""
        eps, beta, sigma = self.eps_and_coefficients(t, x)
        return 0.5 * beta * (x - eps / sigma)

    def step(self, i: int, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        method = OdeMethod.euler if i == self.n_steps - 1 else self.method
        return _ODE_STEPS[method](self, self.step_time(i), x)

    def step_is_random(self, i: int) -> bool:
        return False

    def variant_settings(self) -> dict[str, Any]:
        return {**self.grid_settings(), "method": self.method.value, "process": "probability-flow ODE"}


def _euler_step(ode: DiffPureODE, t: float, x: torch.Tensor) -> torch.Tensor:
    return x + ode.step_size * ode.velocity(t, x)


def _heun_step(ode: DiffPureODE, t: float, x: torch.Tensor) -> torch.Tensor:
    h = ode.step_size
    v = ode.velocity(t, x)
    return x + 0.5 * h * (v + ode.velocity(t - h, x + h * v))


_ODE_STEPS = {OdeMethod.euler: _euler_step, OdeMethod.heun: _heun_step}
