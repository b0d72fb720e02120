"""Structured-config schemas: one dataclass per config-group option, one root schema.

One module per config group of conf/ (:mod:`.dataset`, :mod:`.classifier`, :mod:`.diffusion`,
:mod:`.purifier`, :mod:`.attack`, :mod:`.hardware`, :mod:`.logger`, :mod:`.task`, with
``task=certify``'s in :mod:`.certify`) and :mod:`.root`; this package re-exports their schemas,
lists them in :data:`SCHEMAS` and registers them with Hydra (:func:`register_schemas`).

Each YAML option under ``conf/<group>/`` extends its schema (``defaults: [/schema/<group>/<name>@_here_]``)
and states only what differs from it (tests/test_one_source.py), so Hydra rejects unknown keys and
wrong types when composing, and the ``__post_init__`` range checks run once at start-up through
:func:`advpure.config.validate.validate_config`. Fields that are constructor arguments sit next to
``_target_`` and take the constructor's default (:mod:`.signature`); everything is instantiated
through :func:`advpure.instantiate.build`.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from advpure.config.schema.attack import (
    ATTACK_SCHEMAS,
    APGDEOTSchema,
    AttackSchema,
    AutoAttackSchema,
    BPDAEOTSchema,
    DiffAttackSchema,
    DiffHammerSchema,
    NoAttackSchema,
    PGDEOTSchema,
    StrongestSchema,
    TorchAttacksSchema,
)
from advpure.config.schema.certify import CertifyTaskSchema, DenoiserKind
from advpure.config.schema.classifier import CLASSIFIER_SCHEMAS, ClassifierSchema, ModelSchema
from advpure.config.schema.dataset import (
    DATASET_SCHEMAS,
    CelebAHQSchema,
    CifarSchema,
    DatasetSchema,
    DigitsSchema,
    ImageNetSchema,
    SvhnSchema,
)
from advpure.config.schema.diffusion import (
    DIFFUSION_SCHEMAS,
    DiffusionSchema,
    GuidedDiffusionSchema,
    LinearBetas,
    NoiseScheduleSchema,
)
from advpure.config.schema.hardware import HARDWARE_SCHEMAS, HardwareSchema, SlurmSchema
from advpure.config.schema.logger import LOGGER_SCHEMAS, CsvLoggerSchema, LoggerSchema, WandbLoggerSchema
from advpure.config.schema.purifier import (
    PURIFIER_SCHEMAS,
    AGDMSchema,
    DiffPureDDPMSchema,
    DiffPureODESchema,
    DiffPureSchema,
    DiscreteChainSchema,
    GDMPSchema,
    IdentityPurifierSchema,
    MimicDiffusionSchema,
    PurifierSchema,
    ReversePurifierSchema,
    VPGridSchema,
)
from advpure.config.schema.root import PathsSchema, RootSchema
from advpure.config.schema.task import (
    AdversarialTrainingSchema,
    AuditTaskSchema,
    DiffusionLevelsSchema,
    EvaluateTaskSchema,
    ObjectiveSchema,
    TaskSchema,
    TradesSchema,
    TrainAgdmAuxTaskSchema,
    TrainClassifierTaskSchema,
    TrainDiffusionTaskSchema,
)

SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": DATASET_SCHEMAS,
    "classifier": CLASSIFIER_SCHEMAS,
    "diffusion": DIFFUSION_SCHEMAS,
    "purifier": PURIFIER_SCHEMAS,
    "attack": ATTACK_SCHEMAS,
    "hardware": HARDWARE_SCHEMAS,
    "logger": LOGGER_SCHEMAS,
    "task": {
        "evaluate": EvaluateTaskSchema,
        "train_classifier": TrainClassifierTaskSchema,
        "train_diffusion": TrainDiffusionTaskSchema,
        "train_agdm_aux": TrainAgdmAuxTaskSchema,
        "certify": CertifyTaskSchema,
        "audit": AuditTaskSchema,
    },
}
"""``{group: {schema name: schema}}``: what ``schema/<group>/<name>`` names in conf/'s defaults lists."""


def register_schemas() -> None:
    """Store the root schema as ``advpure_schema`` and each option schema as ``schema/<group>/<name>``."""
    store = ConfigStore.instance()
    store.store(name="advpure_schema", node=RootSchema)
    for group, options in SCHEMAS.items():
        for name, schema in options.items():
            store.store(group=f"schema/{group}", name=name, node=schema)


__all__ = [
    "SCHEMAS",
    "AGDMSchema",
    "APGDEOTSchema",
    "AdversarialTrainingSchema",
    "AttackSchema",
    "AuditTaskSchema",
    "AutoAttackSchema",
    "BPDAEOTSchema",
    "CelebAHQSchema",
    "CertifyTaskSchema",
    "CifarSchema",
    "ClassifierSchema",
    "CsvLoggerSchema",
    "DatasetSchema",
    "DenoiserKind",
    "DiffAttackSchema",
    "DiffHammerSchema",
    "DiffPureDDPMSchema",
    "DiffPureODESchema",
    "DiffPureSchema",
    "DiffusionLevelsSchema",
    "DiffusionSchema",
    "DigitsSchema",
    "DiscreteChainSchema",
    "EvaluateTaskSchema",
    "GDMPSchema",
    "GuidedDiffusionSchema",
    "HardwareSchema",
    "IdentityPurifierSchema",
    "ImageNetSchema",
    "LinearBetas",
    "LoggerSchema",
    "MimicDiffusionSchema",
    "ModelSchema",
    "NoAttackSchema",
    "NoiseScheduleSchema",
    "ObjectiveSchema",
    "PGDEOTSchema",
    "PathsSchema",
    "PurifierSchema",
    "ReversePurifierSchema",
    "RootSchema",
    "SlurmSchema",
    "StrongestSchema",
    "SvhnSchema",
    "TaskSchema",
    "TorchAttacksSchema",
    "TradesSchema",
    "TrainAgdmAuxTaskSchema",
    "TrainClassifierTaskSchema",
    "TrainDiffusionTaskSchema",
    "VPGridSchema",
    "WandbLoggerSchema",
    "register_schemas",
]
