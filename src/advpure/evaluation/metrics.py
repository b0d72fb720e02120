"""Accuracy with its 95% Wilson score interval."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Accuracy:
    """``correct`` of ``n`` images, as a fraction with its Wilson interval."""

    correct: int
    n: int
    value: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def percent(self) -> str:
        """e.g. ``'93.75% [85.0, 97.5]'``."""
        return f"{100 * self.value:.2f}% [{100 * self.ci_low:.1f}, {100 * self.ci_high:.1f}]"


def wilson_interval(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (default 95%); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy(correct: int, n: int) -> Accuracy:
    """An ``Accuracy`` from counts."""
    low, high = wilson_interval(correct, n)
    return Accuracy(int(correct), int(n), correct / n if n else 0.0, low, high)
