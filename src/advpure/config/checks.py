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


#: Seeds go to ``numpy.random`` (Lightning's ``seed_everything``, data splits and subsets), which
#: takes unsigned 32-bit integers only.
SEED_MAX = 2**32 - 1


def require_seed(key: str, value: int | None, *, allow_none: bool = False) -> None:
    """Raise ``ConfigError`` naming ``key`` unless ``value`` is a seed numpy accepts, ``[0, 2**32 - 1]``
    (Lightning would otherwise replace an out-of-range seed by a random one, with only a warning)."""
    if value is None and allow_none:
        return
    if value is None or not 0 <= value <= SEED_MAX:
        raise ConfigError(
            key,
            f"{value!r} is not a valid seed (numpy's random generators take integers in [0, {SEED_MAX}])",
            f"set an integer in [0, {SEED_MAX}] (e.g. 0)",
        )


def require_path(key: str, value: str | None) -> None:
    """Raise ``ConfigError`` naming ``key`` if ``value`` is an empty (or blank) path: ``''`` would
    name the current folder. ``None`` (no file) passes."""
    if value is not None and not str(value).strip():
        raise ConfigError(
            key,
            f"is an empty path ({value!r})",
            "set it to null for none, or to the file's path",
        )


def require_step_fits(t_star: float, dt: float, *, usual_t_star: float, usual_dt: float) -> None:
    """Raise ``ConfigError`` unless one solver step ``dt`` fits in the purification time ``t_star``.

    When it does not, one of the two was set wrongly: the error names the one further (as a
    ratio) from its usual value, ``t_star`` (too small for one step: at least ``dt``) or ``dt``
    (longer than the whole purification: at most ``t_star``).
    """
    if t_star >= dt:
        return
    if math.log(usual_t_star / t_star) >= math.log(dt / usual_dt):
        raise ConfigError(
            "t_star",
            f"{t_star!r} is too small for one solver step of dt={dt:g}",
            f"set t_star >= {dt:g} (the smallest value at this dt), or a smaller dt",
        )
    raise ConfigError(
        "dt",
        f"{dt!r} is longer than the whole purification (t_star={t_star:g})",
        f"set a value in (0, {t_star:g}] (at most t_star), or a larger t_star",
    )


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    left = "(" if low_open else "["
    right = ")" if high_open or math.isinf(high) else "]"
    return f"{left}{low:g}, {high:g}{right}"
