"""DiffPure (Nie et al., ICML 2022): diffuse to t*, then solve the reverse VP-SDE back to 0.

In the time u = 1 - t (torchsde integrates forward in time) the reverse VP-SDE is
    dx = [beta(t) x / 2 - beta(t) eps_theta(x, t) / sigma(t)] du + sqrt(beta(t)) dW_u,
i.e. score = -eps_theta / sigma(t), solved from u = 1 - t* to u = 1 by torchsde.
"""

from __future__ import annotations

from typing import Any

import torch
import torchsde
from torch import nn

from advpure.config.enums import GradMode, SdeMethod
from advpure.diffusion.backbone import EpsilonBackbone
from advpure.diffusion.schedule import VPSchedule


class ReverseVPSDE(nn.Module):
    """The reverse VP-SDE as a torchsde SDE over flattened states y: (B, C*H*W)."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, backbone: EpsilonBackbone, schedule: VPSchedule, image_shape: torch.Size) -> None:
        super().__init__()
        self.backbone = backbone
        self.schedule = schedule
        self.image_shape = tuple(image_shape)

    def f(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Drift in u = 1 - t: beta x / 2 + beta score, score = -eps / sigma."""
        t = (1.0 - u).to(y.dtype)
        beta = self.schedule.beta(t)
        eps = self.backbone(y.view(-1, *self.image_shape), t.expand(y.shape[0])).flatten(1)
        return 0.5 * beta * y - beta * eps / self.schedule.sigma(t)

    def g(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Diagonal diffusion sqrt(beta(t))."""
        t = (1.0 - u).to(y.dtype)
        return torch.sqrt(self.schedule.beta(t)).expand_as(y)


class DiffPure(nn.Module):
    """DiffPure with the VP-SDE solved by torchsde; differentiable by plain autograd.

    Args:
        backbone: ``(x in [-1, 1], t in [0, 1]) -> eps``.
        t_star: diffusion time in (0, 1] (DiffPure: 0.1 for Linf, 0.075 for L2 on CIFAR-10).
        dt: solver step (DiffPure: 1e-3, so t* = 0.1 is 100 steps).
        beta_min, beta_max: VP-SDE coefficients.
        method: torchsde solver (Euler-Maruyama).
        grad_mode: how attacks differentiate it (``full``: exact autograd through every step).

    Shapes: x (B, C, H, W) in [0, 1] -> purified (B, C, H, W) in [0, 1]. Random: each call draws
    the diffusion noise and the Brownian path from torch's global generator.
    """

    uses_backbone = True

    def __init__(
        self,
        backbone: EpsilonBackbone,
        t_star: float = 0.1,
        dt: float = 1e-3,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        method: SdeMethod = SdeMethod.euler,
        grad_mode: GradMode = GradMode.full,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.t_star = float(t_star)
        self.dt = float(dt)
        self.schedule = VPSchedule(beta_min, beta_max)
        self.method = SdeMethod(method)
        self.grad_mode = GradMode(grad_mode)

    @property
    def n_steps(self) -> int:
        """Solver steps per purification (t* / dt, rounded)."""
        return max(1, round(self.t_star / self.dt))

    def settings(self) -> dict[str, Any]:
        return {
            "name": "diffpure",
            "t_star": self.t_star,
            "dt": self.dt,
            "n_steps": self.n_steps,
            "beta_min": self.schedule.beta_min,
            "beta_max": self.schedule.beta_max,
            "method": self.method.value,
            "grad_mode": self.grad_mode.value,
            "solver": "torchsde.sdeint",
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in = 2.0 * x - 1.0
        t_star = torch.tensor(self.t_star, dtype=x.dtype, device=x.device)
        x_t = self.schedule.diffuse(x_in, t_star, torch.randn_like(x_in))
        x_0 = self.solve_reverse(x_t, self.t_star)
        return ((x_0 + 1.0) * 0.5).clamp(0.0, 1.0)

    def solve_reverse(self, x_t: torch.Tensor, t_start: float) -> torch.Tensor:
        """Reverse VP-SDE from ``t_start`` to 0: x_t (B, C, H, W) in about [-1, 1] -> x_0."""
        batch = x_t.shape[0]
        sde = ReverseVPSDE(self.backbone, self.schedule, x_t.shape[1:])
        # Times in float64 so the Euler grid lands on exactly round(t_start / dt) steps.
        ts = torch.tensor([1.0 - t_start, 1.0], dtype=torch.float64, device=x_t.device)
        brownian = torchsde.BrownianInterval(
            t0=float(ts[0]),
            t1=float(ts[1]),
            size=(batch, x_t[0].numel()),
            dtype=x_t.dtype,
            device=x_t.device,
            entropy=int(torch.randint(0, 2**31 - 1, (1,)).item()),
            levy_area_approximation="none",
        )
        ys = torchsde.sdeint(sde, x_t.flatten(1), ts, method=self.method.value, dt=self.dt, bm=brownian)
        return ys[-1].view_as(x_t)
