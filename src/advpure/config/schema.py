"""Structured-config schemas: one dataclass per config-group option, one root schema.

Each YAML option under ``conf/<group>/`` extends its schema (``defaults: [/schema/<group>/<name>@_here_]``),
so Hydra rejects unknown keys and wrong types when composing, and the ``__post_init__`` range
checks run once at start-up through :func:`advpure.config.validate.validate_config`.
Fields that are constructor arguments sit next to ``_target_``; everything is instantiated
through :func:`advpure.instantiate.build`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from advpure.audit.settings import AuditSchema
from advpure.config.checks import (
    require_at_least,
    require_interval,
    require_path,
    require_seed,
    require_step_fits,
)
from advpure.config.enums import (
    Accelerator,
    AttackLoss,
    AutoAttackVersion,
    CifarVariant,
    CompileMode,
    DdpmVariance,
    EmbeddingDistance,
    EmbeddingLayer,
    GradMode,
    GuidanceDistance,
    GuidanceOperator,
    GuidedStart,
    NonFinitePolicy,
    Norm,
    ObjectiveMetric,
    OdeMethod,
    Precision,
    SdeMethod,
    SdeSolver,
    TaskName,
)
from advpure.config.schema_base import TaskSchema
from advpure.config.schema_certify import CertifyTaskSchema

# ----------------------------------------------------------------------------- dataset


@dataclass
class DatasetSchema:
    """A LightningDataModule giving NCHW float images in [0, 1] and integer labels."""

    _target_: str = MISSING
    batch_size: int = 128
    num_workers: int = 0

    def __post_init__(self) -> None:
        require_at_least("batch_size", self.batch_size, 1)
        require_at_least("num_workers", self.num_workers, 0)


@dataclass
class DigitsSchema(DatasetSchema):
    """scikit-learn's embedded 8x8 digits (1797 images, 10 classes), stratified seeded split."""

    _target_: str = "advpure.data.digits.DigitsDataModule"
    test_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        require_interval("test_fraction", self.test_fraction, 0.0, 1.0, low_open=True, high_open=True)
        require_seed("split_seed", self.split_seed)


@dataclass
class CifarSchema(DatasetSchema):
    """CIFAR-10/100 (torchvision's python version) read from a local folder without running code;
    ``verify``: MD5 of every file against the official archive's; downloads only if ``download: true``."""

    _target_: str = "advpure.data.cifar.CifarDataModule"
    variant: CifarVariant = CifarVariant.cifar10
    root: str = MISSING
    download: bool = False
    verify: bool = True


@dataclass
class ImageNetSchema(DatasetSchema):
    """ImageNet from an ImageFolder-style folder ``<root>/<split>/<wnid>/<image>`` (any subset of the
    1000 classes; labels are the standard indices), resized to ``resize`` then center-cropped to
    ``crop``. ``train_split``: a folder in the same layout for training tasks (null: none)."""

    _target_: str = "advpure.data.imagenet.ImageNetDataModule"
    root: str = MISSING
    split: str = "val"
    train_split: str | None = None
    resize: int = 256
    crop: int = 224

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least("crop", self.crop, 1)
        if self.resize < self.crop:
            from advpure.errors import ConfigError

            raise ConfigError(
                "resize", f"{self.resize} is smaller than crop={self.crop}", "set resize >= crop (standard: 256, 224)"
            )


@dataclass
class CelebAHQSchema(DatasetSchema):
    """CelebA-HQ images ``<root>/<images>/`` labelled by one binary ``attribute`` of the CelebA-format
    ``<root>/<attributes_file>`` (1: present, 0: absent), resized to ``image_size``; a seeded split
    holds out ``test_fraction`` of the images."""

    _target_: str = "advpure.data.celebahq.CelebAHQDataModule"
    root: str = MISSING
    attribute: str = "Smiling"
    images: str = "CelebA-HQ-img"
    attributes_file: str = "CelebAMask-HQ-attribute-anno.txt"
    image_size: int = 256
    test_fraction: float = 0.1
    split_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least("image_size", self.image_size, 1)
        require_interval("test_fraction", self.test_fraction, 0.0, 1.0, low_open=True, high_open=True)
        require_seed("split_seed", self.split_seed)


@dataclass
class SvhnSchema(DatasetSchema):
    """torchvision SVHN (32x32, digits 0-9) from a local folder holding ``train_32x32.mat`` and
    ``test_32x32.mat`` (``extra_32x32.mat`` too with ``use_extra``); downloads only if ``download: true``;
    ``verify`` checks the files' published MD5 at start-up."""

    _target_: str = "advpure.data.svhn.SvhnDataModule"
    root: str = MISSING
    use_extra: bool = False
    download: bool = False
    verify: bool = True


