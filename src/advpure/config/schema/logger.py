"""Schemas of the ``logger`` group: a Lightning logger, or none."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from pytorch_lightning.loggers import WandbLogger

from advpure.config.schema.signature import ConstructedSchema, defaults_from


@dataclass
class LoggerSchema(ConstructedSchema):
    """A Lightning logger (``_target_: null`` for none)."""

    _target_: str | None = None


@dataclass
@defaults_from(WandbLogger)
class WandbLoggerSchema(LoggerSchema):
    """Weights & Biases; offline by default (no account or network needed)."""

    OWN_DEFAULTS: ClassVar[dict[str, str]] = {
        "project": "runs are filed under advpure's project",
        "offline": "offline by default: no account or network needed",
    }

    _target_: str | None = "pytorch_lightning.loggers.WandbLogger"
    project: str = "advpure"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    offline: bool = True
    save_dir: str


@dataclass
class CsvLoggerSchema(LoggerSchema):
    """Lightning's CSV logger (metrics.csv in the run folder)."""

    OWN_DEFAULTS: ClassVar[dict[str, str]] = {
        "save_dir": "the constructor needs a folder; the run folder is Hydra's working directory",
        "name": "logs under csv/ rather than lightning_logs/",
    }

    _target_: str | None = "pytorch_lightning.loggers.CSVLogger"
    save_dir: str = "."
    name: str = "csv"


LOGGER_SCHEMAS: dict[str, type[LoggerSchema]] = {
    "none": LoggerSchema,
    "wandb": WandbLoggerSchema,
    "csv": CsvLoggerSchema,
}
