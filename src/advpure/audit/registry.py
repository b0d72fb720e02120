"""INDICATORS: name -> indicator function ``(AuditContext) -> IndicatorResult``, in report order."""

from __future__ import annotations

from collections.abc import Callable

from advpure.audit.base import AuditContext, IndicatorResult
from advpure.audit.black_box import black_box
from advpure.audit.gradients import eot_sufficiency, zero_gradients
from advpure.audit.names import INDICATOR_NAMES
from advpure.audit.reruns import approximation_gap, unbounded_attack
from advpure.audit.stability import score_stability
from advpure.audit.trajectory import incomplete_optimization, silent_success

Indicator = Callable[[AuditContext], IndicatorResult]

INDICATORS: dict[str, Indicator] = {
    "zero_gradients": zero_gradients,
    "eot_sufficiency": eot_sufficiency,
    "silent_success": silent_success,
    "incomplete_optimization": incomplete_optimization,
    "unbounded_attack": unbounded_attack,
    "approximation_gap": approximation_gap,
    "black_box": black_box,
    "score_stability": score_stability,
}
if list(INDICATORS) != list(INDICATOR_NAMES):  # one list of names, checked at import
    raise ImportError("advpure.audit: INDICATORS and INDICATOR_NAMES disagree")
