"""The number an evaluation returns to a hyper-parameter search (Hydra's Optuna sweeper).

A search over a defense's knobs (a guidance scale, t*) that maximizes robust accuracy alone
drifts to settings that destroy clean accuracy. The objective is therefore constrained: the
chosen robust metric when the defended clean accuracy reaches ``clean_floor``, and otherwise
``clean - clean_floor - 1`` (< 0): below every feasible value, and larger the closer the job came
to the floor, so the search still moves toward feasible settings.
"""

from __future__ import annotations

from typing import Any


def objective_value(metrics: dict[str, Any], metric: str, clean_floor: float) -> dict[str, Any]:
    """``{"value", "metric", "clean_floor", "feasible"}`` from an evaluation's ``metrics``.

    Args:
        metrics: ``results["metrics"]`` (each entry has ``value`` in [0, 1]).
        metric: ``defended_robust``, ``defended_robust_majority`` or ``defended_robust_worst``.
        clean_floor: the least defended clean accuracy (in [0, 1]) a setting must keep.

    Returns:
        ``value`` in [0, 1] when feasible, in [-2, -1) otherwise.
    """
    clean = metrics["defended_clean"]["value"]
    feasible = clean >= clean_floor
    value = metrics[metric]["value"] if feasible else clean - clean_floor - 1.0
    return {"value": value, "metric": metric, "clean_floor": clean_floor, "feasible": feasible}
