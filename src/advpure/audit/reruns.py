"""Indicators that run the evaluated attack's family again at a reduced budget: at a much larger eps
(5), and under every other gradient mode (6)."""

from __future__ import annotations

from advpure.audit.base import AuditContext, IndicatorResult, Verdict, not_applicable
from advpure.audit.statistics import compare_fooled
from advpure.purifiers.gradients import GRADIENT_RULES
from advpure.purifiers.identity import IdentityPurifier


def unbounded_attack(context: AuditContext) -> IndicatorResult:
    """Indicator 5: the attack at ``eps_factor`` x eps (capped at the threat model's largest
    meaningful eps) under the evaluated grad mode must take robust accuracy (majority vote of fresh
    purifications) to at most ``unbounded_max_robust``: the enlarged ball holds images of other
    classes, so what survives it is the attack's weakness, not the defense's strength."""
    name = "unbounded_attack"
    if context.make_attack is None:
        return not_applicable(name, "no attack factory to re-run the attack")
    if context.attack.eps <= 0:
        return not_applicable(name, f"attack {context.attack.name} makes no perturbation")
    options = context.options
    eps = min(context.eps * options.eps_factor, context.largest_eps())
    x_adv = context.rerun(name, eps=eps)
    robust = context.rescore(x_adv, name)
    value = float(robust.float().mean())
    details = {"eps": eps, "evaluated_eps": context.eps, "robust_images": robust.nonzero().squeeze(1).tolist()}
    value_text = f"robust accuracy {value:.0%} at eps {eps:.4g} ({eps / context.eps:.3g}x)"
    threshold_text = f"fail above {options.unbounded_max_robust:.0%}"
    if value > options.unbounded_max_robust:
        verdict = Verdict.failed
        fix = (
            "the attack cannot fool the defense even with a huge budget: its gradient or optimization is broken "
            "(see zero_gradients, eot_sufficiency); fix the attack before trusting the number at eps"
        )
    else:
        verdict, fix = Verdict.passed, ""
    return IndicatorResult(
        name,
        value,
        options.unbounded_max_robust,
        verdict,
        fix,
        details,
        value_text,
        threshold_text,
        budget=context.budget_text(),
    )


def approximation_gap(context: AuditContext) -> IndicatorResult:
    """Indicator 6: the attack re-run under every gradient mode the purifier supports (full and
    its approximations: adjoint, surrogate, bpda, blind, guidance_blind), each at the same reduced
    budget; the evaluated mode's fooled images (its re-run or its evaluation) against each other
    mode's, by McNemar's exact test. The evaluated mode must not be beaten: an exact attack beaten
    by an approximation is failing (masking, or a broken optimizer); an approximation beaten by the
    exact gradient overstated robustness. Significant (``alpha``): fail; more images but not
    significant: warn. Value: the largest robust-accuracy gap to another mode."""
    name = "approximation_gap"
    if context.make_attack is None:
        return not_applicable(name, "no attack factory to re-run the attack")
    if not context.uses_gradients:
        return not_applicable(name, f"attack {context.attack.name} takes no gradients")
    if isinstance(context.purifier, IdentityPurifier):
        return not_applicable(name, "no purifier: every gradient mode is the classifier's gradient")
    modes = context.modes()
    if len(modes) < 2:
        return not_applicable(name, "only one gradient mode to compare")
    options, evaluated = context.options, context.grad_mode
    robust = {}
    for mode in modes:
        robust[mode] = context.rescore(context.rerun(f"mode {mode.value}", mode=mode), f"mode {mode.value}")
    fooled_evaluated = ~robust[evaluated] | ~context.evaluated_robust()
    accuracy_evaluated = float((~fooled_evaluated).float().mean())
    comparisons = {mode: compare_fooled(fooled_evaluated, ~robust[mode]) for mode in modes if mode != evaluated}
    gaps = {mode: accuracy_evaluated - float(robust[mode].float().mean()) for mode in comparisons}
    worst = max(gaps, key=lambda mode: gaps[mode])
    significant = [mode for mode, c in comparisons.items() if c.beats and c.p_value < options.alpha]
    beating = [mode for mode, c in comparisons.items() if c.beats]
    details = {
        "evaluated_mode": evaluated.value,
        "robust_accuracy": {mode.value: float(r.float().mean()) for mode, r in robust.items()},
        "evaluated_robust_accuracy_combined": accuracy_evaluated,
        "comparisons": {mode.value: c.as_dict() for mode, c in comparisons.items()},
    }
    value = gaps[worst]
    accuracies = ", ".join(f"{mode.value} {float(r.float().mean()):.0%}" for mode, r in robust.items())
    lead = (
        f"{worst.value} leaves {value:.0%} fewer robust than the evaluated {evaluated.value}"
        if value > 0
        else f"no mode leaves fewer robust than the evaluated {evaluated.value}"
    )
    value_text = (
        f"{lead} ({accuracies} robust at the reduced budget; {evaluated.value} with its evaluation: "
        f"{accuracy_evaluated:.0%})"
    )
    threshold_text = f"fail if another mode fools significantly more images (McNemar p < {options.alpha}); warn if more"
    if significant or beating:
        which = ", ".join(mode.value for mode in (significant or beating))
        verdict = Verdict.failed if significant else Verdict.warned
        if GRADIENT_RULES[evaluated].approximation:
            fix = f"the {evaluated.value} approximation overstates robustness ({which} fools more): use the strongest"
        else:
            fix = (
                f"the exact-gradient attack is beaten by {which}: its gradient is masked or its optimization fails; "
                "report the strongest mode's number and check zero_gradients / eot_sufficiency"
            )
    else:
        verdict, fix = Verdict.passed, ""
    return IndicatorResult(
        name, value, 0.0, verdict, fix, details, value_text, threshold_text, budget=context.budget_text()
    )
