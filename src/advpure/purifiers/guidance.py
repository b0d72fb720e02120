"""Guidance of guided purifiers: per-image distances, the short-range operator, and the chain.

A guided reverse step pulls its state toward the purifier's input (the *reference*). Every
distance here is computed per image, (B, C, H, W) x (B, C, H, W) -> (B,), and a guidance
gradient is the gradient of the *sum* over images: the guidance of one image never depends on
which other images share its batch. (The released GDMP and MimicDiffusion codes take a mean over
the batch, which divides each image's guidance by the batch size; the purifiers reproduce that
factor with a fixed ``loss_batch_size`` instead.)

Gradients: with ``build_graph`` the guidance gradient is itself differentiable (``create_graph``),
so an attack differentiating the purifier sees its second-order terms (``grad_mode=full``);
without it the gradient is a constant (``grad_mode=guidance_blind``, and every call made without
autograd).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F

from advpure.config.enums import GradMode, GuidanceDistance, GuidanceOperator
from advpure.purifiers.checkpointing import checkpointed_call
from advpure.purifiers.noise import NoiseSource

GUIDE_KEY_OFFSET = 20_000  # noise keys of the guidance draws (reference diffused to each step)


def mean_squared_error(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(B,) mean over C, H, W of (x - reference)^2."""
    return (x - reference).pow(2).flatten(1).mean(1)


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def structural_similarity(
    x: torch.Tensor, reference: torch.Tensor, window: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """(B,) SSIM (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5, zero padding, C1 = 0.01^2,
    C2 = 0.03^2, as the pytorch_ssim package GDMP uses), averaged over C, H, W of each image."""
    channels = x.shape[1]
    kernel = _gaussian_window(window, sigma, channels, x)
    conv = partial(F.conv2d, weight=kernel, padding=window // 2, groups=channels)
    mu_x, mu_r = conv(x), conv(reference)
    var_x = conv(x * x) - mu_x**2
    var_r = conv(reference * reference) - mu_r**2
    cov = conv(x * reference) - mu_x * mu_r
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mu_x * mu_r + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_r**2 + c1) * (var_x + var_r + c2))
    return ssim.flatten(1).mean(1)


def channel_l1_distance(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(B,) L1 norm over channels, averaged over pixel positions (MimicDiffusion's distance)."""
    return (x - reference).abs().sum(1).flatten(1).mean(1)


SIMILARITIES: dict[GuidanceDistance, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    GuidanceDistance.mse: lambda x, reference: -mean_squared_error(x, reference),
    GuidanceDistance.ssim: structural_similarity,
}
"""GDMP's similarity (higher is closer), per image."""


def upsampler(operator: GuidanceOperator, factor: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """MimicDiffusion's short-range operator: (B, C, H, W) -> (B, C, fH, fW), or the identity."""
    if operator == GuidanceOperator.identity:
        return lambda x: x
    options = {"mode": operator.value} if operator == GuidanceOperator.nearest else {"mode": "bicubic"}
    if operator == GuidanceOperator.bicubic:
        options["align_corners"] = False
    return partial(F.interpolate, scale_factor=factor, **options)


def differentiable(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself if it is part of a graph, else a detached copy that records one."""
    return x if x.requires_grad else x.detach().requires_grad_(True)


def gradient_of(total: torch.Tensor, state: torch.Tensor, build_graph: bool) -> torch.Tensor:
    """d total / d state; differentiable itself when ``build_graph``, else a constant."""
    (grad,) = torch.autograd.grad(total, state, create_graph=build_graph, retain_graph=True)
    return grad if build_graph else grad.detach()


class StepConstants(NamedTuple):
    """What a guided step reads besides its state and reference, replayed as-is when a
    checkpointed step is recomputed; each is None where the step has none.

    z: the step's sampling noise (B, C, H, W); z_guide: its guidance noise (B, C, H, W);
    context: a constant the guidance reads (AGDM's predicted labels, (B,)).
    """

    z: torch.Tensor | None
    z_guide: torch.Tensor | None
    context: torch.Tensor | None


class GuidedChain:
    """Mixin of the guided purifiers: the reverse loop whose steps also see the reference.

    The purifier provides ``n_steps``, ``step_is_random(i)``, ``guide_draws_noise(i)``,
    ``checkpoint_steps``, ``backbone_parameters()`` and
    ``guided_step(i, x, reference, constants: StepConstants) -> x_next``. Step ``i`` draws key
    ``i + 1`` (its sampling noise) and key ``GUIDE_KEY_OFFSET + i + 1`` (its guidance noise, if any).
    ``reference`` is what the guidance compares the state with (the input, or its embedding) and
    receives gradients. Declares ``supports_guidance`` (the purifier contract's capability: a
    guidance gradient that ``grad_mode=guidance_blind`` can hold constant) for every guided purifier.
    """

    supports_guidance = True

    def guided_reverse(
        self,
        x_t: torch.Tensor,
        reference: torch.Tensor,
        noise: NoiseSource,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """All reverse steps from x_t to x_0 ((B, C, H, W) in model space [-1, 1]); under
        autograd each step is checkpointed, with gradients to the state and to the reference."""
        x = x_t
        checkpointed = self.checkpoint_steps and torch.is_grad_enabled()
        params = [p for p in self.backbone_parameters() if p.requires_grad] if checkpointed else []
        for i in range(self.n_steps):
            z = noise.normal(i + 1, x) if self.step_is_random(i) else None
            z_guide = noise.normal(GUIDE_KEY_OFFSET + i + 1, x) if self.guide_draws_noise(i) else None
            step = partial(self._step_with_constants, i)
            x = (
                checkpointed_call(step, (x, reference), (z, z_guide, context), params)
                if checkpointed
                else step(x, reference, z, z_guide, context)
            )
        return x

    def _step_with_constants(
        self, i: int, x: torch.Tensor, reference: torch.Tensor, *constants: torch.Tensor | None
    ) -> torch.Tensor:
        """``guided_step`` with its constants as separate tensors (as :func:`checkpointed_call` passes them)."""
        return self.guided_step(i, x, reference, StepConstants(*constants))

    def guided_step(self, i: int, x: torch.Tensor, reference: torch.Tensor, constants: StepConstants) -> torch.Tensor:
        """Reverse step ``i``: state x (B, C, H, W) in model space -> the next state, guided toward
        ``reference``."""
        raise NotImplementedError

    def guide_draws_noise(self, i: int) -> bool:
        """Whether step ``i``'s guidance draws noise (default: no)."""
        return False

    def guidance_gradient(self, objective: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """grad_x of ``objective(x).sum()`` (objective: (B, C, H, W) -> (B,)): differentiable itself
        under autograd (``grad_mode=full``), a constant under ``guidance_blind`` or without autograd."""
        build_graph = torch.is_grad_enabled() and self.grad_mode != GradMode.guidance_blind
        with torch.enable_grad():
            state = differentiable(x)
            return gradient_of(objective(state).sum(), state, build_graph)
