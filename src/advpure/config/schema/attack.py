"""Schemas of the ``attack`` group. Every key that is a constructor parameter of the option's
class takes that constructor's default (:mod:`.signature`); range checks run once at start-up,
and :meth:`AttackSchema.check_data` checks the budget against the dataset's images."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING, DictConfig

from advpure.attacks.apgd_eot import APGDEOT
from advpure.attacks.autoattack import AutoAttackRunner
from advpure.attacks.base import Attack
from advpure.attacks.bpda_eot import BPDAEOT
from advpure.attacks.diffattack import DiffAttack
from advpure.attacks.diffhammer import DiffHammer
from advpure.attacks.none import NoAttack
from advpure.attacks.pgd_eot import PGDEOT
from advpure.attacks.strongest import StrongestAttack
from advpure.attacks.torchattacks_runner import TorchAttacksRunner
from advpure.config.checks import require_at_least, require_interval, require_seed
from advpure.config.enums import AttackLoss, AutoAttackVersion, Norm
from advpure.config.schema.signature import ConstructedSchema, defaults_from, target_of


@dataclass
@defaults_from(Attack)
class AttackSchema(ConstructedSchema):
    """Every attack: ``attack(model, x, y) -> x_adv`` with x, x_adv (B, C, H, W) in [0, 1].

    ``eps: null`` takes the dataset's standard budget for ``norm``. ``n_iter`` and ``n_eot``
    are the family's budget knobs (iterations per run; gradient samples per iteration);
    ``null`` keeps the attack's own published value.
    """

    OWN_DEFAULTS: ClassVar[dict[str, str]] = {"eps": "null takes the dataset's standard eps for the norm"}

    _target_: str = MISSING
    norm: Norm
    eps: float | None = None
    n_iter: int | None = None
    n_eot: int | None = None

    def __post_init__(self) -> None:
        # [0, 1] data: an Linf budget above 1 covers the whole cube; L2 budgets may exceed 1.
        high = 1.0 if self.norm == Norm.Linf else float("inf")
        require_interval("eps", self.eps, 0.0, high, low_open=True, allow_none=True)
        require_at_least("n_iter", self.n_iter, 1, allow_none=True)
        require_at_least("n_eot", self.n_eot, 1, allow_none=True)
        self.check_variant()

    def check_variant(self) -> None:
        """The option's own range checks (after eps and the budget knobs)."""

    def check_data(self, shape: tuple[int, int, int] | None) -> None:
        """The budget against the dataset's images, (C, H, W) in [0, 1] (``None``: unknown):
        ``ConfigError`` on ``attack.eps`` for an L2 budget above the data range."""
        if self.eps is None or shape is None or self.norm != Norm.L2:
            return
        largest = math.sqrt(shape[0] * shape[1] * shape[2])
        if float(self.eps) > largest:
            from advpure.errors import ConfigError

            raise ConfigError(
                "attack.eps",
                f"L2 budget {self.eps} exceeds the data range: two {shape[0]}x{shape[1]}x{shape[2]} images in "
                f"[0, 1] are at most sqrt({shape[0] * shape[1] * shape[2]}) = {largest:.4g} apart",
                f"set attack.eps <= {largest:.4g} (the dataset's standard L2 budget: attack.eps=null)",
            )


@dataclass
class NoAttackSchema(AttackSchema):
    """Clean evaluation only."""

    _target_: str = target_of(NoAttack)


@dataclass
@defaults_from(AutoAttackRunner)
class AutoAttackSchema(AttackSchema):
    """AutoAttack (pyautoattack) on the defended model, gradients through the purifier.

    ``eot_chunk``: EOT copies per model call; null draws all n_eot samples of a gradient in one
    batched call (same estimator as pyautoattack's loop, faster, n_eot times the activation
    memory); 1 = the loop.
    """

    _target_: str = target_of(AutoAttackRunner)
    version: AutoAttackVersion
    attacks: list[str] | None
    n_restarts: int | None
    seed: int
    eot_chunk: int | None

    def check_variant(self) -> None:
        require_at_least("n_restarts", self.n_restarts, 1, allow_none=True)
        require_at_least("eot_chunk", self.eot_chunk, 1, allow_none=True)
        require_seed("seed", self.seed)


@dataclass
@defaults_from(PGDEOT)
class PGDEOTSchema(AttackSchema):
    """PGD with EOT: ``n_iter`` steps (null: 200), ``n_eot`` passes per gradient (null: 20),
    ``step_size`` (null: 2.5 eps / n_iter), random start, restarts, loss ce | margin | dlr;
    ``eot_chunk``: EOT copies per model call (null: all n_eot at once; same gradient sum, bounded
    memory)."""

    _target_: str = target_of(PGDEOT)
    step_size: float | None
    random_start: bool
    n_restarts: int
    loss: AttackLoss
    seed: int
    eot_chunk: int | None

    def check_variant(self) -> None:
        require_interval("step_size", self.step_size, 0.0, low_open=True, allow_none=True)
        require_at_least("n_restarts", self.n_restarts, 1)
        require_at_least("eot_chunk", self.eot_chunk, 1, allow_none=True)
        require_seed("seed", self.seed)


@dataclass
@defaults_from(APGDEOT)
class APGDEOTSchema(AttackSchema):
    """APGD (pyautoattack's ``APGDAttack``) with EOT: ``n_iter`` iterations (null: 100), ``n_eot``
    passes per gradient (null: 20), restarts, loss ce | dlr, step-size threshold ``rho``;
    ``eot_chunk`` as for AutoAttack."""

    _target_: str = target_of(APGDEOT)
    n_restarts: int
    loss: AttackLoss
    rho: float
    eot_chunk: int | None
    seed: int

    def check_variant(self) -> None:
        require_at_least("n_restarts", self.n_restarts, 1)
        require_interval("rho", self.rho, 0.0, 1.0, low_open=True, high_open=True)
        require_at_least("eot_chunk", self.eot_chunk, 1, allow_none=True)
        require_seed("seed", self.seed)
        if self.loss == AttackLoss.margin:
            from advpure.errors import ConfigError

            raise ConfigError("loss", "APGD has no margin loss", "use loss=ce or loss=dlr (attack=pgd_eot has margin)")