# -------------------------------------------------------------------- classifier, diffusion


@dataclass
class ModelSchema:
    """A network (``net``: ``_target_`` + constructor arguments) and optional weights.

    ``checkpoint`` is an advpure checkpoint (``<path>.safetensors`` + ``<path>.json``);
    its JSON names the architecture, which must equal ``net``.
    """

    net: Any = MISSING
    checkpoint: str | None = None


@dataclass
class ClassifierSchema(ModelSchema):
    """Classifier: (B, C, H, W) in [0, 1] -> logits (B, num_classes); normalizes inside.

    ``weights``: a published weights file in the network's own key layout (RobustBench, torchvision,
    timm, or a user's ``torch.save(model.state_dict())``; ``.pt``/``.pth`` read with
    ``torch.load(weights_only=True)``, or ``.safetensors``), loaded by
    :func:`advpure.models.classifier_weights.load_classifier_weights`. Set at most one of
    ``checkpoint`` and ``weights``.
    """

    weights: str | None = None

    def __post_init__(self) -> None:
        require_path("checkpoint", self.checkpoint)
        require_path("weights", self.weights)
        if self.checkpoint is not None and self.weights is not None:
            from advpure.errors import ConfigError

            raise ConfigError(
                "weights",
                "is set together with 'checkpoint'",
                "set only one of checkpoint (an advpure checkpoint) and weights (a published file); null the other",
            )


@dataclass
class NoiseScheduleSchema:
    """The VP noise schedule the diffusion model was trained with: linear betas from ``beta_start``
    to ``beta_end`` over ``num_timesteps`` steps (the continuous VP-SDE's beta_min = beta_start T,
    beta_max = beta_end T). It lives with the model (the ``diffusion`` group); purifiers and training
    tasks interpolate it, and it is checked against a checkpoint's recorded schedule at start-up."""

    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_timesteps: int = 1000

    def __post_init__(self) -> None:
        require_interval("beta_start", self.beta_start, 0.0, 1.0, low_open=True, high_open=True)
        require_interval("beta_end", self.beta_end, self.beta_start, 1.0, high_open=True)
        require_at_least("num_timesteps", self.num_timesteps, 2)


@dataclass
class DiffusionSchema(ModelSchema):
    """Noise-prediction backbone behind the one signature (x in [-1, 1], t in [0, 1]) -> eps.

    ``pretrained``: a local diffusers-format folder (``config.json`` +
    ``diffusion_pytorch_model.safetensors``) or, on an online machine, a hub id; read with
    ``from_pretrained(use_safetensors=True)``. ``weights``: a file in a published model's own
    format, read at load by its class's reader (:mod:`advpure.diffusion.published_weights`: score_sde's
    NCSN++ checkpoint, e.g. DiffPure's CIFAR-10 ``checkpoint_8.pth``, EMA weights; guided-diffusion's
    ``256x256_diffusion_uncond.pt``), read with ``torch.load(weights_only=True)``. Set at most
    one of ``checkpoint``, ``pretrained`` and ``weights``.

    ``precision``: what the backbone computes in during purification (``fp16``/``bf16``: input
    and output stay float32; see :mod:`advpure.diffusion.precision`). ``image_size``: the side
    the purifier works at; inputs of another size are resized to it (bilinear) and back (see
    :mod:`advpure.purifiers.resize`); null works at the data's size. ``channels_last`` and
    ``compile``: how the backbone executes (NHWC memory order; ``torch.compile`` mode), not what it
    computes (see :mod:`advpure.diffusion.acceleration`).
    """

    pretrained: str | None = None
    weights: str | None = None
    schedule: NoiseScheduleSchema = field(default_factory=NoiseScheduleSchema)
    precision: Precision = Precision.fp32
    image_size: int | None = None
    channels_last: bool = False
    compile: CompileMode = CompileMode.off

    def __post_init__(self) -> None:
        if self.image_size is not None:
            require_at_least("image_size", self.image_size, 1)
        for key in ("checkpoint", "pretrained", "weights"):
            require_path(key, getattr(self, key))
        chosen = [key for key in ("checkpoint", "pretrained", "weights") if getattr(self, key) is not None]
        if len(chosen) > 1:
            from advpure.errors import ConfigError

            raise ConfigError(
                chosen[-1],
                f"is set together with {chosen[0]!r}",
                "set only one of checkpoint, pretrained and weights (null the others)",
            )


@dataclass
class GuidedDiffusionSchema(DiffusionSchema):
    """A backbone built by the original guided-diffusion code (the optional ``published`` extra):
    start-up fails, naming the install command, when that package is missing."""

    def __post_init__(self) -> None:
        super().__post_init__()
        from advpure.diffusion.guided import require_guided_diffusion

        require_guided_diffusion(key="net._target_")  # validation prefixes the group: diffusion.net._target_


