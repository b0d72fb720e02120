"""TaskName -> task function, and the store each task writes its finished work to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from advpure.config.enums import TaskName
from advpure.tasks.audit import audit
from advpure.tasks.certify import certify
from advpure.tasks.context import RunContext
from advpure.tasks.evaluate import evaluate
from advpure.tasks.train_agdm_aux import train_agdm_aux
from advpure.tasks.train_classifier import train_classifier
from advpure.tasks.train_diffusion import train_diffusion

TASKS: dict[TaskName, Callable[[DictConfig, RunContext], dict[str, Any]]] = {
    TaskName.evaluate: evaluate,
    TaskName.train_classifier: train_classifier,
    TaskName.train_diffusion: train_diffusion,
    TaskName.train_agdm_aux: train_agdm_aux,
    TaskName.certify: certify,
    TaskName.audit: audit,
}
# The store each task keeps its finished work in (checked writable before any work starts).
TASK_STORES: dict[TaskName, str] = {
    TaskName.evaluate: "paths.evaluations",
    TaskName.certify: "paths.evaluations",
    TaskName.audit: "paths.evaluations",
    TaskName.train_classifier: "paths.training",
    TaskName.train_diffusion: "paths.training",
    TaskName.train_agdm_aux: "paths.training",
}