@dataclass
@defaults_from(BPDAEOT)
class BPDAEOTSchema(AttackSchema):
    """DiffPure's BPDA+EOT protocol (Linf only): ``n_iter`` sign steps (null: 50) of ``step_size``
    (null: 2/255), ``n_eot`` purifications per gradient (null: 15), defense checks of
    ``n_defense_reps`` purifications (null: 150), ``defense_chunk`` of them per image in one call
    (null: calls no larger than a gradient step's, n_eot * batch images)."""

    _target_: str = target_of(BPDAEOT)
    n_defense_reps: int | None
    step_size: float | None
    defense_chunk: int | None

    def check_variant(self) -> None:
        if self.norm != Norm.Linf:
            from advpure.errors import ConfigError

            raise ConfigError("norm", "BPDA+EOT is a Linf protocol", "use norm=Linf, or attack=pgd_eot for L2")
        require_at_least("n_defense_reps", self.n_defense_reps, 1, allow_none=True)
        require_interval("step_size", self.step_size, 0.0, low_open=True, allow_none=True)
        require_at_least("defense_chunk", self.defense_chunk, 1, allow_none=True)


@dataclass
@defaults_from(DiffHammer)
class DiffHammerSchema(AttackSchema):
    """DiffHammer (Wang et al., NeurIPS 2024): selective EM aggregation over ``n_eot`` purification
    draws (null: 10) with gradient grafting, APGD ``n_iter`` iterations (null: 50) per restart,
    ``n_restarts`` (null: 3) cycling through ``losses`` (restart r uses losses[r]; published: CW
    margin, CE, DLR). ``em_lam``: EM weight sigmoid(em_lam * predicted loss) and ``em_alpha``: the
    grafted gradient averaged with the previous by (i + 1)^-em_alpha, advpure's values (not in the
    released attacker); ``restart_below``: restarts re-attack points whose best iterate fools at
    most this fraction of draws."""

    _target_: str = target_of(DiffHammer)
    n_restarts: int | None
    losses: list[AttackLoss]
    em_steps: int
    em_lam: float
    em_alpha: float
    restart_below: float
    seed: int

    def check_variant(self) -> None:
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
@defaults_from(DiffAttack)
class DiffAttackSchema(PGDEOTSchema):
    """DiffAttack (Kang et al., NeurIPS 2023): PGD-EOT (null: 100 steps, EOT 20) on the loss plus
    ``deviation_weight`` (advpure's value) times the deviated-reconstruction term on the purifier's
    intermediate states."""

    _target_: str = target_of(DiffAttack)
    deviation_weight: float

    def check_variant(self) -> None:
        super().check_variant()
        require_interval("deviation_weight", self.deviation_weight, 0.0)


@dataclass
@defaults_from(StrongestAttack)
class StrongestSchema(AttackSchema):
    """The ensemble (:mod:`advpure.attacks.strongest`): ``members`` (name -> an attack option's
    node, composed from conf/attack/ in conf/attack/strongest.yaml), each point kept from the member
    that does worst under ``n_score`` fresh draws (the evaluation's worst-of-10). The members are
    built by the ensemble itself (``_recursive_: false``), with its eps and norm."""

    OWN_DEFAULTS: ClassVar[dict[str, str]] = {
        **AttackSchema.OWN_DEFAULTS,
        "members": "an empty dict where the constructor's None means none",
    }

    _target_: str = target_of(StrongestAttack)
    _recursive_: bool = False
    members: dict[str, Any] = field(default_factory=dict)
    n_score: int
    score_chunk: int | None

    def check_variant(self) -> None:
        require_at_least("n_score", self.n_score, 1)
        require_at_least("score_chunk", self.score_chunk, 1, allow_none=True)


@dataclass
class TorchAttacksSchema(AttackSchema):
    """A torchattacks attack by class ``name``; ``kwargs`` go to its constructor. ``kwargs`` is an
    open dict (``attack.kwargs.alpha=0.02`` needs no ``+``); a keyword the class does not take is a
    ``ConfigError`` naming ``attack.kwargs.<key>`` when the attack is built."""

    OWN_DEFAULTS: ClassVar[dict[str, str]] = {
        **AttackSchema.OWN_DEFAULTS,
        "name": "the constructor needs a class; the option's is EOTPGD",
        "kwargs": "an open dict where the constructor's None means none",
    }

    _target_: str = target_of(TorchAttacksRunner)
    name: str = "EOTPGD"
    kwargs: dict[str, Any] = field(default_factory=lambda: DictConfig({}, flags={"struct": False}))

    def check_data(self, shape: tuple[int, int, int] | None) -> None:
        super().check_data(shape)
        from advpure.attacks.torchattacks_runner import check_norm

        check_norm(str(self.name), self.norm)


ATTACK_SCHEMAS: dict[str, type[AttackSchema]] = {
    "none": NoAttackSchema,
    "autoattack": AutoAttackSchema,
    "pgd_eot": PGDEOTSchema,
    "apgd_eot": APGDEOTSchema,
    "bpda_eot": BPDAEOTSchema,
    "diffhammer": DiffHammerSchema,
    "diffattack": DiffAttackSchema,
    "strongest": StrongestSchema,
    "torchattacks": TorchAttacksSchema,
}