# ----------------------------------------------------------------------------- purifier


@dataclass
class PurifierSchema:
    """Every purifier maps (B, C, H, W) in [0, 1] to the same; built with the backbone."""

    _target_: str = MISSING
    grad_mode: GradMode = GradMode.full


@dataclass
class IdentityPurifierSchema(PurifierSchema):
    """No purification (the undefended classifier)."""

    _target_: str = "advpure.purifiers.identity.IdentityPurifier"


@dataclass
class ReversePurifierSchema(PurifierSchema):
    """A diffusion purifier: diffuse to t*, run a reverse process to 0 (shared keys).

    ``seed``: null draws fresh noise each call (the defense as published); an integer replays
    the same noise on every call (a deterministic purifier, for debugging and gradient checks).
    ``surrogate``: a purifier node (``_target_`` + keys) whose gradient ``grad_mode=surrogate``
    uses; built with the same backbone. ``checkpoint_steps``: per-step gradient checkpointing.
    """

    t_star: float = 0.1
    seed: int | None = None
    surrogate: Any = None
    checkpoint_steps: bool = True

    def __post_init__(self) -> None:
        require_interval("t_star", self.t_star, 0.0, 1.0, low_open=True)
        require_seed("seed", self.seed, allow_none=True)
        self.check_variant()
        if self.surrogate is not None:
            _check_surrogate(self.surrogate)

    def check_variant(self) -> None:
        """The variant's own range checks (after t_star, before the surrogate)."""


@dataclass
class VPGridSchema(ReversePurifierSchema):
    """Keys of the continuous VP purifiers: uniform step ``dt`` and the VP-SDE's betas."""

    dt: float = 1e-3
    beta_min: float = 0.1
    beta_max: float = 20.0

    def check_variant(self) -> None:
        require_interval("dt", self.dt, 0.0, 1.0, low_open=True)
        require_step_fits(self.t_star, self.dt, usual_t_star=type(self).t_star, usual_dt=VPGridSchema.dt)
        require_interval("beta_min", self.beta_min, 0.0, low_open=True)
        require_interval("beta_max", self.beta_max, self.beta_min, low_open=True)


@dataclass
class DiffPureSchema(VPGridSchema):
    """DiffPure: diffuse to t*, Euler-Maruyama on the reverse VP-SDE from t* to 0."""

    _target_: str = "advpure.purifiers.diffpure.DiffPure"
    method: SdeMethod = SdeMethod.euler
    solver: SdeSolver = SdeSolver.loop


@dataclass
class DiffPureDDPMSchema(ReversePurifierSchema):
    """DiffPure on the discrete DDPM schedule: ancestral sampling from step round(T t*)."""

    _target_: str = "advpure.purifiers.diffpure_ddpm.DiffPureDDPM"
    stride: int = 1
    variance: DdpmVariance = DdpmVariance.posterior
    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_timesteps: int = 1000

    def check_variant(self) -> None:
        require_at_least("stride", self.stride, 1)
        require_interval("beta_start", self.beta_start, 0.0, 1.0, low_open=True, high_open=True)
        require_interval("beta_end", self.beta_end, self.beta_start, 1.0, high_open=True)
        require_at_least("num_timesteps", self.num_timesteps, 2)
        require_interval("t_star", self.t_star, 0.5 / self.num_timesteps, 1.0)


@dataclass
class DiffPureODESchema(VPGridSchema):
    """DiffPure with the probability-flow ODE of the VP-SDE (deterministic after diffusing)."""

    _target_: str = "advpure.purifiers.diffpure_ode.DiffPureODE"
    method: OdeMethod = OdeMethod.euler


@dataclass
class GDMPSchema(DiffPureDDPMSchema):
    """GDMP: DDPM purification guided toward the diffused input, ``n_repeats`` rounds."""

    _target_: str = "advpure.purifiers.gdmp.GDMP"
    t_star: float = 0.036
    variance: DdpmVariance = DdpmVariance.beta
    n_repeats: int = 4
    distance: GuidanceDistance = GuidanceDistance.mse
    guide_scale: float = 60000.0
    guide_eps: float | None = None
    loss_batch_size: int = 100

    def check_variant(self) -> None:
        super().check_variant()
        require_at_least("n_repeats", self.n_repeats, 1)
        require_at_least("loss_batch_size", self.loss_batch_size, 1)
        require_interval("guide_scale", self.guide_scale, 0.0)
        if self.guide_eps is not None:
            require_interval("guide_eps", self.guide_eps, 0.0, 1.0, low_open=True)


