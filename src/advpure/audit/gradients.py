"""Gradient indicators: are there gradients at all (1), and did the attack average enough draws (2)?

Both differentiate the CW margin max_{j != y} z_j - z_y of the model the evaluated attack attacked
(the defended model under the evaluated grad mode; the bare classifier for ``blind``). The margin
does not saturate like the cross-entropy, so a zero gradient is the defense's doing, not the loss's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from advpure.attacks.losses import margin
from advpure.audit.base import AuditContext, IndicatorResult, Verdict, not_applicable
from advpure.config.enums import GradMode
from advpure.purifiers.gradients import GRADIENT_RULES


def draw_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_draws: int, chunk: int) -> torch.Tensor:
    """Single-draw gradients of the CW margin: (n_draws, B, C * H * W), draw k of image b from row
    k * B + b of calls of at most ``chunk`` copies of x (B, C, H, W). A graph that does not reach
    the input (an interrupted computation) gives zeros."""
    parts = []
    for start in range(0, n_draws, chunk):
        copies = min(chunk, n_draws - start)
        with torch.enable_grad():
            batch = x.detach().repeat(copies, *[1] * (x.ndim - 1)).requires_grad_(True)
            loss = margin(model(batch).float(), y.repeat(copies)).sum()
            grad = torch.autograd.grad(loss, batch, allow_unused=True)[0] if loss.requires_grad else None
        grad = torch.zeros_like(batch) if grad is None else grad
        parts.append(grad.detach().reshape(copies, x.shape[0], -1))
    return torch.cat(parts)


def zero_gradients(context: AuditContext) -> IndicatorResult:
    """Indicator 1: the fraction of audited images whose EOT gradient (``gradient_draws`` draws)
    under the evaluated grad mode is zero: L1 norm below ``zero_gradient_ratio`` times the bare
    classifier's at the same image (exact zeros included; an interrupted graph counts as zero).
    Fails above ``zero_gradient_max_fraction``; an approximate grad mode warns (its gradient is not
    the defense's), with the exact gradient's zero fraction and the approximation's cosine to it."""
    name = "zero_gradients"
    if not context.uses_gradients:
        return not_applicable(name, f"attack {context.attack.name} takes no gradients")
    options, mode = context.options, context.grad_mode
    draws, chunk = options.gradient_draws, max(context.eot_copies, 1)
    context.seed_for(name)
    with context.target() as target:
        evaluated = draw_gradients(target, context.x, context.y, draws, chunk).mean(0)
    own = draw_gradients(context.classifier, context.x, context.y, 1, 1)[0]
    reference = own.abs().sum(1).clamp_min(1e-30)
    ratio = evaluated.abs().sum(1) / reference
    zero = ratio < options.zero_gradient_ratio
    fraction = float(zero.float().mean())
    details = {
        "grad_mode": mode.value,
        "draws": draws,
        "zero_images": int(zero.sum()),
        "l1_ratio_to_classifier": [float(r) for r in ratio],
    }
    approximate = GRADIENT_RULES[mode].approximation
    exact_zero = None
    if approximate:
        with context.target(GradMode.full) as exact_target:
            exact = draw_gradients(exact_target, context.x, context.y, draws, chunk).mean(0)
        exact_zero = (exact.abs().sum(1) / reference) < options.zero_gradient_ratio
        details["exact_zero_images"] = int(exact_zero.sum())
        cosine = F.cosine_similarity(evaluated, exact, dim=1)
        details["cosine_to_exact"] = float(cosine.median())
    value_text = f"{int(zero.sum())} of {len(zero)} images ({fraction:.0%}) with a zero {mode.value} gradient"
    threshold_text = f"fail above {options.zero_gradient_max_fraction:.0%}; warn under an approximate grad mode"
    if fraction > options.zero_gradient_max_fraction:
        verdict = Verdict.failed
        fix = (
            "the defense masks its gradient here: an exact-gradient number is not a robustness claim. Attack "
            "without gradients (black_box row; attack=torchattacks attack.name=Square) and, for MimicDiffusion, "
            "purifier.start=diffused; report the strongest"
        )
    elif approximate:
        verdict = Verdict.warned
        masked = bool(exact_zero is not None and exact_zero.any())
        fix = f"the {mode.value} gradient is not the defense's ({GRADIENT_RULES[mode].description}); " + (
            "the exact gradient is zero on some images (masking): add a gradient-free attack"
            if masked
            else "use purifier.grad_mode=full (exact) for the reported number"
        )
    else:
        verdict, fix = Verdict.passed, ""
    return IndicatorResult(
        name, fraction, options.zero_gradient_max_fraction, verdict, fix, details, value_text, threshold_text
    )


def _pair_cosines(pool: torch.Tensor, copies: int) -> torch.Tensor:
    """Per image (B,): mean cosine between disjoint pairs of ``copies``-draw means of the pool
    (M, B, D) of single-draw gradients (M >= 2 * copies)."""
    pairs = pool.shape[0] // (2 * copies)
    means = pool[: 2 * copies * pairs].view(pairs, 2, copies, *pool.shape[1:]).mean(2)
    return F.cosine_similarity(means[:, 0], means[:, 1], dim=-1).mean(0)


def signal_to_noise(curve: dict[int, float]) -> float:
    """Per-draw signal-to-noise r of the model c(n) = n r / (1 + n r) fitted to measured cosines
    {n: c}: the median of n-wise inversions r = c / (n (1 - c)) over the informative points
    (0.02 < c < 0.98); all above: the largest informative bound; all below: from the largest n."""
    informative = {n: c for n, c in curve.items() if 0.02 < c < 0.98}
    if informative:
        values = sorted(c / (n * (1 - c)) for n, c in informative.items())
        return values[len(values) // 2]
    largest = max(curve)
    c = min(max(curve[largest], 1e-3), 0.999)
    return c / (largest * (1 - c))


def eot_sufficiency(context: AuditContext) -> IndicatorResult:
    """Indicator 2: signal-to-noise of the EOT gradient. From 2 x ``eot_max_copies`` (at least
    2 x the run's EOT size) single-draw gradients per image, the cosine of two independent n-copy
    estimates for n = 1, 2, 4, ... (median over images with a gradient), the per-draw
    signal-to-noise fitted to it, and the copies from which on the measured cosine stays at or above
    ``eot_min_cosine`` (beyond the largest measured size: extrapolated from the fit). Warns when the
    run's own size is below it; fails when its cosine is below ``eot_fail_cosine``."""
    name = "eot_sufficiency"
    if not context.uses_gradients:
        return not_applicable(name, f"attack {context.attack.name} takes no gradients")
    options, used = context.options, context.eot_copies
    largest = max(options.eot_max_copies, used)
    context.seed_for(name)
    with context.target() as target:
        pool = draw_gradients(target, context.x, context.y, 2 * largest, max(used, 1))
    alive = pool.abs().sum(-1).amax(0) > 0
    if not bool(alive.any()):
        return not_applicable(name, "no audited image has a non-zero gradient (see zero_gradients)")
    sizes = sorted({2**k for k in range(int(math.log2(largest)) + 1)} | {used})
    curve = {n: float(_pair_cosines(pool[:, alive], n).median()) for n in sizes}
    snr = signal_to_noise(curve)
    target_cosine = options.eot_min_cosine
    passing = [n for n in sizes if all(curve[m] >= target_cosine for m in sizes if m >= n)]
    extrapolated = not passing
    needed = min(passing) if passing else math.ceil(target_cosine / ((1 - target_cosine) * max(snr, 1e-12)))
    needed = max(needed, largest + 1) if extrapolated else needed
    cosine_used = curve[used]
    details = {
        "eot_copies_used": used,
        "cosine_by_copies": {str(n): c for n, c in curve.items()},
        "signal_to_noise_per_draw": snr,
        "copies_needed": needed,
        "images_with_gradient": int(alive.sum()),
        "gradient_draws_per_image": 2 * largest,
    }
    value_text = (
        f"cosine {cosine_used:.2f} at the run's {used} copies; {target_cosine:.2f} needs about {needed} copies"
        + (" (extrapolated from the fitted signal-to-noise)" if extrapolated else "")
    )
    threshold_text = f"warn below {target_cosine:.2f} (SNR 1); fail below {options.eot_fail_cosine:.2f}"
    if cosine_used < options.eot_fail_cosine:
        verdict = Verdict.failed
        fix = f"the attack followed noise: set attack.n_eot={needed} (or more), or average logits over more draws"
    elif cosine_used < target_cosine:
        verdict, fix = Verdict.warned, f"set attack.n_eot={needed} for a gradient whose signal outweighs its noise"
    else:
        verdict, fix = Verdict.passed, ""
    return IndicatorResult(name, cosine_used, target_cosine, verdict, fix, details, value_text, threshold_text)
