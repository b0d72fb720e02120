"""Indicator 8: how much does the reported single-draw number move between re-scorings?

Single-draw robust accuracy uses one purification per image (draw 0 of the clean and of the
adversarial image). Scoring the same images with draw j instead gives another number; over the
evaluation's D recorded draws, image i is robust in a fraction q_i of them, and the single-draw
accuracy's standard deviation across re-scorings is sqrt(sum_i q_i (1 - q_i)) / N (draws
independent). Averaging k re-scorings divides it by sqrt(k): the reported number needs
k = (sd / target)^2 of them to be stable to ``stability_max_sd``.
"""

from __future__ import annotations

import math

import torch

from advpure.audit.base import AuditContext, IndicatorResult, Verdict
from advpure.audit.statistics import draws_from_records


def rescoring_spread(clean: torch.Tensor, adv: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """From draws (D, N) on the clean and the adversarial images and labels (N,): the single-draw
    robust accuracy of each re-scoring j (clean draw j and adversarial draw j correct), its mean,
    range, the analytic standard deviation across re-scorings and the empirical one (D > 1)."""
    robust = (clean == y) & (adv == y)  # (D, N)
    per_draw = robust.float().mean(1)
    q = robust.float().mean(0)
    n = robust.shape[1]
    sd = float((q * (1 - q)).sum().sqrt() / n)
    empirical = float(per_draw.std()) if per_draw.numel() > 1 else 0.0
    return {
        "draws": int(robust.shape[0]),
        "images": n,
        "single_draw_reported": float(per_draw[0]),
        "mean_over_draws": float(per_draw.mean()),
        "min_over_draws": float(per_draw.min()),
        "max_over_draws": float(per_draw.max()),
        "sd": sd,
        "sd_empirical": empirical,
    }


def score_stability(context: AuditContext) -> IndicatorResult:
    """Indicator 8: the spread of single-draw robust accuracy across re-scorings of every evaluated
    image (all records; without records, the audited images: clean draws and fresh draws of the
    probed re-run's output) and the re-scorings k the reported number needs. Passes when one draw
    is within ``stability_max_sd``; warns when k is at most the draws the run recorded (the mean over
    them is in the details); fails when the run recorded fewer than k."""
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
    sd, draws = spread["sd"], spread["draws"]
    needed = max(1, math.ceil((sd / options.stability_max_sd) ** 2 - 1e-9))
    details = {**spread, "draws_needed": needed, "source": source}
    value_text = (
        f"sd {100 * sd:.2f} points across re-scorings of {spread['images']} images "
        f"(single draw {spread['single_draw_reported']:.2%}, range {spread['min_over_draws']:.2%}-"
        f"{spread['max_over_draws']:.2%} over {draws} draws); needs {needed} draw(s)"
    )
    limit = 100 * options.stability_max_sd
    threshold_text = f"pass at sd <= {limit:.2g} points; fail if it needs more draws than were recorded"
    if needed <= 1:
        verdict, fix = Verdict.passed, ""
    elif needed <= draws:
        verdict = Verdict.warned
        fix = (
            f"the single-draw number moves by {100 * sd:.1f} points between re-scorings: quote the mean over "
            f"{needed} draws ({spread['mean_over_draws']:.2%} over all {draws}) or the majority vote"
        )
    else:
        verdict = Verdict.failed
        fix = f"record at least {needed} draws (task.n_vote / task.n_worst) or evaluate more images"
    return IndicatorResult(name, sd, options.stability_max_sd, verdict, fix, details, value_text, threshold_text)