@dataclass
class AGDMSchema(DiffPureDDPMSchema):
    """AGDM: DDPM purification guided by an adversarially trained auxiliary network's embedding
    distance to the input and its prediction on the input. ``auxiliary``: that network (``net`` +
    ``checkpoint``, trained by ``task=train_agdm_aux``)."""

    _target_: str = "advpure.purifiers.agdm.AGDM"
    t_star: float = 0.07
    variance: DdpmVariance = DdpmVariance.beta
    auxiliary: ClassifierSchema = field(default_factory=ClassifierSchema)
    distance_scale: float = 1.0
    class_scale: float = 1.0
    distance: EmbeddingDistance = EmbeddingDistance.mse
    embedding: EmbeddingLayer = EmbeddingLayer.logits

    def check_variant(self) -> None:
        super().check_variant()
        require_interval("distance_scale", self.distance_scale, 0.0)
        require_interval("class_scale", self.class_scale, 0.0)


@dataclass
class MimicDiffusionSchema(ReversePurifierSchema):
    """MimicDiffusion: DDIM (eta = 1) guided by long- and short-range L1 distances to the input."""

    _target_: str = "advpure.purifiers.mimicdiffusion.MimicDiffusion"
    t_star: float = 1.0
    start: GuidedStart = GuidedStart.noise
    stride: int = 10
    rho: float = 3000.0
    guidance_window: list[float] = field(default_factory=lambda: [0.2, 0.9])
    operator: GuidanceOperator = GuidanceOperator.nearest
    operator_factor: int = 4
    loss_batch_size: int = 16
    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_timesteps: int = 1000

    def check_variant(self) -> None:
        require_at_least("stride", self.stride, 1)
        require_at_least("operator_factor", self.operator_factor, 1)
        require_at_least("loss_batch_size", self.loss_batch_size, 1)
        require_interval("rho", self.rho, 0.0)
        window = list(self.guidance_window)
        if len(window) != 2 or not 0.0 <= window[0] < window[1] <= 1.0:
            from advpure.errors import ConfigError

            raise ConfigError(
                "guidance_window", f"{window!r} is out of range", "set [low, high] with 0 <= low < high <= 1"
            )
        require_interval("beta_start", self.beta_start, 0.0, 1.0, low_open=True, high_open=True)
        require_interval("beta_end", self.beta_end, self.beta_start, 1.0, high_open=True)
        require_at_least("num_timesteps", self.num_timesteps, 2)


def _check_surrogate(node: Any) -> None:
    """Run the range checks of a surrogate purifier node (a dict with ``_target_``)."""
    from advpure.errors import ConfigError

    schemas = {schema._target_: schema for schema in SCHEMAS["purifier"].values()}
    target = node.get("_target_") if isinstance(node, dict) else None
    if target not in schemas or not issubclass(schemas[target], ReversePurifierSchema):
        names = sorted(t for t, schema in schemas.items() if issubclass(schema, ReversePurifierSchema))
        raise ConfigError("surrogate._target_", f"{target!r} is not a diffusion purifier", f"use one of {names}")
    try:
        surrogate = schemas[target](**node)
    except TypeError as error:
        raise ConfigError("surrogate", str(error), f"use the keys of {schemas[target].__name__}") from None
    except ConfigError as error:
        raise error.with_prefix("surrogate") from None
    if surrogate.grad_mode != GradMode.full or surrogate.surrogate is not None:
        raise ConfigError(
            "surrogate",
            "a surrogate must itself be differentiated exactly and have no surrogate",
            "set surrogate.grad_mode=full and surrogate.surrogate=null",
        )


# ------------------------------------------------------------------------------- attack


@dataclass
class AttackSchema:
    """Every attack: ``attack(model, x, y) -> x_adv`` with x, x_adv (B, C, H, W) in [0, 1].

    ``eps: null`` takes the dataset's standard budget for ``norm``. ``n_iter`` and ``n_eot``
    are the family's budget knobs (iterations per run; gradient samples per iteration);
    ``null`` keeps the attack's own published value.
    """

    _target_: str = MISSING
    norm: Norm = Norm.Linf
    eps: float | None = None
    n_iter: int | None = None
    n_eot: int | None = None

    def __post_init__(self) -> None:
        # [0, 1] data: an Linf budget above 1 covers the whole cube; L2 budgets may exceed 1.
        high = 1.0 if self.norm == Norm.Linf else float("inf")
        require_interval("eps", self.eps, 0.0, high, low_open=True, allow_none=True)
        require_at_least("n_iter", self.n_iter, 1, allow_none=True)
        require_at_least("n_eot", self.n_eot, 1, allow_none=True)


@dataclass
class NoAttackSchema(AttackSchema):
    """Clean evaluation only."""

    _target_: str = "advpure.attacks.none.NoAttack"


