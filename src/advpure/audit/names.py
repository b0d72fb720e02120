"""The audit's indicators by name, in report order, with their titles (no heavy imports: the config
schema checks ``task.audit_options.indicators`` against these names)."""

from __future__ import annotations

INDICATOR_NAMES: dict[str, str] = {
    "zero_gradients": "unavailable or zero gradients",
    "eot_sufficiency": "EOT sufficiency",
    "silent_success": "silent success",
    "incomplete_optimization": "incomplete optimization",
    "unbounded_attack": "unbounded attack",
    "approximation_gap": "transfer / approximation gap",
    "black_box": "black-box check",
    "score_stability": "stochastic-score stability",
}
