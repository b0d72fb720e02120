"""Trajectory indicators, from the evaluated attack re-run under a probe (per-image traces):
did it return a worse point than one it had seen (3), and had it stopped improving (4)?"""

from __future__ import annotations

import numpy as np
import torch

from advpure.audit.base import AuditContext, IndicatorResult, Verdict, not_applicable
from advpure.audit.probe import Evaluation
from advpure.audit.statistics import more_wrong


def silent_success(context: AuditContext) -> IndicatorResult:
    """Indicator 3: images whose best-seen iterate (most of the attack's own draws misclassifying,
    then the largest margin) is misclassified by the majority vote of fresh purifications while
    the returned point is not, and significantly so (one-sided Fisher test on the two points'
    wrong draws at level ``alpha``). Fails above ``silent_max_fraction``; a majority flip that is
    not significant warns."""
    name = "silent_success"
    if context.attack.eps <= 0:
        return not_applicable(name, f"attack {context.attack.name} makes no perturbation")
    options = context.options
    run = context.probed()
    moved = (run.best != run.x_adv).flatten(1).any(1)
    context.seed_for("silent success best")
    best_draws = context.predictions(run.best)
    context.seed_for("silent success returned")
    returned_draws = context.predictions(run.x_adv)
    n_draws = best_draws.shape[0]
    best_robust = context.robust(best_draws)
    returned_robust = context.robust(returned_draws)
    flips = (moved & ~best_robust & returned_robust).nonzero().squeeze(1).tolist()
    wrong_best = (best_draws != context.y).sum(0)
    wrong_returned = (returned_draws != context.y).sum(0)
    p_values = {i: more_wrong(int(wrong_best[i]), int(wrong_returned[i]), n_draws) for i in flips}
    silent = [i for i, p in p_values.items() if p < options.alpha]
    fraction = len(silent) / len(moved)
    details = {
        "images_where_best_seen_differs": int(moved.sum()),
        "majority_flips": flips,
        "significant": silent,
        "p_values": {str(i): p for i, p in p_values.items()},
        "draws": n_draws,
    }
    value_text = f"{len(silent)} of {len(moved)} images ({fraction:.0%}); {len(flips)} majority flips in all"
    threshold_text = f"fail above {options.silent_max_fraction:.0%} (Fisher p < {options.alpha}); warn on any flip"
    if fraction > options.silent_max_fraction:
        verdict = Verdict.failed
        fix = (
            "the attack returned a point less adversarial than one it had found: select the returned iterate "
            "by the rescoring rule (most draws misclassifying), not the last one"
        )
    elif flips:
        verdict = Verdict.warned
        fix = "select iterates on more draws (a larger attack.n_eot) so the returned point is the best one"
    else:
        verdict, fix = Verdict.passed, ""
    return IndicatorResult(
        name, fraction, options.silent_max_fraction, verdict, fix, details, value_text, threshold_text
    )


def still_improving(history: list[Evaluation], window: int, min_gain: float, noise_z: float) -> bool:
    """IoAF's incomplete-optimization rule on one image's trace, adapted to EOT noise: the running
    best of the mean margin, rescaled to [0, 1] by the trace's range, rose by more than
    ``min_gain`` over the last ``window`` evaluations, and by more than ``noise_z`` standard errors
    of one evaluation (the median over the trace) in margin units. A trace of fewer than 2
    evaluations cannot show a plateau: it counts as still improving."""
    if len(history) < 2:
        return True
    margins = np.array([e.margin for e in history])
    errors = np.array([e.standard_error for e in history])
    best = np.maximum.accumulate(margins)
    span = float(margins.max() - margins.min())
    if span <= 0:
        return False
    k = min(len(history), window)
    gain = float(best[-1] - best[-k])
    return gain / span > min_gain and gain > noise_z * float(np.median(errors))


def incomplete_optimization(context: AuditContext) -> IndicatorResult:
    """Indicator 4: the fraction of audited images the re-run attack failed on (robust by the
    majority vote of fresh purifications of its output) whose margin trace was still improving at
    the end (:func:`still_improving`; every evaluation of the image's iterates, in call order,
    restarts and sub-attacks included). Fails above ``incomplete_max_fraction``; any warns."""
    name = "incomplete_optimization"
    if context.attack.eps <= 0:
        return not_applicable(name, f"attack {context.attack.name} makes no perturbation")
    options = context.options
    run = context.probed()
    robust = context.rescore(run.x_adv, "incomplete optimization")
    lengths = [len(h) for h in run.history]
    improving = torch.tensor(
        [
            still_improving(h, options.incomplete_window, options.incomplete_min_gain, options.incomplete_noise_z)
            for h in run.history
        ],
        dtype=torch.bool,
    )
    flagged = (robust.cpu() & improving).nonzero().squeeze(1).tolist()
    fraction = len(flagged) / len(lengths)
    details = {
        "robust_images": int(robust.sum()),
        "flagged": flagged,
        "evaluations_per_image": {"min": min(lengths), "median": int(np.median(lengths)), "max": max(lengths)},
        "rule": f"running best rescaled rose > {options.incomplete_min_gain} over the last {options.incomplete_window} "
        f"evaluations and > {options.incomplete_noise_z} standard errors",
    }
    value_text = f"{len(flagged)} of {len(lengths)} images ({fraction:.0%}) robust but still improving"
    threshold_text = f"fail above {options.incomplete_max_fraction:.0%}; warn above 0"
    if fraction > options.incomplete_max_fraction:
        verdict, fix = Verdict.failed, "the attack stopped while still gaining: raise attack.n_iter (x2 or more)"
    elif flagged:
        verdict, fix = Verdict.warned, "some points were still gaining: raise attack.n_iter or add restarts"
    else:
        verdict, fix = Verdict.passed, ""
    return IndicatorResult(
        name, fraction, options.incomplete_max_fraction, verdict, fix, details, value_text, threshold_text
    )