@dataclass
class AutoAttackSchema(AttackSchema):
    """AutoAttack (pyautoattack) on the defended model, gradients through the purifier."""

    _target_: str = "advpure.attacks.autoattack.AutoAttackRunner"
    version: AutoAttackVersion = AutoAttackVersion.rand
    attacks: list[str] | None = None
    n_restarts: int | None = None
    seed: int = 0
    eot_chunk: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least("n_restarts", self.n_restarts, 1, allow_none=True)
        require_at_least("eot_chunk", self.eot_chunk, 1, allow_none=True)
        require_seed("seed", self.seed)


@dataclass
class PGDEOTSchema(AttackSchema):
    """PGD with EOT: ``n_iter`` steps (null: 200), ``n_eot`` passes per gradient (null: 20),
    ``step_size`` (null: 2.5 eps / n_iter), random start, restarts, loss ce | margin | dlr."""

    _target_: str = "advpure.attacks.pgd_eot.PGDEOT"
    step_size: float | None = None
    random_start: bool = True
    n_restarts: int = 1
    loss: AttackLoss = AttackLoss.ce
    seed: int = 0
    eot_chunk: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require_interval("step_size", self.step_size, 0.0, low_open=True, allow_none=True)
        require_at_least("n_restarts", self.n_restarts, 1)
        require_at_least("eot_chunk", self.eot_chunk, 1, allow_none=True)
        require_seed("seed", self.seed)


@dataclass
class APGDEOTSchema(AttackSchema):
    """APGD (pyautoattack's ``APGDAttack``) with EOT: ``n_iter`` iterations (null: 100), ``n_eot``
    passes per gradient (null: 20), restarts, loss ce | dlr, step-size threshold ``rho``."""

    _target_: str = "advpure.attacks.apgd_eot.APGDEOT"
    n_restarts: int = 1
    loss: AttackLoss = AttackLoss.ce
    rho: float = 0.75
    eot_chunk: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least("n_restarts", self.n_restarts, 1)
        require_interval("rho", self.rho, 0.0, 1.0, low_open=True, high_open=True)
        require_at_least("eot_chunk", self.eot_chunk, 1, allow_none=True)
        require_seed("seed", self.seed)
        if self.loss == AttackLoss.margin:
            from advpure.errors import ConfigError

            raise ConfigError("loss", "APGD has no margin loss", "use loss=ce or loss=dlr (attack=pgd_eot has margin)")


@dataclass
class BPDAEOTSchema(AttackSchema):
    """DiffPure's BPDA+EOT protocol (Linf only): ``n_iter`` sign steps (null: 50) of ``step_size``
    (null: 2/255), ``n_eot`` purifications per gradient (null: 15), defense checks of
    ``n_defense_reps`` purifications (null: 150), ``defense_chunk`` of them per image in one call
    (null: calls no larger than a gradient step's, n_eot * batch images)."""

    _target_: str = "advpure.attacks.bpda_eot.BPDAEOT"
    n_defense_reps: int | None = None
    step_size: float | None = None
    defense_chunk: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.norm != Norm.Linf:
            from advpure.errors import ConfigError

            raise ConfigError("norm", "BPDA+EOT is a Linf protocol", "use norm=Linf, or attack=pgd_eot for L2")
        require_at_least("n_defense_reps", self.n_defense_reps, 1, allow_none=True)
        require_interval("step_size", self.step_size, 0.0, low_open=True, allow_none=True)
        require_at_least("defense_chunk", self.defense_chunk, 1, allow_none=True)


@dataclass
class DiffHammerSchema(AttackSchema):
    """DiffHammer (Wang et al., NeurIPS 2024): selective EM aggregation over ``n_eot`` purification
    draws (null: 10) with gradient grafting, APGD ``n_iter`` iterations (null: 50) per restart,
    ``n_restarts`` (null: 3) cycling through ``losses``."""

    _target_: str = "advpure.attacks.diffhammer.DiffHammer"
    n_restarts: int | None = None
    losses: list[AttackLoss] = field(default_factory=lambda: [AttackLoss.margin, AttackLoss.ce, AttackLoss.dlr])
    em_steps: int = 5
    em_lam: float = 1.0
    em_alpha: float = 0.5
    restart_below: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least("n_restarts", self.n_restarts, 1, allow_none=True)
        require_at_least("em_steps", self.em_steps, 0)
        require_interval("em_lam", self.em_lam, 0.0, low_open=True)
        require_interval("em_alpha", self.em_alpha, 0.0)
        require_interval("restart_below", self.restart_below, 0.0, 1.0)
        if not self.losses:
            from advpure.errors import ConfigError

            raise ConfigError("losses", "is empty", "list some of ce, margin, dlr (published: [margin, ce, dlr])")
        require_seed("seed", self.seed)


