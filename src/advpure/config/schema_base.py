"""The base schema every task schema extends, apart so that a task's schema can live in its own
module (``schema_certify.py``) which :mod:`advpure.config.schema` imports and registers."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from advpure.config.enums import TaskName


@dataclass
class TaskSchema:
    """What run.py does; ``name`` selects the task function."""

    name: TaskName = MISSING
