"""OmegaConf resolvers used by conf/: ``${advpure_root:}`` is the project folder;
``${job_dirname:${hydra.job.override_dirname}}`` is a sweep job's folder name;
``${sqlite_url:<file>}`` is an SQLAlchemy URL for a local SQLite file (its folder is created);
``${enum_value:${task.name}}`` is an enum field's value (``evaluate``, not ``TaskName.evaluate``);
``${vp_beta:${diffusion.schedule.beta_start},${diffusion.schedule.num_timesteps}}`` is the
continuous VP-SDE's beta_min of the diffusion model's schedule; ``${advpure_groups:}`` lists the
user-facing config groups (``python run.py --help``)."""

from __future__ import annotations

import hashlib
import os
from enum import Enum
from pathlib import Path

from omegaconf import OmegaConf

from advpure.config.catalog import groups_text, project_root

JOB_DIRNAME_LIMIT = 120


def job_dirname(override_dirname: str, limit: int = JOB_DIRNAME_LIMIT) -> str:
    """One folder name from a job's overrides: a ``/`` in a value (``dataset.root=/data``) would nest
    folders, so it becomes ``_``; a name longer than ``limit`` characters (file systems stop at 255)
    is cut and ends with a hash of the whole, so different overrides keep different names."""
    name = override_dirname.replace(os.sep, "_")
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(override_dirname.encode()).hexdigest()[:8]
    return f"{name[: limit - 9]}~{digest}"


def sqlite_url(path: str) -> str:
    """``sqlite:///<absolute path>``, creating the folder (SQLite cannot create it, and an Optuna
    study stored there must outlive the sweep folder so that a re-run resumes it)."""
    file = Path(path).expanduser().resolve()
    file.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{file}"


def enum_value(value: object) -> str:
    """The plain value of an enum field (a run folder's name says ``evaluate``, not ``TaskName.evaluate``)."""
    return str(value.value) if isinstance(value, Enum) else str(value)


def vp_beta(beta: float, num_timesteps: int) -> float:
    """The continuous VP-SDE's beta at a discrete schedule's end point: beta * T (1e-4 -> 0.1,
    0.02 -> 20 for the 1000-step DDPM schedule)."""
    return float(beta) * int(num_timesteps)


def register_resolvers() -> None:
    """Register advpure's resolvers once (idempotent)."""
    if not OmegaConf.has_resolver("advpure_root"):
        OmegaConf.register_new_resolver("advpure_root", lambda: str(project_root()))
    if not OmegaConf.has_resolver("job_dirname"):
        OmegaConf.register_new_resolver("job_dirname", job_dirname)
    if not OmegaConf.has_resolver("sqlite_url"):
        OmegaConf.register_new_resolver("sqlite_url", sqlite_url)
    if not OmegaConf.has_resolver("advpure_groups"):
        OmegaConf.register_new_resolver("advpure_groups", groups_text)
    if not OmegaConf.has_resolver("enum_value"):
        OmegaConf.register_new_resolver("enum_value", enum_value)
    if not OmegaConf.has_resolver("vp_beta"):
        OmegaConf.register_new_resolver("vp_beta", vp_beta)