@dataclass
class DiffAttackSchema(PGDEOTSchema):
    """DiffAttack (Kang et al., NeurIPS 2023): PGD-EOT (null: 100 steps, EOT 20) on the loss plus
    ``deviation_weight`` times the deviated-reconstruction term on the purifier's intermediate states."""

    _target_: str = "advpure.attacks.diffattack.DiffAttack"
    deviation_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require_interval("deviation_weight", self.deviation_weight, 0.0)


@dataclass
class StrongestSchema(AttackSchema):
    """The ensemble (:mod:`advpure.attacks.strongest`): ``members`` (name -> an attack option's
    node, composed from conf/attack/ in conf/attack/strongest.yaml), each point kept from the member
    that does worst under ``n_score`` fresh draws. The members are built by the ensemble itself
    (``_recursive_: false``), with its eps and norm."""

    _target_: str = "advpure.attacks.strongest.StrongestAttack"
    _recursive_: bool = False
    members: dict[str, Any] = field(default_factory=dict)
    n_score: int = 10
    score_chunk: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least("n_score", self.n_score, 1)
        require_at_least("score_chunk", self.score_chunk, 1, allow_none=True)


@dataclass
class TorchAttacksSchema(AttackSchema):
    """A torchattacks attack by class ``name``; ``kwargs`` go to its constructor. ``kwargs`` is an
    open dict (``attack.kwargs.alpha=0.02`` needs no ``+``); a keyword the class does not take is a
    ``ConfigError`` naming ``attack.kwargs.<key>`` when the attack is built."""

    _target_: str = "advpure.attacks.torchattacks_runner.TorchAttacksRunner"
    name: str = "EOTPGD"
    kwargs: dict[str, Any] = field(default_factory=lambda: DictConfig({}, flags={"struct": False}))


# ----------------------------------------------------------------------------- hardware


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
        for key in ("time_min", "gpus_per_job", "cpus_per_job", "mem_gb", "max_parallel_jobs"):
            require_at_least(key, getattr(self, key), 1)


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


# ------------------------------------------------------------------------------- logger


@dataclass
class LoggerSchema:
    """A Lightning logger (``_target_: null`` for none)."""

    _target_: str | None = None


@dataclass
class WandbLoggerSchema(LoggerSchema):
    """Weights & Biases; offline by default (no account or network needed)."""

    _target_: str | None = "pytorch_lightning.loggers.WandbLogger"
    project: str = "advpure"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    offline: bool = True
    save_dir: str = "."


@dataclass
class CsvLoggerSchema(LoggerSchema):
    """Lightning's CSV logger (metrics.csv in the run folder)."""

    _target_: str | None = "pytorch_lightning.loggers.CSVLogger"
    save_dir: str = "."
    name: str = "csv"


# --------------------------------------------------------------------------------- task


@dataclass
class ObjectiveSchema:
    """What an evaluation returns to a search (the Optuna sweeper): ``metric`` if the defended
    clean accuracy reaches ``clean_floor``, else a value below every feasible one (see
    :func:`advpure.sweeps.objective.objective_value`)."""

    metric: ObjectiveMetric = ObjectiveMetric.defended_robust
    clean_floor: float = 0.0

    def __post_init__(self) -> None:
        require_interval("clean_floor", self.clean_floor, 0.0, 1.0)


@dataclass
class EvaluateTaskSchema(TaskSchema):
    """Attack the undefended and the purified classifier on the first ``n_images`` test images;
    score the defended one by single draw, majority vote of ``n_vote`` and worst of ``n_worst``
    purifications (max(n_vote, n_worst) draws per image, clean and adversarial). ``resume``:
    reuse the finished batches of an identical evaluation from ``paths.evaluations``.
    ``on_nonfinite``: NaN/Inf in a purifier output, logits or an attack's gradient/output stops
    the run (``stop``) or is recorded and counted as not robust (``skip``). ``objective``: the
    number returned to a search over configs (Optuna sweeper), null for none."""

    name: TaskName = TaskName.evaluate
    n_images: int = 512
    batch_size: int = 64
    n_panel: int = 8
    n_vote: int = 10
    n_worst: int = 10
    subset_seed: int | None = None
    subset_index: int = 0
    class_balanced: bool = False
    resume: bool = True
    on_nonfinite: NonFinitePolicy = NonFinitePolicy.stop
    objective: ObjectiveSchema | None = None
    # Attack-failure audit after the evaluation (advpure.audit): on the first audit_images images.
    audit: bool = False
    audit_images: int = 16
    audit_options: AuditSchema = field(default_factory=AuditSchema)

    def __post_init__(self) -> None:
        require_at_least("subset_index", self.subset_index, 0)
        require_seed("subset_seed", self.subset_seed, allow_none=True)
        if self.class_balanced and self.subset_seed is None:
            from advpure.errors import ConfigError

            raise ConfigError("class_balanced", "needs a seeded subset", "set task.subset_seed=<int>")
        require_at_least("n_images", self.n_images, 1)
        require_at_least("batch_size", self.batch_size, 1)
        require_at_least("n_panel", self.n_panel, 0)
        require_at_least("n_vote", self.n_vote, 1)
        require_at_least("n_worst", self.n_worst, 1)
        require_at_least("audit_images", self.audit_images, 1)


