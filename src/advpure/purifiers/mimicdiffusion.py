"""MimicDiffusion (Song et al., CVPR 2024): a DDIM (eta = 1) chain guided by L1 distances.

The chain visits steps s = start - 1, start - 1 - stride, ..., each step

    x0_hat = (x_s - sqrt(1 - a_s) eps(x_s)) / sqrt(a_s)
    x_s' = sqrt(a_s') x0_hat + c1 z + c2 eps(x_s) - rho sqrt(a_s) grad_{x_s} [L(x0_hat, x_in) + L(P x0_hat, P x_in)],
    c1 = sqrt((1 - a_s / a_s') (1 - a_s') / (1 - a_s)),  c2 = sqrt(1 - a_s' - c1^2),

with L the channel-L1 distance averaged over pixels (long range) and P the short-range operator
(super-resolution upsampling). Guidance applies only at loop positions k with
``window[0] * n < k < window[1] * n`` (n steps in all).

The released code (psky1111/MimicDiffusion) and what advpure defaults to: start from pure noise
at step 999 (the input enters only through guidance), stride 10 (steps 999, 989, ..., 9),
rho = 3000, P = nearest x4 upsampling, guidance for 20 < k < 90 (window 0.2..0.9), and the
distance's mean taken over a batch of 16 (``loss_batch_size``; here per image, so that no image's
guidance depends on its batch). The paper describes the short-range term as a super-resolution
projection; with nearest upsampling every pixel is repeated f^2 times, so the pixel-averaged L1
distance and its gradient are exactly the long-range ones: the released guidance is twice the
long-range term (``tests/test_guided.py`` checks it). ``operator=bicubic`` gives a distinct
short-range term; ``start=diffused`` starts from the input diffused to t* instead of noise.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from typing_extensions import Unpack

from advpure.config.enums import GradMode, GuidanceOperator, GuidedStart
from advpure.diffusion.backbone import EpsilonBackbone
from advpure.errors import ConfigError
from advpure.purifiers.discrete_chain import DiscreteChainOptions, DiscreteChainPurifier
from advpure.purifiers.guidance import (
    GuidedChain,
    StepConstants,
    channel_l1_distance,
    differentiable,
    gradient_of,
    upsampler,
)
from advpure.purifiers.noise import NoiseSource


class MimicDiffusion(GuidedChain, DiscreteChainPurifier):
    """MimicDiffusion purification.

    Args:
        backbone: ``(x in [-1, 1], t in [0, 1]) -> eps``; called with t = (s + 1) / T.
        t_star: where a ``diffused`` start begins, in (0, 1] (ignored by the ``noise`` start, which
            begins at T).
        stride: visit every ``stride``-th step, an integer >= 1 (released: 10, i.e. 100 steps from 999;
            checked by :meth:`DiscreteChainPurifier.chain`).
        start: ``noise`` (released) or ``diffused``.
        rho: guidance scale >= 0 (released: 3000); 0 is the unguided DDIM (eta = 1) chain.
        guidance_window: (low, high) fractions of the chain, 0 <= low < high <= 1; guidance at
            positions low n < k < high n.
        operator, operator_factor: the short-range operator and its integer factor >= 1 (released:
            nearest, x4).
        loss_batch_size: the released batch size whose batch mean divides the guidance (16; >= 1).
        beta_start, beta_end, num_timesteps, grad_mode, seed, surrogate, checkpoint_steps: keyword
            options, see :class:`DiscreteChainPurifier`.

    Shapes: x (B, C, H, W) in [0, 1] -> (B, C, H, W) in [0, 1].
    """

    name = "mimicdiffusion"

    def __init__(
        self,
        backbone: EpsilonBackbone,
        *,
        t_star: float = 1.0,
        stride: int = 10,
        start: GuidedStart = GuidedStart.noise,
        rho: float = 3000.0,
        guidance_window: tuple[float, float] | list[float] = (0.2, 0.9),
        operator: GuidanceOperator = GuidanceOperator.nearest,
        operator_factor: int = 4,
        loss_batch_size: int = 16,
        **options: Unpack[DiscreteChainOptions],
    ) -> None:
        super().__init__(backbone, t_star=t_star, **options)
        low, high = (float(v) for v in guidance_window)
        if not 0.0 <= low < high <= 1.0:
            raise ConfigError(
                "purifier.guidance_window",
                f"{list(guidance_window)!r} is out of range",
                "set [low, high], 0 <= low < high <= 1",
            )
        for key, value in (("operator_factor", operator_factor), ("loss_batch_size", loss_batch_size)):
            if int(value) < 1:
                raise ConfigError(f"purifier.{key}", f"{value!r} is out of range", "set an integer >= 1")
        if float(rho) < 0:
            raise ConfigError("purifier.rho", f"{rho!r} is out of range", "set a value >= 0")
        self.start = GuidedStart(start)
        self.stride = int(stride)
        self.rho = float(rho)
        self.guidance_window = (low, high)
        self.operator = GuidanceOperator(operator)
        self.operator_factor = int(operator_factor)
        self.project = upsampler(self.operator, self.operator_factor)
        self.loss_batch_size = int(loss_batch_size)
        noise_start = self.start == GuidedStart.noise
        self.start_step = self.schedule.num_timesteps if noise_start else self.step_at(self.t_star)
        chain = self.chain(self.stride)
        n = len(chain)
        # Per position k: (step s, a_s, a_s', c1, c2, guided), in float64.
        self._steps: list[tuple[int, float, float, float, float, bool]] = []
        for k, (s, a, a_next) in enumerate(chain):
            c1 = ((1.0 - a / a_next) * (1.0 - a_next) / (1.0 - a)) ** 0.5
            c2 = max(1.0 - a_next - c1**2, 0.0) ** 0.5
            guided = self.rho > 0 and low * n < k < high * n
            self._steps.append((s, a, a_next, c1, c2, guided))

    @property
    def n_steps(self) -> int:
        return len(self._steps)

    def step_is_random(self, i: int) -> bool:
        return self._steps[i][3] > 0.0

    def diffuse(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The ``noise`` start: the noise itself; ``diffused``: x diffused to ``start_step``."""
        return noise if self.start == GuidedStart.noise else super().diffuse(x, noise)

    def purify_signed(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        return self.guided_reverse(self.diffuse(x, noise.normal(0, x)), x, noise)

    def guidance_terms(self, x0_hat: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(long-range, short-range) distances, each (B,), divided by ``loss_batch_size``."""
        long_range = channel_l1_distance(x0_hat, reference)
        short_range = channel_l1_distance(self.project(x0_hat), self.project(reference))
        return long_range / self.loss_batch_size, short_range / self.loss_batch_size

    def guided_step(self, i: int, x: torch.Tensor, reference: torch.Tensor, constants: StepConstants) -> torch.Tensor:
        """DDIM (eta = 1) step at position ``i``, minus rho sqrt(a_s) times the guidance gradient
        inside the window. x, reference (the input in [-1, 1]), ``constants.z``: (B, C, H, W)."""
        z = constants.z
        s, a, a_next, c1, c2, guided = self._steps[i]
        outer_graph = torch.is_grad_enabled()
        build_graph = guided and outer_graph and self.grad_mode != GradMode.guidance_blind
        # The guidance gradient differentiates the backbone; differentiating that gradient again
        # (build_graph) needs attention in plain differentiable ops (fused kernels have no
        # double backward).
        attention = sdpa_kernel(SDPBackend.MATH) if build_graph else nullcontext()
        with torch.enable_grad() if guided else nullcontext(), attention:
            state = differentiable(x) if guided else x
            eps = self.backbone_at(s, state)
            x0_hat = (state - (1.0 - a) ** 0.5 * eps) / a**0.5
            out = a_next**0.5 * x0_hat + c2 * eps
            if guided:
                long_range, short_range = self.guidance_terms(x0_hat, reference)
                out = out - self.rho * a**0.5 * gradient_of((long_range + short_range).sum(), state, build_graph)
        if z is not None:
            out = out + c1 * z
        return out if outer_graph else out.detach()

    def variant_settings(self) -> dict[str, Any]:
        return {
            "start": self.start.value,
            "start_step": self.start_step,
            "stride": self.stride,
            "rho": self.rho,
            "guidance_window": list(self.guidance_window),
            "guided_steps": sum(1 for *_, guided in self._steps if guided),
            "operator": self.operator.value,
            "operator_factor": self.operator_factor,
            "short_range_duplicates_long_range": self.operator == GuidanceOperator.nearest,
            "loss_batch_size": self.loss_batch_size,
            **self.schedule_settings(),
            "process": "DDIM (eta = 1) guided by long- and short-range L1 distances (MimicDiffusion)",
        }
