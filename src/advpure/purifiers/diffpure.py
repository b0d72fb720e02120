"""DiffPure (Nie et al., ICML 2022): diffuse to t*, then solve the reverse VP-SDE back to 0.

Forward: x_t* = sqrt(alpha_bar(t*)) x + sigma(t*) z. Reverse VP-SDE, written in u = 1 - t so
time runs forward (torchsde's convention):
    dx = [beta(t) x / 2 - beta(t) eps_theta(x, t) / sigma(t)] du + sqrt(beta(t)) dW_u,
i.e. score = -eps_theta / sigma(t). Euler-Maruyama with n = round(t* / dt) steps of h = t* / n;
step i starts at t = t* - i h:
    x <- x + h [beta x / 2 - beta eps / sigma] + sqrt(beta h) z_i.
Two solvers compute it (``solver``): advpure's explicit loop (the default: every step can be
checkpointed, and its fixed shapes suit torch.compile and CUDA graphs) and ``torchsde.sdeint``,
the reference path as DiffPure runs it (Euler, fixed dt; under autograd its graph holds every
step's activations). ``tests/test_diffpure.py`` checks the loop against ``torchsde.sdeint`` on one
Brownian path; ``grad_mode=adjoint`` runs ``torchsde.sdeint_adjoint`` with either solver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torchsde
from torch import nn
from typing_extensions import Unpack

from advpure.config.enums import SdeMethod, SdeSolver
from advpure.diffusion.backbone import EpsilonBackbone
from advpure.diffusion.schedule import VPSchedule
from advpure.purifiers.noise import NoiseSource
from advpure.purifiers.vp_grid import VPGridOptions, VPGridPurifier


class ReverseVPSDE(nn.Module):
    """The reverse VP-SDE as a torchsde SDE over flattened states y: (B, C*H*W), time u = 1 - t.

    The score -eps / sigma(t) is singular at t = 0, where an adjoint solve starts; times below
    ``t_floor`` are evaluated at ``t_floor`` (the forward Euler grid never goes below its step).
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(
        self, backbone: EpsilonBackbone, schedule: VPSchedule, image_shape: torch.Size, t_floor: float = 1e-5
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.schedule = schedule
        self.image_shape = tuple(image_shape)
        self.t_floor = t_floor

    def f(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Drift: beta x / 2 - beta eps / sigma."""
        t = (1.0 - u).clamp(min=self.t_floor).to(y.dtype)
        beta = self.schedule.beta(t)
        eps = self.backbone(y.view(-1, *self.image_shape), t.expand(y.shape[0])).flatten(1)
        return 0.5 * beta * y - beta * eps / self.schedule.sigma(t)

    def g(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Diagonal diffusion sqrt(beta(t))."""
        t = (1.0 - u).to(y.dtype)
        return torch.sqrt(self.schedule.beta(t)).expand_as(y)


class DiffPure(VPGridPurifier):
    """DiffPure's VP-SDE purification.

    Args:
        backbone: ``(x in [-1, 1], t in [0, 1]) -> eps``.
        method: Euler-Maruyama.
        solver: ``loop`` (advpure's Euler-Maruyama loop) or ``torchsde`` (``torchsde.sdeint`` on a
            Brownian path from the noise source: the reference path).
        t_star, dt, beta_min, beta_max, grad_mode, seed, surrogate, checkpoint_steps: keyword options,
            see :class:`VPGridPurifier`.

    Shapes: x (B, C, H, W) in [0, 1] -> (B, C, H, W) in [0, 1].
    """

    supports_adjoint = True
    name = "diffpure"

    def __init__(
        self,
        backbone: EpsilonBackbone,
        *,
        method: SdeMethod = SdeMethod.euler,
        solver: SdeSolver = SdeSolver.loop,
        **options: Unpack[VPGridOptions],
    ) -> None:
        super().__init__(backbone, **options)
        self.method = SdeMethod(method)
        self.solver = SdeSolver(solver)

    def purify_signed(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        """Diffuse (noise key 0), then reverse with the configured solver: x in [-1, 1] -> x_0."""
        return REVERSE_SOLVERS[self.solver](self, self.diffuse(x, noise.normal(0, x)), noise)

    def step(self, i: int, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        h = self.step_size
        eps, beta, sigma = self.eps_and_coefficients(self.step_time(i), x)
        return x + h * (0.5 * beta * x - beta * eps / sigma) + torch.sqrt(beta * h) * z

    def variant_settings(self) -> dict[str, Any]:
        return {
            **self.grid_settings(),
            "method": self.method.value,
            "solver": self.solver.value,
            "process": "reverse VP-SDE, Euler-Maruyama",
        }

    def torchsde_reverse(self, x_t: torch.Tensor, noise: NoiseSource, *, adjoint: bool = False) -> torch.Tensor:
        """The reference solve by torchsde (``sdeint``, or ``sdeint_adjoint`` if ``adjoint``):
        x_t (B, C, H, W) -> x_0, Brownian path from ``noise.brownian``. The adjoint returns
        gradients for the input only (``adjoint_params=()``), not for the backbone's weights."""
        flat = x_t.flatten(1)
        u0 = 1.0 - self.t_star
        ts = torch.tensor([u0, 1.0], dtype=torch.float64, device=x_t.device)
        sde = ReverseVPSDE(self.backbone, self.schedule, x_t.shape[1:], t_floor=self.step_size)
        path = noise.brownian(u0, 1.0, flat)
        if adjoint:
            ys = torchsde.sdeint_adjoint(
                sde,
                flat,
                ts,
                bm=path,
                method=self.method.value,
                adjoint_method=self.method.value,
                dt=self.step_size,
                adjoint_params=(),
            )
        else:
            ys = torchsde.sdeint(sde, flat, ts, bm=path, method=self.method.value, dt=self.step_size)
        return ys[-1].view_as(x_t)

    def purify_adjoint(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        x_signed = 2.0 * x - 1.0
        x_t = self.diffuse(x_signed, noise.normal(0, x_signed))
        return ((self.torchsde_reverse(x_t, noise, adjoint=True) + 1.0) * 0.5).clamp(0.0, 1.0)


ReverseSolve = Callable[[DiffPure, torch.Tensor, NoiseSource], torch.Tensor]

# x_t* (B, C, H, W) -> x_0, by solver.
REVERSE_SOLVERS: dict[SdeSolver, ReverseSolve] = {
    SdeSolver.loop: lambda purifier, x_t, noise: purifier.reverse(x_t, noise),
    SdeSolver.torchsde: lambda purifier, x_t, noise: purifier.torchsde_reverse(x_t, noise),
}
