"""The diffusion model as the denoiser of randomized smoothing (Carlini et al., ICLR 2023: DDS).

Smoothing adds Gaussian noise of standard deviation sigma to an image x in [0, 1] (pixel units).
In model space y = 2 (x + sigma delta) - 1 = x_s + 2 sigma delta with x_s = 2 x - 1 in [-1, 1],
so scaling by sqrt(alpha_bar_t) gives a state of the forward diffusion at the time t where
sqrt((1 - alpha_bar_t) / alpha_bar_t) = 2 sigma:

    x_t = sqrt(alpha_bar_t) y = sqrt(alpha_bar_t) x_s + sqrt(1 - alpha_bar_t) delta.

:func:`dds_level` picks t on the noise schedule of the diffusion model (one source:
:mod:`advpure.diffusion.schedule`):

- continuous VP-SDE: the exact t, alpha_bar_t = 1 / (1 + 4 sigma^2) (a quadratic in t);
- discrete DDPM: the first step i whose alpha_bar_i <= 1 / (1 + 4 sigma^2) (the rule of DDS's
  code: the first step with at least the noise 2 sigma), plus independent model-space noise of
  variance 1 - alpha_bar_i (1 + 4 sigma^2) >= 0 ("top-up"), so x_t has exactly step i's noise.
  The smoothing noise stays exactly sigma; the top-up is part of the (random) base classifier.

Denoisers map x_noisy = x + sigma delta (B, C, H, W), pixel units, not clipped, to an image in
[0, 1]:

- :class:`OneShotDenoiser` (DDS): one network call, the x0 prediction
  x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_theta(x_t, t)) / sqrt(alpha_bar_t), clipped to [-1, 1].
  With the exact noise predictor this is E[x_0 | x_t], the posterior mean (Tweedie).
- :class:`MultistepDenoiser`: a purifier's own reverse process (DiffPure's VP-SDE or ODE, DDPM
  ancestral sampling) from x_t at t to 0, built with t_star = t.

:class:`DenoisedClassifier` is the base classifier f of smoothing: the classifier on the
denoised image, with DensePure's majority vote over ``n_votes`` independent denoisings.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advpure.diffusion.backbone import EpsilonBackbone
from advpure.diffusion.schedule import DiscreteSchedule, VPSchedule
from advpure.errors import ConfigError
from advpure.purifiers.base import ReversePurifier
from advpure.purifiers.diffpure import REVERSE_SOLVERS, DiffPure
from advpure.purifiers.discrete_chain import DiscreteChainPurifier
from advpure.purifiers.noise import GlobalNoise, NoiseSource
from advpure.purifiers.protocol import Purifier
from advpure.purifiers.vp_grid import VPGridPurifier


@dataclass(frozen=True)
class DiffusionLevel:
    """Where DDS denoises noise level ``sigma`` (pixel units).

    ``t``: the backbone's time in (0, 1]; ``alpha_bar``: alpha_bar_t; ``step``: the discrete step
    index (``None`` on a continuous schedule); ``top_up``: standard deviation of the extra
    model-space noise that brings sqrt(alpha_bar) 2 sigma up to sqrt(1 - alpha_bar) (0 on a
    continuous schedule); ``noise_ratio``: sqrt((1 - alpha_bar) / alpha_bar) (= 2 sigma when
    ``top_up`` is 0)."""

    sigma: float
    t: float
    alpha_bar: float
    step: int | None
    top_up: float

    @property
    def noise_ratio(self) -> float:
        return math.sqrt((1.0 - self.alpha_bar) / self.alpha_bar)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "noise_ratio": self.noise_ratio}


def dds_level(schedule: VPSchedule | DiscreteSchedule, sigma: float) -> DiffusionLevel:
    """The diffusion time for noise level ``sigma`` on ``schedule`` (see the module docstring).

    Raises :class:`ConfigError` (key ``sigma``) if the schedule never reaches that much noise."""
    if sigma <= 0:
        raise ConfigError("sigma", f"{sigma!r} is out of range", "set a noise level > 0")
    target = 1.0 / (1.0 + 4.0 * sigma**2)
    if isinstance(schedule, DiscreteSchedule):
        alpha_bars = schedule.alpha_bars
        below = (alpha_bars <= target).nonzero()
        if below.numel() == 0:
            _too_noisy(sigma, float(alpha_bars[-1]))
        step = int(below[0])
        alpha_bar = float(alpha_bars[step])
        t = (step + 1) / schedule.num_timesteps  # step i's time, as DiscreteSchedule.time_of_step (in float64)
        return DiffusionLevel(sigma, t, alpha_bar, step, _top_up(alpha_bar, sigma))
    # alpha_bar(t) = exp(-(b t + a t^2)) with b = beta_min, a = (beta_max - beta_min) / 2:
    # a t^2 + b t - L = 0 for L = log(1 + 4 sigma^2); the stable root 2 L / (b + sqrt(b^2 + 4 a L)).
    log_ratio = math.log1p(4.0 * sigma**2)
    a, b = 0.5 * (schedule.beta_max - schedule.beta_min), schedule.beta_min
    t = 2.0 * log_ratio / (b + math.sqrt(b * b + 4.0 * a * log_ratio))
    if t > 1.0:
        _too_noisy(sigma, float(schedule.alpha_bar(torch.tensor(1.0, dtype=torch.float64))))
    alpha_bar = float(schedule.alpha_bar(torch.tensor(t, dtype=torch.float64)))
    return DiffusionLevel(sigma, t, alpha_bar, None, _top_up(alpha_bar, sigma))


def _top_up(alpha_bar: float, sigma: float) -> float:
    """sqrt(1 - alpha_bar (1 + 4 sigma^2)), 0 where rounding makes it negative."""
    return math.sqrt(max(0.0, 1.0 - alpha_bar * (1.0 + 4.0 * sigma**2)))


def _too_noisy(sigma: float, last_alpha_bar: float) -> None:
    largest = 0.5 * math.sqrt((1.0 - last_alpha_bar) / last_alpha_bar)
    raise ConfigError(
        "sigma",
        f"{sigma!r} is more noise than the diffusion schedule reaches (at most sigma = {largest:.4g} at t = 1)",
        f"set sigma <= {largest:.4g}",
    )


def schedule_of(purifier: nn.Module) -> VPSchedule | DiscreteSchedule:
    """The noise schedule a purifier runs on (its ``schedule``): the diffusion model's."""
    if not isinstance(purifier, VPGridPurifier | DiscreteChainPurifier):
        raise ConfigError(
            "purifier",
            f"{type(purifier).__name__} has no VP noise schedule to place sigma on",
            "select a diffusion purifier (purifier=diffpure, diffpure_ddpm or diffpure_ode)",
        )
    return purifier.schedule


