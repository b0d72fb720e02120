"""What makes two runs the same work: a key of everything that changes their numbers, and its hash.

Shared by the evaluation batch store (:mod:`advpure.evaluation.store`) and training resume
(:mod:`advpure.training.resume`): the resolved config without the keys that cannot change the
result, advpure's own source, the versions of the packages that change numbers, and the size and
modification time of every weights file or folder the config names.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

VERSIONED_PACKAGES = (
    "advpure",
    "torch",
    "torchvision",
    "torchsde",
    "pyautoattack",
    "torchattacks",
    "diffusers",
    "hydra-core",
    "omegaconf",
    "pytorch-lightning",
    "wandb",
    "scikit-learn",
    "numpy",
)
"""The packages whose versions change numbers (recorded in results, part of every work key)."""


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages that change numbers."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@functools.cache
def source_digest() -> str:
    """SHA-256 of advpure's own source files, read once per process (the code that is running)."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def weights_file_stats(config: dict[str, Any]) -> dict[str, list[int]]:
    """``{file: [size, mtime_ns]}`` for every existing checkpoint, weights file or diffusers folder
    the config names (classifier, diffusion, AGDM's auxiliary network, a training's ``task.init_from``)."""
    auxiliary = (config.get("purifier") or {}).get("auxiliary") or {}
    named = [
        config.get("classifier", {}).get("checkpoint"),
        config.get("classifier", {}).get("weights"),
        config.get("diffusion", {}).get("checkpoint"),
        config.get("diffusion", {}).get("pretrained"),
        config.get("diffusion", {}).get("weights"),
        auxiliary.get("checkpoint"),
        auxiliary.get("weights"),
        (config.get("task") or {}).get("init_from"),
    ]
    stats: dict[str, list[int]] = {}
    for name in filter(None, named):
        base = Path(name)
        candidates = [base, *base.parent.glob(base.name + ".*")] if base.parent.is_dir() else [base]
        for path in candidates:
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                if file.is_file():
                    stat = file.stat()
                    stats[str(file)] = [stat.st_size, stat.st_mtime_ns]
    return stats


RUN_NEUTRAL_KEYS = (
    "logger",
    "paths",
    "hydra",
    "budget",
    "hardware.devices",
    "hardware.strategy",
    "hardware.num_nodes",
    "task.resume",
)
"""Config keys that change no task's numbers: where results go, how they are logged, how work is
spread over devices, and whether a run resumes. Each task adds its own (``work_key``'s callers)."""


def work_key(config: dict[str, Any], neutral_keys: Iterable[str]) -> dict[str, Any]:
    """The config without ``neutral_keys`` (dotted; a group name drops the group), advpure's
    source digest, the package versions and the weights files' stats."""
    kept = json.loads(json.dumps(config, default=str))
    for dotted in neutral_keys:
        *parents, leaf = dotted.split(".")
        node = kept
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return {
        "config": kept,
        "source": source_digest(),
        "versions": package_versions(),
        "checkpoints": weights_file_stats(config),
    }


def fingerprint(key: dict[str, Any]) -> str:
    """A short hex digest (16 characters) of a key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