@dataclass
class AuditTaskSchema(TaskSchema):
    """Audit an evaluation's setting (advpure.audit) without re-running the evaluation: ``run_dir``
    a finished evaluate run folder (its ``.hydra/config.yaml`` gives the setting, its
    ``results.json`` the records), or null to audit the composed config's setting, whose first
    ``n_images`` test images (``subset_*``, ``class_balanced`` as in task=evaluate) are then
    evaluated in one batch (``n_vote`` / ``n_worst`` draws) and audited."""

    name: TaskName = TaskName.audit
    run_dir: str | None = None
    n_images: int = 16
    n_vote: int = 10
    n_worst: int = 10
    subset_seed: int | None = None
    subset_index: int = 0
    class_balanced: bool = False
    on_nonfinite: NonFinitePolicy = NonFinitePolicy.stop
    audit_options: AuditSchema = field(default_factory=AuditSchema)

    def __post_init__(self) -> None:
        require_path("run_dir", self.run_dir)
        require_at_least("n_images", self.n_images, 1)
        require_at_least("n_vote", self.n_vote, 1)
        require_at_least("n_worst", self.n_worst, 1)
        require_at_least("subset_index", self.subset_index, 0)
        require_seed("subset_seed", self.subset_seed, allow_none=True)
        if self.class_balanced and self.subset_seed is None:
            from advpure.errors import ConfigError

            raise ConfigError("class_balanced", "needs a seeded subset", "set task.subset_seed=<int>")


@dataclass
class AdversarialTrainingSchema:
    """PGD adversarial training (Madry et al.); off unless ``enabled``."""

    enabled: bool = False
    norm: Norm = Norm.Linf
    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10

    def __post_init__(self) -> None:
        require_interval("eps", self.eps, 0.0, 1.0)
        require_interval("step_size", self.step_size, 0.0, low_open=True)
        require_at_least("steps", self.steps, 1)


@dataclass
class TrainClassifierTaskSchema(TaskSchema):
    """Train the ``classifier`` on ``dataset``; writes ``classifier.safetensors`` + ``.json``."""

    name: TaskName = TaskName.train_classifier
    max_epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 5e-4
    adversarial: AdversarialTrainingSchema = field(default_factory=AdversarialTrainingSchema)
    init_from: str | None = None  # an advpure checkpoint to start from (null: random initialization)
    export_to: str | None = None
    resume: bool = True  # continue an identical, interrupted training from its last epoch (paths.training)

    def __post_init__(self) -> None:
        require_at_least("max_epochs", self.max_epochs, 1)
        require_interval("lr", self.lr, 0.0, low_open=True)
        require_interval("weight_decay", self.weight_decay, 0.0)


@dataclass
class TrainDiffusionTaskSchema(TaskSchema):
    """Train an epsilon-prediction DDPM (linear betas over 1000 steps) with EMA weights."""

    name: TaskName = TaskName.train_diffusion
    max_steps: int = 20000
    lr: float = 2e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_train_timesteps: int = 1000
    grad_clip: float = 1.0
    n_samples: int = 64
    sample_dt: float = 1e-3
    init_from: str | None = None  # an advpure checkpoint to start from (null: random initialization)
    export_to: str | None = None
    resume: bool = True  # continue an identical, interrupted training from its last epoch (paths.training)

    def __post_init__(self) -> None:
        require_at_least("max_steps", self.max_steps, 1)
        require_interval("lr", self.lr, 0.0, low_open=True)
        require_at_least("warmup_steps", self.warmup_steps, 0)
        require_interval("ema_decay", self.ema_decay, 0.0, 1.0, high_open=True)
        require_interval("beta_start", self.beta_start, 0.0, 1.0, low_open=True, high_open=True)
        require_interval("beta_end", self.beta_end, self.beta_start, 1.0, high_open=True)
        require_at_least("num_train_timesteps", self.num_train_timesteps, 2)
        require_at_least("n_samples", self.n_samples, 0)
        require_interval("sample_dt", self.sample_dt, 0.0, 1.0, low_open=True)


