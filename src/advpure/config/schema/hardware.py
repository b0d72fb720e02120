"""Schemas of the ``hardware`` group: Lightning Trainer placement, and SLURM jobs of a sweep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from advpure.config.checks import require_at_least
from advpure.config.enums import Accelerator


@dataclass
class SlurmSchema:
    """One SLURM job per sweep job (``hardware=slurm``, Hydra's submitit launcher reads these)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 240
    gpus_per_job: int = 1
    cpus_per_job: int = 8
    mem_gb: int = 64
    max_parallel_jobs: int = 64

    def __post_init__(self) -> None:
        counts = {
            "time_min": self.time_min,
            "gpus_per_job": self.gpus_per_job,
            "cpus_per_job": self.cpus_per_job,
            "mem_gb": self.mem_gb,
            "max_parallel_jobs": self.max_parallel_jobs,
        }
        for key, value in counts.items():
            require_at_least(key, value, 1)


@dataclass
class HardwareSchema:
    """Lightning Trainer placement: accelerator, devices, strategy, precision; ``slurm``: the cluster
    job of each sweep job (``hardware=slurm`` only)."""

    accelerator: Accelerator = Accelerator.cpu
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    slurm: SlurmSchema | None = None

    def __post_init__(self) -> None:
        require_at_least("num_nodes", self.num_nodes, 1)
        if isinstance(self.devices, int):
            require_at_least("devices", self.devices, 1)


HARDWARE_SCHEMAS: dict[str, type[HardwareSchema]] = {"base": HardwareSchema}
