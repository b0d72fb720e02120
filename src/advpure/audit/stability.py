"""Indicator 8: how much does the reported single-draw number move between re-scorings?

Single-draw robust accuracy uses one purification per image (draw 0 of the clean and of the
adversarial image). Scoring the same images with draw j instead gives another number; over the
evaluation's D recorded draws, image i is robust in a fraction q_i of them, and the single-draw
accuracy's standard deviation across re-scorings is sd = sqrt(sum_i q_i (1 - q_i)) / N (draws
independent). The number's own uncertainty from the choice of images is the binomial standard
error se = sqrt(p (1 - p) / N), p = mean q_i; sd <= se always (Jensen), and their ratio says how
much re-scoring noise the reported number carries on top of the image sampling its 95% interval
states. Averaging k re-scorings divides sd by sqrt(k): the number needs k = (sd / (r se))^2 of
them to keep the ratio at most r (``stability_max_ratio``).
"""

from __future__ import annotations

import math

import torch

from advpure.audit.base import AuditContext, IndicatorResult, Verdict
from advpure.audit.statistics import draws_from_records


def rescoring_spread(clean: torch.Tensor, adv: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """From draws (D, N) on the clean and the adversarial images and labels (N,): the single-draw
    robust accuracy of each re-scoring j (clean draw j and adversarial draw j correct), its mean
    and range, its standard deviation across re-scorings (analytic ``sd``; ``sd_empirical`` over
    the D draws) and the binomial standard error ``se`` of the mean's image sampling."""
    robust = (clean == y) & (adv == y)  # (D, N)
    per_draw = robust.float().mean(1)
    q = robust.float().mean(0)
    n = robust.shape[1]
    p = min(max(float(q.mean()), 0.5 / n), 1 - 0.5 / n)
    return {
        "draws": int(robust.shape[0]),
        "images": n,
        "single_draw_reported": float(per_draw[0]),
        "mean_over_draws": float(per_draw.mean()),
        "min_over_draws": float(per_draw.min()),
        "max_over_draws": float(per_draw.max()),
        "sd": float((q * (1 - q)).sum().sqrt() / n),
        "sd_empirical": float(per_draw.std()) if per_draw.numel() > 1 else 0.0,
        "se": math.sqrt(p * (1 - p) / n),
    }


def score_stability(context: AuditContext) -> IndicatorResult:
    """Indicator 8: the spread of single-draw robust accuracy across re-scorings of every evaluated
    image (all records; without records, the audited images: clean draws and fresh draws of the
    probed re-run's output), as a ratio to the number's image-sampling standard error, and the
    re-scorings k it needs. Passes at a ratio of at most ``stability_max_ratio``; warns when k is at
    most the draws the run recorded (the mean over them is in the details); fails when fewer."""
    name = "score_stability"
    options = context.options
    records = context.all_records if context.all_records is not None else context.records
    if records:
        clean = draws_from_records(records, "defended_clean_draws")
        adv = draws_from_records(records, "defended_adv_draws")
        labels = torch.tensor([int(r["label"]) for r in records])
        source = "the evaluation's records"
    else:
        clean, adv, labels = context.clean_draws().cpu(), context.evaluated_adv_draws().cpu(), context.y.cpu()
        source = "the audited images (fresh draws)"
    spread = rescoring_spread(clean, adv, labels)
    ratio, draws = spread["sd"] / spread["se"], spread["draws"]
    needed = max(1, math.ceil((ratio / options.stability_max_ratio) ** 2 - 1e-9))
    details = {**spread, "ratio": ratio, "draws_needed": needed, "source": source}
    value_text = (
        f"sd {100 * spread['sd']:.1f} points across re-scorings of {spread['images']} images, {ratio:.2f}x the "
        f"image-sampling error {100 * spread['se']:.1f} (single draw {spread['single_draw_reported']:.1%}, range "
        f"{spread['min_over_draws']:.1%}-{spread['max_over_draws']:.1%} over {draws} draws); needs {needed} draw(s)"
    )
    threshold_text = (
        f"pass at a ratio <= {options.stability_max_ratio:g}; fail if it needs more draws than were recorded"
    )
    if needed <= 1:
        verdict, fix = Verdict.passed, ""
    elif needed <= draws:
        verdict = Verdict.warned
        fix = (
            f"the single-draw number moves by {100 * spread['sd']:.1f} points between re-scorings: quote the mean "
            f"over {needed} draws ({spread['mean_over_draws']:.1%} over all {draws}) or the majority vote"
        )
    else:
        verdict = Verdict.failed
        fix = f"record at least {needed} draws (task.n_vote / task.n_worst)"
    return IndicatorResult(name, ratio, options.stability_max_ratio, verdict, fix, details, value_text, threshold_text)
