"""Categorical config values. ``str`` mixins so values compare equal to their names."""

from __future__ import annotations

from enum import Enum


class Norm(str, Enum):
    """Threat-model norm of an attack budget."""

    Linf = "Linf"
    L2 = "L2"


class AutoAttackVersion(str, Enum):
    """AutoAttack presets: ``rand`` (APGD-CE + APGD-DLR with EOT) is the one for randomized defenses."""

    standard = "standard"
    rand = "rand"
    custom = "custom"


class GradMode(str, Enum):
    """How an attack differentiates a purifier (``full``: exact autograd through every step)."""

    full = "full"


class SdeMethod(str, Enum):
    """torchsde solver for the reverse VP-SDE."""

    euler = "euler"


class TaskName(str, Enum):
    """What ``run.py`` does."""

    evaluate = "evaluate"
    train_classifier = "train_classifier"
    train_diffusion = "train_diffusion"


class Accelerator(str, Enum):
    """Lightning accelerator."""

    cpu = "cpu"
    gpu = "gpu"
    auto = "auto"


class CifarVariant(str, Enum):
    """Which torchvision CIFAR dataset."""

    cifar10 = "cifar10"
    cifar100 = "cifar100"
