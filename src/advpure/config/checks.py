"""Range checks used by the schemas' ``__post_init__`` (run once by ``OmegaConf.to_object``)."""

from __future__ import annotations

import math

from advpure.errors import ConfigError


def require_interval(
    key: str,
    value: float | None,
    low: float,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> None:
    """Raise ``ConfigError`` naming ``key`` unless ``value`` lies in the interval.

    The interval is ``[low, high]``; ``low_open``/``high_open`` exclude an end point.
    """
    if value is None:
        if allow_none:
            return
        raise ConfigError(key, "is null", f"set a number in {_interval(low, high, low_open, high_open)}")
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above or (isinstance(value, float) and math.isnan(value)):
        raise ConfigError(
            key,
            f"{value!r} is out of range",
            f"set a value in {_interval(low, high, low_open, high_open)}",
        )


def require_at_least(key: str, value: int | None, minimum: int, *, allow_none: bool = False) -> None:
    """Raise ``ConfigError`` naming ``key`` unless ``value >= minimum`` (an integer count)."""
    if value is None and allow_none:
        return
    if value is None or value < minimum:
        raise ConfigError(key, f"{value!r} is too small", f"set an integer >= {minimum}")


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    left = "(" if low_open else "["
    right = ")" if high_open or math.isinf(high) else "]"
    return f"{left}{low:g}, {high:g}{right}"