def to_diffusion_state(x_noisy: torch.Tensor, level: DiffusionLevel, noise: NoiseSource) -> torch.Tensor:
    """x_noisy (B, C, H, W) in pixel units -> x_t = sqrt(alpha_bar) (2 x_noisy - 1) + top_up z
    (z: draw 0 of ``noise``; no draw when ``top_up`` is 0)."""
    x_t = math.sqrt(level.alpha_bar) * (2.0 * x_noisy - 1.0)
    if level.top_up > 0.0:
        x_t = x_t + level.top_up * noise.normal(0, x_t)
    return x_t


class OneShotDenoiser(nn.Module):
    """DDS's denoiser: one x0 prediction at the time of ``level``.

    Args:
        backbone: ``(x in [-1, 1], t in [0, 1]) -> eps``.
        level: from :func:`dds_level`.

    Shapes: ``forward(x_noisy)``: (B, C, H, W) pixel units (x + sigma delta, not clipped) ->
    (B, C, H, W) in [0, 1]."""

    name = "one_shot"

    def __init__(self, backbone: EpsilonBackbone, level: DiffusionLevel) -> None:
        super().__init__()
        self.backbone = backbone
        self.level = level

    def x0_signed(self, x_t: torch.Tensor) -> torch.Tensor:
        """(x_t - sqrt(1 - alpha_bar) eps_theta(x_t, t)) / sqrt(alpha_bar), not clipped: (B, C, H, W)."""
        t = torch.full((x_t.shape[0],), self.level.t, dtype=x_t.dtype, device=x_t.device)
        eps = self.backbone(x_t, t)
        return (x_t - math.sqrt(1.0 - self.level.alpha_bar) * eps) / math.sqrt(self.level.alpha_bar)

    def forward(self, x_noisy: torch.Tensor, noise: NoiseSource | None = None) -> torch.Tensor:
        x_t = to_diffusion_state(x_noisy, self.level, noise or GlobalNoise())
        return (self.x0_signed(x_t).clamp(-1.0, 1.0) + 1.0) * 0.5

    def settings(self) -> dict[str, Any]:
        return {"denoiser": self.name, "network_calls": 1, **self.level.as_dict()}


