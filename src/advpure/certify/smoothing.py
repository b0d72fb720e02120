"""Randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019): PREDICT and CERTIFY.

The smoothed classifier of a base classifier f under Gaussian noise of standard deviation sigma is
g(x) = argmax_c P(f(x + sigma delta) = c), delta ~ N(0, I). If the top class c_A has probability
at least p_A > 1/2, g is constant on the L2 ball of radius sigma * Phi^-1(p_A) around x.

- CERTIFY draws ``n0`` noisy samples to select c_A, ``n`` more to count n_A = #{f = c_A}, and
  takes the one-sided (1 - alpha) Clopper-Pearson lower bound p_A_lower of p_A. It abstains if
  p_A_lower < 1/2, else returns c_A with radius sigma * Phi^-1(p_A_lower). With probability at
  least 1 - alpha over the noise, a returned class is g(x) and g is constant on that ball.
- PREDICT draws ``n`` samples and returns the top class unless a two-sided binomial test of its
  count against the runner-up's (p = 1/2) has p-value > alpha (then it abstains); a returned
  class differs from g(x) with probability at most alpha.

The statistics come from scipy (``scipy.stats.binomtest``: the exact Clopper-Pearson interval
and the binomial test; ``scipy.stats.norm.ppf``), as statsmodels' ``proportion_confint(method=
"beta")`` and ``binom_test`` in Cohen et al.'s code. The base classifier is any callable
``base(x_noisy) -> labels``; it may itself be random (a diffusion denoiser and a classifier):
the probabilities are then over its randomness too, and the guarantee is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from scipy.stats import binomtest, norm

from advpure.errors import ConfigError

ABSTAIN = -1
"""The class :func:`certify` and :func:`predict` return when they abstain."""

BaseClassifier = Callable[[torch.Tensor], torch.Tensor]
"""``base(x_noisy) -> labels``: x_noisy (B, *S) (pixel units, not clipped to [0, 1]) -> (B,) int64
labels in [0, num_classes)."""


def check_smoothing_parameters(sigma: float, n0: int, n: int, alpha: float, batch: int) -> None:
    """Raise :class:`ConfigError` (keys ``sigma``, ``n0``, ``n``, ``alpha``, ``batch``) unless
    sigma > 0, 1 <= n0 <= n, 0 < alpha < 1 and batch >= 1."""
    if not (isinstance(sigma, int | float) and math.isfinite(sigma) and sigma > 0):
        raise ConfigError("sigma", f"{sigma!r} is out of range", "set a noise level > 0 (pixel units; e.g. 0.25, 0.5)")
    if n < 1:
        raise ConfigError("n", f"{n!r} is too small", "set an integer >= 1 (Cohen et al.: 100000)")
    if not 1 <= n0 <= n:
        raise ConfigError("n0", f"{n0!r} is out of range", f"set 1 <= n0 <= n = {n} (Cohen et al.: n0 = 100)")
    if not (isinstance(alpha, int | float) and 0.0 < alpha < 1.0):
        raise ConfigError("alpha", f"{alpha!r} is out of range", "set a failure probability in (0, 1) (e.g. 0.001)")
    if batch < 1:
        raise ConfigError("batch", f"{batch!r} is too small", "set an integer >= 1")


def sample_counts(
    base: BaseClassifier,
    x: torch.Tensor,
    sigma: float,
    num: int,
    batch: int,
    num_classes: int,
    generator: torch.Generator | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """How often ``base`` predicts each class on ``num`` noisy copies of ``x``.

    Args:
        base: ``base(x_noisy) -> labels``, see :data:`BaseClassifier`.
        x: one input (*S), e.g. (C, H, W) in [0, 1].
        sigma: noise standard deviation, in the units of ``x``.
        num: number of noisy copies x + sigma delta.
        batch: copies per call of ``base``.
        num_classes: length of the returned counts.
        generator: draws delta (``None``: torch's global generator).
        progress: called with the number of copies after each call (a progress bar's ``update``).

    Returns:
        (num_classes,) int64 counts on the CPU, summing to ``num``.
    """
    counts = torch.zeros(num_classes, dtype=torch.int64)
    remaining = num
    with torch.no_grad():
        while remaining > 0:
            size = min(batch, remaining)
            delta = torch.randn((size, *x.shape), generator=generator, dtype=x.dtype, device=x.device)
            labels = base(x.unsqueeze(0) + sigma * delta).long().cpu()
            counts += torch.bincount(labels, minlength=num_classes)[:num_classes]
            remaining -= size
            if progress is not None:
                progress(size)
    return counts


def lower_confidence_bound(n_a: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound of a binomial proportion: the alpha
    quantile of Beta(n_a, n - n_a + 1), 0 when n_a = 0 (the lower end of the two-sided exact
    interval at level 1 - 2 alpha, as Cohen et al. compute it)."""
    return float(binomtest(int(n_a), int(n)).proportion_ci(confidence_level=1.0 - 2.0 * alpha, method="exact").low)


def certified_radius(p_a_lower: float, sigma: float) -> float:
    """sigma * Phi^-1(p_A_lower): the L2 radius certified by a lower bound p_A_lower > 1/2."""
    return float(sigma * norm.ppf(p_a_lower))


@dataclass(frozen=True)
class Certificate:
    """CERTIFY's answer for one input.

    ``prediction``: c_A, or :data:`ABSTAIN`; ``radius``: the certified L2 radius (0 when
    abstaining); ``p_a_lower``: the Clopper-Pearson lower bound of p_A; ``count_a``: n_A, the
    estimation samples on which the base classifier said c_A; ``n``: estimation samples;
    ``selected``: c_A as the ``n0`` selection samples chose it (also when abstaining).
    """

    prediction: int
    radius: float
    p_a_lower: float
    count_a: int
    n: int
    selected: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def certify(
    base: BaseClassifier,
    x: torch.Tensor,
    sigma: float,
    n0: int,
    n: int,
    alpha: float,
    batch: int,
    num_classes: int,
    generator: torch.Generator | None = None,
    progress: Callable[[int], None] | None = None,
) -> Certificate:
    """Cohen et al.'s CERTIFY on one input ``x`` (*S) (see the module docstring).

    ``generator`` draws the noise of both sample sets; ``progress`` is told of every batch
    (n0 + n copies in all). Raises :class:`ConfigError` on out-of-range parameters."""
    check_smoothing_parameters(sigma, n0, n, alpha, batch)
    selection = sample_counts(base, x, sigma, n0, batch, num_classes, generator, progress)
    selected = int(selection.argmax())
    estimation = sample_counts(base, x, sigma, n, batch, num_classes, generator, progress)
    count_a = int(estimation[selected])
    p_a_lower = lower_confidence_bound(count_a, n, alpha)
    if p_a_lower < 0.5:
        return Certificate(ABSTAIN, 0.0, p_a_lower, count_a, n, selected)
    return Certificate(selected, certified_radius(p_a_lower, sigma), p_a_lower, count_a, n, selected)


def predict(
    base: BaseClassifier,
    x: torch.Tensor,
    sigma: float,
    n: int,
    alpha: float,
    batch: int,
    num_classes: int,
    generator: torch.Generator | None = None,
) -> int:
    """Cohen et al.'s PREDICT on one input ``x`` (*S): the top class of ``n`` noisy samples, or
    :data:`ABSTAIN` when the two-sided binomial test of its count against the runner-up's
    (p = 1/2) has a p-value above ``alpha``."""
    check_smoothing_parameters(sigma, 1, n, alpha, batch)
    counts = sample_counts(base, x, sigma, n, batch, num_classes, generator)
    top2 = torch.topk(counts, k=min(2, num_classes)).indices.tolist()
    count1 = int(counts[top2[0]])
    count2 = int(counts[top2[1]]) if len(top2) > 1 else 0
    if count1 + count2 == 0 or binomtest(count1, count1 + count2, p=0.5).pvalue > alpha:
        return ABSTAIN
    return int(top2[0])
