"""Categorical config values. ``str`` mixins so values compare equal to their names."""

from __future__ import annotations

from enum import Enum


class Norm(str, Enum):
    """Threat-model norm of an attack budget."""

    Linf = "Linf"
    L2 = "L2"


class ObjectiveMetric(str, Enum):
    """The defended robust accuracy a search maximizes (``task.objective.metric``): single draw,
    majority vote or worst of N purifications."""

    defended_robust = "defended_robust"
    defended_robust_majority = "defended_robust_majority"
    defended_robust_worst = "defended_robust_worst"


class AutoAttackVersion(str, Enum):
    """AutoAttack presets: ``rand`` (APGD-CE + APGD-DLR with EOT) is the one for randomized defenses."""

    standard = "standard"
    rand = "rand"
    custom = "custom"


class GradMode(str, Enum):
    """How an attack differentiates a purifier.

    ``full``: exact autograd through every solver step (checkpointed per step);
    ``adjoint``: torchsde's stochastic adjoint (VP-SDE only); ``surrogate``: gradient of a cheaper
    purification, value of the real one; ``bpda``: backward pass as identity; ``blind``: the attack
    differentiates the classifier alone; ``guidance_blind`` (guided purifiers only): exact through
    the sampler, but the guidance gradient is treated as a constant, as earlier evaluations of
    GDMP and MimicDiffusion did. Every mode but ``full`` is reported as an approximation.
    """

    full = "full"
    adjoint = "adjoint"
    surrogate = "surrogate"
    bpda = "bpda"
    blind = "blind"
    guidance_blind = "guidance_blind"


class SdeMethod(str, Enum):
    """Solver of the reverse VP-SDE (Euler-Maruyama, as DiffPure)."""

    euler = "euler"


class SdeSolver(str, Enum):
    """Who integrates the reverse VP-SDE: advpure's own Euler-Maruyama ``loop`` (checkpointed per
    step, CUDA-graph capturable) or ``torchsde.sdeint`` (the reference path, as DiffPure runs it)."""

    loop = "loop"
    torchsde = "torchsde"


class CompileMode(str, Enum):
    """``torch.compile`` of the diffusion backbone: ``off``, or one of torch.compile's modes
    (``reduce-overhead`` replays each call as a CUDA graph)."""

    off = "off"
    default = "default"
    reduce_overhead = "reduce-overhead"
    max_autotune = "max-autotune"


class OdeMethod(str, Enum):
    """Solver of the probability-flow ODE: ``euler`` (1 network call per step) or ``heun`` (2)."""

    euler = "euler"
    heun = "heun"


class DdpmVariance(str, Enum):
    """Variance of a DDPM ancestral step: ``posterior`` (beta tilde_t) or ``beta`` (beta_t)."""

    posterior = "posterior"
    beta = "beta"


class GuidanceDistance(str, Enum):
    """GDMP's similarity: ``mse`` (mean squared error) or ``ssim`` (structural similarity)."""

    mse = "mse"
    ssim = "ssim"


class GuidanceOperator(str, Enum):
    """MimicDiffusion's short-range operator: x4 ``nearest`` (released code) or ``bicubic``
    upsampling, or ``identity``."""

    nearest = "nearest"
    bicubic = "bicubic"
    identity = "identity"


class GuidedStart(str, Enum):
    """Where MimicDiffusion's chain starts: pure ``noise`` at step T (released code; the input
    enters only through guidance) or the input ``diffused`` to t*."""

    noise = "noise"
    diffused = "diffused"


class EmbeddingDistance(str, Enum):
    """AGDM's distance D between the auxiliary network's embeddings of the state and the input,
    per image: ``mse`` (mean squared difference), ``l1`` (mean absolute difference) or ``cosine``
    (1 - cosine similarity)."""

    mse = "mse"
    l1 = "l1"
    cosine = "cosine"


class EmbeddingLayer(str, Enum):
    """Which output of AGDM's auxiliary network D compares: its ``logits`` or its ``penultimate``
    features (the input of the last linear layer)."""

    logits = "logits"
    penultimate = "penultimate"


class Precision(str, Enum):
    """Floating-point format a diffusion backbone computes in (its input, output and the
    purifier's state stay float32): ``fp32``; ``fp16`` (as the guided-diffusion ImageNet model
    ran); ``bf16`` (the low-precision choice on CPUs)."""

    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class TaskName(str, Enum):
    """What ``run.py`` does."""

    evaluate = "evaluate"
    train_classifier = "train_classifier"
    train_diffusion = "train_diffusion"
    train_agdm_aux = "train_agdm_aux"
    certify = "certify"
    audit = "audit"


class Accelerator(str, Enum):
    """Lightning accelerator."""

    cpu = "cpu"
    gpu = "gpu"
    auto = "auto"


class CifarVariant(str, Enum):
    """Which torchvision CIFAR dataset."""

    cifar10 = "cifar10"
    cifar100 = "cifar100"


class AttackLoss(str, Enum):
    """Objective an iterative attack maximizes: ``ce`` cross-entropy; ``margin`` the
    Carlini-Wagner margin max_{j != y} z_j - z_y; ``dlr`` Croce & Hein's difference of logits ratio."""

    ce = "ce"
    margin = "margin"
    dlr = "dlr"


class NonFinitePolicy(str, Enum):
    """What an evaluation does on NaN or Inf in a purifier's output, a classifier's logits or an
    attack's gradient or output: ``stop`` with an error naming the batch and examples, or ``skip``
    (record them; their predictions count as wrong, never robust)."""

    stop = "stop"
    skip = "skip"