class MultistepDenoiser(nn.Module):
    """A purifier's reverse process from x_t at the time of ``level`` to 0 (DDS's multistep
    variant; with :class:`DenoisedClassifier`'s vote, DensePure).

    Args:
        purifier: a diffusion purifier without input guidance (DiffPure's VP-SDE or ODE, DDPM
            ancestral sampling), built with ``t_star = level.t`` so that its diffusion starts at
            alpha_bar = ``level.alpha_bar``.
        level: from :func:`dds_level` on the purifier's schedule.

    Shapes: ``forward(x_noisy)``: (B, C, H, W) pixel units (x + sigma delta, not clipped) ->
    (B, C, H, W) in [0, 1]."""

    name = "multistep"

    def __init__(self, purifier: ReversePurifier, level: DiffusionLevel) -> None:
        super().__init__()
        if not isinstance(purifier, ReversePurifier) or purifier.supports_guidance:
            name = purifier.name if isinstance(purifier, Purifier) else type(purifier).__name__
            raise ConfigError(
                "purifier",
                f"{name!r} cannot denoise for certification: a guided "
                "purifier steers toward its input, which here is the noisy image",
                "use purifier=diffpure, diffpure_ddpm or diffpure_ode with task.denoiser=multistep",
            )
        probe = torch.ones(1)
        start = float(purifier.diffuse(probe, torch.zeros_like(probe))) ** 2
        if not math.isclose(start, level.alpha_bar, rel_tol=1e-5):
            raise ConfigError(
                "purifier.t_star",
                f"the purifier starts at alpha_bar = {start:.6g}, the noise level needs {level.alpha_bar:.6g}",
                f"build it with t_star = {level.t:.6g} (the certify task does)",
            )
        self.purifier = purifier
        self.level = level

    def forward(self, x_noisy: torch.Tensor, noise: NoiseSource | None = None) -> torch.Tensor:
        source = noise or GlobalNoise()
        x_t = to_diffusion_state(x_noisy, self.level, source)
        if isinstance(self.purifier, DiffPure):
            x_0 = REVERSE_SOLVERS[self.purifier.solver](self.purifier, x_t, source)
        else:
            x_0 = self.purifier.reverse(x_t, source)
        return ((x_0 + 1.0) * 0.5).clamp(0.0, 1.0)

    def settings(self) -> dict[str, Any]:
        purifier = {k: v for k, v in self.purifier.settings().items() if not k.startswith("grad")}
        purifier.pop("gradient", None)
        return {
            "denoiser": self.name,
            "network_calls": self.purifier.n_steps,
            **self.level.as_dict(),
            "purifier": purifier,
        }


class DenoisedClassifier(nn.Module):
    """The base classifier of diffusion denoised smoothing: classify the denoised image; with
    ``n_votes`` > 1, the majority label of that many independent denoisings (DensePure; ties go
    to the smallest label).

    Args:
        classifier: (B, C, H, W) in [0, 1] -> logits (B, num_classes).
        denoiser: (B, C, H, W) pixel units -> (B, C, H, W) in [0, 1].
        n_votes: denoisings per noisy input.
        num_classes: number of labels.

    Shapes: ``forward(x_noisy)``: (B, C, H, W) -> (B,) int64 labels; ``log_probs(x_noisy)``:
    (B, num_classes), the log of the mean softmax over the votes (differentiable)."""

    def __init__(self, classifier: nn.Module, denoiser: nn.Module, n_votes: int, num_classes: int) -> None:
        super().__init__()
        if n_votes < 1:
            raise ConfigError("n_votes", f"{n_votes!r} is too small", "set an integer >= 1")
        self.classifier = classifier
        self.denoiser = denoiser
        self.n_votes = int(n_votes)
        self.num_classes = int(num_classes)

    def vote_logits(self, x_noisy: torch.Tensor) -> torch.Tensor:
        """(n_votes, B, num_classes) logits, one row per independent denoising."""
        copies = x_noisy.repeat(self.n_votes, *[1] * (x_noisy.ndim - 1))
        return self.classifier(self.denoiser(copies)).view(self.n_votes, x_noisy.shape[0], -1)

    def forward(self, x_noisy: torch.Tensor) -> torch.Tensor:
        labels = self.vote_logits(x_noisy).argmax(-1)
        if self.n_votes == 1:
            return labels[0]
        return F.one_hot(labels, self.num_classes).sum(0).argmax(-1)

    def log_probs(self, x_noisy: torch.Tensor) -> torch.Tensor:
        log_softmax = self.vote_logits(x_noisy).log_softmax(-1)
        return torch.logsumexp(log_softmax, dim=0) - math.log(self.n_votes)


class NoisyDraw(nn.Module):
    """One Monte Carlo draw of the smoothed classifier, for attacks (EOT over its calls):
    ``forward(x)`` = ``base.log_probs(x + sigma delta)`` with fresh delta ~ N(0, I) on every call.

    Shapes: x (B, C, H, W) in [0, 1] -> (B, num_classes) log-probabilities (as logits)."""

    def __init__(self, base: DenoisedClassifier, sigma: float) -> None:
        super().__init__()
        self.base = base
        self.sigma = float(sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base.log_probs(x + self.sigma * torch.randn_like(x))
