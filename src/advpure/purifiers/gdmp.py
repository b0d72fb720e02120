"""GDMP (Wang et al. 2022, arXiv 2205.14969): DDPM purification guided toward the input.

Each of ``n_repeats`` rounds diffuses the current image to step n = round(T t*) and runs the
DDPM reverse chain (the steps of :class:`DiffPureDDPM`), whose step-s mean is shifted toward the
input x_in diffused to step s with fresh noise:

    mean_s = mu_theta(x_s) + Sigma_s * k_s * grad_{x_s} sim(x_s, sqrt(ab_s) x_in + sqrt(1 - ab_s) z'),
    k_s = sqrt(1 - ab_s) / (m sqrt(ab_s)),   m = 2 guide_eps / 3 / guide_scale,

with sim = -MSE (mean over C, H, W) or SSIM, divided by ``loss_batch_size``. Every round guides
toward the original input; the first round starts from it, later rounds from the previous
round's output (not clamped), as in the released code.

Where advpure differs from the released code (JinyiW/GuidedDiffusionPur), and why:
- The released similarity is a mean over the whole batch, so an image's guidance shrinks with the
  batch size (published runs: batch 100). Here it is per image, divided by the fixed
  ``loss_batch_size`` (default 100): the published strength, independent of the batch.
- The released chain clips x0_hat to [-1, 1] inside each mean; advpure's DDPM step does not (the
  two differ only where x0_hat leaves [-1, 1]).
- The released code diffuses each round with alpha_bar at index t* (one step more noise than the
  36 steps it then denoises); here the start and the chain agree (alpha_bar at step n).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from typing_extensions import Unpack

from advpure.config.enums import DdpmVariance, GuidanceDistance
from advpure.diffusion.backbone import EpsilonBackbone
from advpure.errors import ConfigError
from advpure.purifiers.diffpure_ddpm import DdpmChainOptions, DiffPureDDPM
from advpure.purifiers.guidance import SIMILARITIES, GuidedChain, StepConstants
from advpure.purifiers.noise import NoiseSource, OffsetNoise

REPEAT_KEY_STRIDE = 50_000  # noise keys of round r start at r * REPEAT_KEY_STRIDE


class GDMP(GuidedChain, DiffPureDDPM):
    """Guided DDPM purification with ``n_repeats`` diffuse-and-denoise rounds.

    Args:
        backbone: ``(x in [-1, 1], t in [0, 1]) -> eps``.
        t_star: diffusion time; the chain starts at step round(T t*) (published: 36 of 1000).
        guide_eps: the perturbation budget the scale is set from, in (0, 1] pixel units (the
            released code's ``ptb / 255``); the evaluation passes its threat model's eps when the
            config's is null.
        n_repeats: rounds of diffuse-and-denoise, an integer >= 1 (published: 4).
        distance: ``mse`` or ``ssim``.
        guide_scale: >= 0, published 60000 (MSE, CIFAR-10); 0 turns guidance off.
        loss_batch_size: the released code's batch size, whose batch mean divides the guidance (>= 1).
        variance: the DDPM chain's (released: ``beta``, the "fixedlarge" of the CIFAR-10 model).
        stride, beta_start, beta_end, num_timesteps, grad_mode, seed, surrogate, checkpoint_steps:
            keyword options of the DDPM chain, see :class:`DiffPureDDPM` (released: every step).

    Shapes: x (B, C, H, W) in [0, 1] -> (B, C, H, W) in [0, 1].
    """

    name = "gdmp"

    def __init__(
        self,
        backbone: EpsilonBackbone,
        *,
        t_star: float = 0.036,
        guide_eps: float | None = None,
        n_repeats: int = 4,
        distance: GuidanceDistance = GuidanceDistance.mse,
        guide_scale: float = 60000.0,
        loss_batch_size: int = 100,
        variance: DdpmVariance = DdpmVariance.beta,
        **options: Unpack[DdpmChainOptions],
    ) -> None:
        super().__init__(backbone, t_star=t_star, variance=variance, **options)
        if guide_eps is None:
            raise ConfigError(
                "purifier.guide_eps",
                "is null and no threat model supplied it",
                "set purifier.guide_eps to the attack's eps in [0, 1] pixel units (e.g. 0.0314 for 8/255)",
            )
        for key, value, low in (("n_repeats", n_repeats, 1), ("loss_batch_size", loss_batch_size, 1)):
            if int(value) < low:
                raise ConfigError(f"purifier.{key}", f"{value!r} is out of range", f"set an integer >= {low}")
        if float(guide_scale) < 0 or float(guide_eps) <= 0:
            raise ConfigError("purifier.guide_scale", "must be >= 0 (and guide_eps > 0)", "set guide_scale >= 0")
        self.n_repeats = int(n_repeats)
        self.distance = GuidanceDistance(distance)
        self.guide_scale = float(guide_scale)
        self.guide_eps = float(guide_eps)
        self.loss_batch_size = int(loss_batch_size)
        m = 2.0 * self.guide_eps / 3.0 / self.guide_scale if self.guide_scale > 0 else float("inf")
        alpha_bars = self.schedule.alpha_bars.tolist()
        # Per step: (alpha_bar_s, Sigma_s * k_s / loss_batch_size), in float64.
        self._guides: list[tuple[float, float]] = []
        for (s, *_), var in zip(self._steps, self.step_variances, strict=True):
            ab = alpha_bars[s]
            k = (1.0 - ab) ** 0.5 / (m * ab**0.5)
            self._guides.append((ab, var * k / self.loss_batch_size))

    def guide_draws_noise(self, i: int) -> bool:
        return self._guides[i][1] > 0.0

    def purify_signed(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        current = x
        for r in range(self.n_repeats):
            keys = OffsetNoise(noise, r * REPEAT_KEY_STRIDE)
            current = self.guided_reverse(self.diffuse(current, keys.normal(0, current)), x, keys)
        return current

    def guided_step(self, i: int, x: torch.Tensor, reference: torch.Tensor, constants: StepConstants) -> torch.Tensor:
        """Reverse step ``i`` with the mean shifted along the similarity's gradient.

        x, reference (the input in [-1, 1]), ``constants.z``, ``constants.z_guide``: (B, C, H, W);
        z_guide diffuses the reference to this step (None when the step has no guidance).
        """
        z, z_guide, _ = constants
        mean = self.step_mean(i, x)
        alpha_bar, coefficient = self._guides[i]
        if z_guide is not None:
            reference_t = alpha_bar**0.5 * reference + (1.0 - alpha_bar) ** 0.5 * z_guide
            similarity = partial(SIMILARITIES[self.distance], reference=reference_t)
            mean = mean + coefficient * self.guidance_gradient(similarity, x)
        out = mean if z is None else mean + self._steps[i][3] * z
        return out if torch.is_grad_enabled() else out.detach()

    def variant_settings(self) -> dict[str, Any]:
        return {
            **super().variant_settings(),
            "n_repeats": self.n_repeats,
            "distance": self.distance.value,
            "guide_scale": self.guide_scale,
            "guide_eps": self.guide_eps,
            "loss_batch_size": self.loss_batch_size,
            "process": "DDPM ancestral sampling, mean guided toward the diffused input (GDMP)",
        }
