"""Indicator 7: a gradient-free attack must not beat the white-box one.

Square (Andriushchenko et al. 2020, pyautoattack's implementation, margin loss) queries the
defended model through EOT: each query is the mean of ``square_eot`` draws' logits, so it climbs
the expected margin of the randomized defense rather than one draw's. It needs no gradient, so
gradient masking, wrong gradient modes and broken backward passes cannot stop it.
"""

from __future__ import annotations

import torch
from pyautoattack.square import SquareAttack
from torch import nn

from advpure.audit.base import AuditContext, IndicatorResult, Verdict, not_applicable
from advpure.audit.statistics import compare_fooled
from advpure.evaluation.batches import stream_seed


class MeanLogits(nn.Module):
    """x (B, C, H, W) -> the mean logits (B, K) of ``n_draws`` draws of ``model`` (one batched call)."""

    def __init__(self, model: nn.Module, n_draws: int) -> None:
        super().__init__()
        self.model, self.n_draws = model, int(n_draws)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x.repeat(self.n_draws, *[1] * (x.ndim - 1)))
        return logits.view(self.n_draws, x.shape[0], -1).mean(0)


@torch.no_grad()
def square_eot(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float, n_queries: int, n_eot: int, seed: int
) -> torch.Tensor:
    """Square with EOT queries on x (B, C, H, W) in [0, 1], y (B,): its best-margin iterate per
    image, (B, C, H, W) in [0, 1] within the ``norm`` ball of radius ``eps``."""
    square = SquareAttack(
        MeanLogits(model, n_eot), norm=norm, n_queries=n_queries, eps=eps, seed=seed, verbose=False, loss="margin"
    )
    square.init_hyperparam(x)
    torch.random.manual_seed(seed)
    _, x_best = square.attack_single_run(x, y)
    return x_best.detach()


def black_box(context: AuditContext) -> IndicatorResult:
    """Indicator 7: Square with EOT (``square_queries`` queries of ``square_eot`` draws) at the
    evaluated eps, its points rescored by majority vote of fresh purifications, against the
    evaluation's own fooled images (its records, else the probed re-run): if Square fools
    significantly more (McNemar's exact test, ``alpha``) the white-box attack fails (fail); more
    but not significantly: warn."""
    name = "black_box"
    if not context.uses_gradients:
        return not_applicable(name, f"attack {context.attack.name} is itself gradient-free")
    if context.attack.eps <= 0:
        return not_applicable(name, f"attack {context.attack.name} makes no perturbation")
    options = context.options
    seed = stream_seed(context.seed, 0, "audit/square") % (2**31)
    x_adv = square_eot(
        context.defended,
        context.x,
        context.y,
        context.norm.value,
        context.eps,
        options.square_queries,
        options.square_eot,
        seed,
    )
    robust = context.rescore(x_adv, name)
    evaluated = context.evaluated_robust()
    comparison = compare_fooled(~evaluated, ~robust)
    square_accuracy, evaluated_accuracy = float(robust.float().mean()), float(evaluated.float().mean())
    value = evaluated_accuracy - square_accuracy
    details = {
        "square_robust_accuracy": square_accuracy,
        "evaluated_robust_accuracy": evaluated_accuracy,
        **comparison.as_dict(),
        "queries": options.square_queries,
        "eot_per_query": options.square_eot,
    }
    value_text = (
        f"Square {square_accuracy:.0%} vs the evaluated attack {evaluated_accuracy:.0%} robust; "
        f"{comparison.b_only} images only Square fooled, {comparison.a_only} only the attack"
    )
    threshold_text = f"fail if Square fools significantly more images (McNemar p < {options.alpha}); warn if more"
    if comparison.beats and comparison.p_value < options.alpha:
        verdict = Verdict.failed
        fix = (
            "a gradient-free attack beats the white-box one: its gradients are masked or wrong; report the "
            "stronger number (attack=strongest, or Square via attack=torchattacks attack.name=Square)"
        )
    elif comparison.beats:
        verdict, fix = Verdict.warned, "Square fooled some points the attack did not: add it to the evaluation"
    else:
        verdict, fix = Verdict.passed, ""
    budget = f"Square: {options.square_queries} queries x EOT {options.square_eot}, margin loss"
    return IndicatorResult(name, value, 0.0, verdict, fix, details, value_text, threshold_text, budget=budget)
