"""Schemas of the ``purifier`` group. Every key that is a constructor parameter of the option's
class takes that constructor's default (:mod:`.signature`); range checks run once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING

from advpure.config.checks import require_at_least, require_interval, require_seed, require_step_fits
from advpure.config.enums import (
    DdpmVariance,
    EmbeddingDistance,
    EmbeddingLayer,
    GradMode,
    GuidanceDistance,
    GuidanceOperator,
    GuidedStart,
    OdeMethod,
    SdeMethod,
    SdeSolver,
)
from advpure.config.schema.classifier import ClassifierSchema
from advpure.config.schema.diffusion import LinearBetas
from advpure.config.schema.signature import ConstructedSchema, defaults_from, target_of
from advpure.purifiers.agdm import AGDM
from advpure.purifiers.base import ReversePurifier
from advpure.purifiers.diffpure import DiffPure
from advpure.purifiers.diffpure_ddpm import DiffPureDDPM
from advpure.purifiers.diffpure_ode import DiffPureODE
from advpure.purifiers.discrete_chain import DiscreteChainPurifier
from advpure.purifiers.gdmp import GDMP
from advpure.purifiers.identity import IdentityPurifier
from advpure.purifiers.mimicdiffusion import MimicDiffusion
from advpure.purifiers.protocol import Capabilities, capabilities, check_grad_mode
from advpure.purifiers.vp_grid import VPGridPurifier


@dataclass
@defaults_from(ReversePurifier)
class PurifierSchema(ConstructedSchema):
    """Every purifier maps (B, C, H, W) in [0, 1] to the same; built with the backbone."""

    _target_: str = MISSING
    grad_mode: GradMode

    def declared_capabilities(self) -> Capabilities | None:
        """What the class ``_target_`` names declares (:mod:`advpure.purifiers.protocol`); ``None``
        when the class cannot be imported (building it then fails, naming the key)."""
        from hydra.utils import get_class

        try:
            purifier_class = get_class(self._target_)
        except Exception:  # an unknown target fails at build, naming the key
            return None
        return capabilities(purifier_class)

    def uses_backbone(self) -> bool:
        """Whether the purifier calls the diffusion backbone (an unknown class is assumed to)."""
        declared = self.declared_capabilities()
        return declared is None or declared.uses_backbone

    def networks(self) -> list[tuple[str, Any]]:
        """``(key under purifier, model node)`` of the networks the purifier builds besides the
        backbone (checked against the dataset's images at start-up)."""
        return []

    def check_capabilities(self) -> None:
        """``grad_mode`` against what the class declares it supports."""
        declared = self.declared_capabilities()
        if declared is not None:
            check_grad_mode(self.grad_mode, declared)


@dataclass
class IdentityPurifierSchema(PurifierSchema):
    """No purification (the undefended classifier)."""

    _target_: str = target_of(IdentityPurifier)


@dataclass
@defaults_from(ReversePurifier)
class ReversePurifierSchema(PurifierSchema):
    """A diffusion purifier: diffuse to t*, run a reverse process to 0 (shared keys).

    ``seed``: null draws fresh noise each call (the defense as published); an integer replays
    the same noise on every call (a deterministic purifier, for debugging and gradient checks).
    ``surrogate``: a purifier node (``_target_`` + keys) whose gradient ``grad_mode=surrogate``
    uses; built with the same backbone. ``checkpoint_steps``: per-step gradient checkpointing.
    """

    t_star: float = 0.1  # each option's schema takes its class's own default
    seed: int | None
    surrogate: Any
    checkpoint_steps: bool

    def __post_init__(self) -> None:
        require_interval("t_star", self.t_star, 0.0, 1.0, low_open=True)
        require_seed("seed", self.seed, allow_none=True)
        self.check_variant()
        if self.surrogate is not None:
            _check_surrogate(self.surrogate)

    def check_variant(self) -> None:
        """The variant's own range checks (after t_star, before the surrogate)."""


@dataclass
@defaults_from(VPGridPurifier)
class VPGridSchema(ReversePurifierSchema):
    """Keys of the continuous VP purifiers: uniform step ``dt`` and the VP-SDE's betas."""

    dt: float
    beta_min: float
    beta_max: float

    def check_variant(self) -> None:
        require_interval("dt", self.dt, 0.0, 1.0, low_open=True)
        require_step_fits(self.t_star, self.dt, usual_t_star=type(self).t_star, usual_dt=VPGridSchema.dt)
        require_interval("beta_min", self.beta_min, 0.0, low_open=True)
        require_interval("beta_max", self.beta_max, self.beta_min, low_open=True)


@dataclass
@defaults_from(DiffPure)
class DiffPureSchema(VPGridSchema):
    """DiffPure: diffuse to t*, Euler-Maruyama on the reverse VP-SDE from t* to 0.

    ``solver``: ``loop`` is advpure's Euler-Maruyama loop (checkpointed steps; torch.compile /
    CUDA-graph friendly); ``torchsde`` is torchsde.sdeint, the reference path as DiffPure runs it
    (same SDE, same step; its autograd graph holds every step). make bench compares the two.
    ``grad_mode``: full (exact, checkpointed) | adjoint (torchsde) | surrogate | bpda | blind; all
    but full are reported as approximations.
    """

    _target_: str = target_of(DiffPure)
    t_star: float
    method: SdeMethod
    solver: SdeSolver


@dataclass
@defaults_from(DiffPureODE)
class DiffPureODESchema(VPGridSchema):
    """DiffPure with the probability-flow ODE of the VP-SDE (deterministic after diffusing);
    ``method``: euler | heun."""

    _target_: str = target_of(DiffPureODE)
    t_star: float
    method: OdeMethod


@dataclass
@defaults_from(DiscreteChainPurifier)
class DiscreteChainSchema(LinearBetas, ReversePurifierSchema):
    """Keys of the purifiers on the discrete DDPM schedule (:class:`DiscreteChainPurifier`): its
    linear betas, which conf/ interpolates from the model's ``diffusion.schedule``."""

    beta_start: float
    beta_end: float
    num_timesteps: int

    def check_variant(self) -> None:
        self.check_betas()


@dataclass
@defaults_from(DiffPureDDPM)
class DiffPureDDPMSchema(DiscreteChainSchema):
    """DiffPure on the discrete DDPM schedule: ancestral sampling from step round(T t*);
    ``variance``: posterior (beta tilde_t) | beta (beta_t)."""

    _target_: str = target_of(DiffPureDDPM)
    t_star: float
    stride: int
    variance: DdpmVariance

    def check_variant(self) -> None:
        require_at_least("stride", self.stride, 1)
        self.check_betas()
        require_interval("t_star", self.t_star, 0.5 / self.num_timesteps, 1.0)


@dataclass
@defaults_from(GDMP)
class GDMPSchema(DiffPureDDPMSchema):
    """GDMP: DDPM purification guided toward the diffused input, ``n_repeats`` rounds.

    Defaults: the published CIFAR-10 setting (t* = 0.036, step 36 of 1000; ``variance`` beta, the
    CIFAR-10 DDPM's "fixedlarge"). ``distance``: mse | ssim; ``guide_scale`` 0 turns guidance off;
    ``guide_eps`` null: the evaluation's eps (attack.eps, or the dataset's standard one);
    ``loss_batch_size`` 100: the released code's batch mean divided the guidance by its batch size.
    ``grad_mode``: full (exact, second-order through the guidance) | guidance_blind | surrogate |
    bpda | blind.
    """

    _target_: str = target_of(GDMP)
    t_star: float
    variance: DdpmVariance
    n_repeats: int
    distance: GuidanceDistance
    guide_scale: float
    guide_eps: float | None
    loss_batch_size: int

    def check_variant(self) -> None:
        super().check_variant()
        require_at_least("n_repeats", self.n_repeats, 1)
        require_at_least("loss_batch_size", self.loss_batch_size, 1)
        require_interval("guide_scale", self.guide_scale, 0.0)
        if self.guide_eps is not None:
            require_interval("guide_eps", self.guide_eps, 0.0, 1.0, low_open=True)


@dataclass
@defaults_from(AGDM)
class AGDMSchema(DiffPureDDPMSchema):
    """AGDM: DDPM purification guided by an adversarially trained auxiliary network's embedding
    distance to the input and its prediction on the input. ``auxiliary``: that network (``net`` +
    ``checkpoint``, trained by ``task=train_agdm_aux``).

    Defaults: t* = 0.07 (step 70 of 1000, the published CIFAR-10 setting); ``variance`` beta (the
    CIFAR-10 DDPM's "fixedlarge", for the guidance and the chain); ``distance_scale``: scale of
    -D(c_phi(x_t), c_phi(x_in)), 0 turns it off; ``class_scale``: scale of log p_phi(y_hat | x_t),
    y_hat = c_phi's prediction on the input; ``distance``: mse | l1 | cosine; ``embedding``:
    logits | penultimate. ``grad_mode``: full (exact, second-order through the guidance) |
    guidance_blind | surrogate | bpda | blind.
    """

    OWN_DEFAULTS: ClassVar[dict[str, str]] = {"auxiliary": "a network node built into the constructor's module"}

    _target_: str = target_of(AGDM)
    t_star: float
    variance: DdpmVariance
    auxiliary: ClassifierSchema = field(default_factory=ClassifierSchema)
    distance_scale: float
    class_scale: float
    distance: EmbeddingDistance
    embedding: EmbeddingLayer

    def check_variant(self) -> None:
        super().check_variant()
        require_interval("distance_scale", self.distance_scale, 0.0)
        require_interval("class_scale", self.class_scale, 0.0)

    def networks(self) -> list[tuple[str, Any]]:
        return [("auxiliary", self.auxiliary)]


@dataclass
@defaults_from(MimicDiffusion)
class MimicDiffusionSchema(DiscreteChainSchema):
    """MimicDiffusion: DDIM (eta = 1) guided by long- and short-range L1 distances to the input.

    Defaults: the released code's. ``start``: noise (released: from pure noise at step T) |
    diffused (the input diffused to ``t_star``, used by start=diffused only); ``stride`` 10: steps
    999, 989, ..., 9; ``rho`` 0 turns guidance off; ``guidance_window``: guidance at chain
    positions 0.2 n < k < 0.9 n (released: 20 < k < 90); ``operator``: nearest | bicubic |
    identity (nearest duplicates the long-range term exactly); ``loss_batch_size`` 16: the released
    code's batch mean divided the guidance by its batch size. ``grad_mode``: full (exact,
    second-order through the guidance) | guidance_blind | surrogate | bpda | blind.
    """

    _target_: str = target_of(MimicDiffusion)
    t_star: float
    start: GuidedStart
    stride: int
    rho: float
    guidance_window: list[float]
    operator: GuidanceOperator
    operator_factor: int
    loss_batch_size: int

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
        self.check_betas()


PURIFIER_SCHEMAS: dict[str, type[PurifierSchema]] = {
    "none": IdentityPurifierSchema,
    "diffpure": DiffPureSchema,
    "diffpure_ddpm": DiffPureDDPMSchema,
    "diffpure_ode": DiffPureODESchema,
    "gdmp": GDMPSchema,
    "mimicdiffusion": MimicDiffusionSchema,
    "agdm": AGDMSchema,
}


def _check_surrogate(node: Any) -> None:
    """Run the range checks of a surrogate purifier node (a dict with ``_target_``)."""
    from advpure.errors import ConfigError

    schemas = {schema._target_: schema for schema in PURIFIER_SCHEMAS.values()}
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
