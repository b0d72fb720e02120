"""The root schema: one typed field per config group, the paths, the seed and the budget's name."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from advpure.config.checks import require_seed
from advpure.config.schema.attack import AttackSchema
from advpure.config.schema.classifier import ClassifierSchema
from advpure.config.schema.dataset import DatasetSchema
from advpure.config.schema.diffusion import DiffusionSchema
from advpure.config.schema.hardware import HardwareSchema
from advpure.config.schema.logger import LoggerSchema
from advpure.config.schema.purifier import PurifierSchema
from advpure.config.schema.task import TaskSchema


@dataclass
class PathsSchema:
    """Where shipped checkpoints, local datasets, completed evaluation batches and the resume
    state of training tasks (``training``: one folder per training config) live."""

    root: str = MISSING
    checkpoints: str = MISSING
    data: str = MISSING
    evaluations: str = MISSING
    training: str = MISSING


@dataclass
class RootSchema:
    """The whole config: one typed field per group."""

    dataset: DatasetSchema = MISSING
    classifier: ClassifierSchema = MISSING
    diffusion: DiffusionSchema = MISSING
    purifier: PurifierSchema = MISSING
    attack: AttackSchema = MISSING
    hardware: HardwareSchema = MISSING
    logger: LoggerSchema = MISSING
    task: TaskSchema = MISSING
    paths: PathsSchema = field(default_factory=PathsSchema)
    seed: int = 0
    budget: str = "published"

    def __post_init__(self) -> None:
        require_seed("seed", self.seed)
