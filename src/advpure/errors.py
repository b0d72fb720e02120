"""Errors raised before long work starts: each names the key or path and the fix."""

from __future__ import annotations


class AdvpureError(Exception):
    """Base class of advpure's user-facing errors (printed without a traceback by run.py)."""


class ConfigError(AdvpureError, ValueError):
    """A config value is missing, of the wrong type, out of range or incompatible.

    Args:
        key: dotted config key, e.g. ``purifier.t_star``.
        problem: what is wrong with the value.
        fix: what the user should set instead.
    """

    def __init__(self, key: str, problem: str, fix: str = "") -> None:
        self.key = key
        self.problem = problem
        self.fix = fix
        message = f"config key '{key}': {problem}"
        if fix:
            message += f". Fix: {fix}"
        super().__init__(message)

    def with_prefix(self, prefix: str) -> ConfigError:
        """The same error with the key placed under ``prefix`` (e.g. a config group name)."""
        return ConfigError(f"{prefix}.{self.key}" if prefix else self.key, self.problem, self.fix)


class CheckpointError(AdvpureError, FileNotFoundError):
    """A checkpoint file is missing, unreadable, or built for another architecture/dataset."""


class DataError(AdvpureError, FileNotFoundError):
    """A dataset folder is missing or has the wrong layout."""


class OutputError(AdvpureError, OSError):
    """A result or checkpoint cannot be written (read-only folder, full disk); files written
    earlier are left as they were."""