@dataclass
class TradesSchema:
    """TRADES (Zhang et al. 2019): ``trades_lambda`` weighs the KL term, whose inner maximum is
    PGD in the ``norm`` ball of radius ``eps`` (null: the dataset's standard eps) with ``steps``
    steps of ``step_size`` (null: eps / 4)."""

    trades_lambda: float = 6.0
    norm: Norm = Norm.Linf
    eps: float | None = None
    step_size: float | None = None
    steps: int = 10

    def __post_init__(self) -> None:
        require_interval("trades_lambda", self.trades_lambda, 0.0)
        if self.eps is not None:
            require_interval("eps", self.eps, 0.0, 1.0, low_open=True)
        if self.step_size is not None:
            require_interval("step_size", self.step_size, 0.0, low_open=True)
        require_at_least("steps", self.steps, 1)


@dataclass
class DiffusionLevelsSchema:
    """The diffusion levels 0..round(T t_max) c_phi trains on (0: clean), on the DDPM schedule
    of the diffusion model it will guide."""

    t_max: float = 0.1
    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_timesteps: int = 1000

    def __post_init__(self) -> None:
        require_interval("t_max", self.t_max, 0.0, 1.0)
        require_interval("beta_start", self.beta_start, 0.0, 1.0, low_open=True, high_open=True)
        require_interval("beta_end", self.beta_end, self.beta_start, 1.0, high_open=True)
        require_at_least("num_timesteps", self.num_timesteps, 2)


@dataclass
class TrainAgdmAuxTaskSchema(TaskSchema):
    """Train AGDM's auxiliary network ``net`` with TRADES on diffused inputs; writes
    ``agdm_aux.safetensors`` + ``.json`` and ``auxiliary_report.md``; ``eval_steps``: PGD steps
    of the per-epoch and final robust accuracy."""

    name: TaskName = TaskName.train_agdm_aux
    net: Any = MISSING
    max_epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 5e-4
    trades: TradesSchema = field(default_factory=TradesSchema)
    noise: DiffusionLevelsSchema = field(default_factory=DiffusionLevelsSchema)
    eval_steps: int = 20
    init_from: str | None = None  # an advpure checkpoint to start from (null: random initialization)
    export_to: str | None = None
    resume: bool = True  # continue an identical, interrupted training from its last epoch (paths.training)

    def __post_init__(self) -> None:
        require_at_least("max_epochs", self.max_epochs, 1)
        require_interval("lr", self.lr, 0.0, low_open=True)
        require_interval("weight_decay", self.weight_decay, 0.0)
        require_at_least("eval_steps", self.eval_steps, 1)


# --------------------------------------------------------------------------------- root


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


SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": {
        "digits": DigitsSchema,
        "cifar": CifarSchema,
        "imagenet": ImageNetSchema,
        "celebahq": CelebAHQSchema,
        "svhn": SvhnSchema,
    },
    "classifier": {"base": ClassifierSchema},
    "diffusion": {"base": DiffusionSchema, "guided": GuidedDiffusionSchema},
    "purifier": {
        "none": IdentityPurifierSchema,
        "diffpure": DiffPureSchema,
        "diffpure_ddpm": DiffPureDDPMSchema,
        "diffpure_ode": DiffPureODESchema,
        "gdmp": GDMPSchema,
        "mimicdiffusion": MimicDiffusionSchema,
        "agdm": AGDMSchema,
    },
    "attack": {
        "none": NoAttackSchema,
        "autoattack": AutoAttackSchema,
        "pgd_eot": PGDEOTSchema,
        "apgd_eot": APGDEOTSchema,
        "bpda_eot": BPDAEOTSchema,
        "diffhammer": DiffHammerSchema,
        "diffattack": DiffAttackSchema,
        "strongest": StrongestSchema,
        "torchattacks": TorchAttacksSchema,
    },
    "hardware": {"base": HardwareSchema},
    "logger": {"none": LoggerSchema, "wandb": WandbLoggerSchema, "csv": CsvLoggerSchema},
    "task": {
        "evaluate": EvaluateTaskSchema,
        "train_classifier": TrainClassifierTaskSchema,
        "train_diffusion": TrainDiffusionTaskSchema,
        "train_agdm_aux": TrainAgdmAuxTaskSchema,
        "certify": CertifyTaskSchema,
        "audit": AuditTaskSchema,
    },
}


def register_schemas() -> None:
    """Store the root schema as ``advpure_schema`` and each option schema as ``schema/<group>/<name>``."""
    store = ConfigStore.instance()
    store.store(name="advpure_schema", node=RootSchema)
    for group, options in SCHEMAS.items():
        for name, schema in options.items():
            store.store(group=f"schema/{group}", name=name, node=schema)
