"""What every indicator takes (:class:`AuditContext`) and returns (:class:`IndicatorResult`).

An indicator is a function ``context -> IndicatorResult`` registered by name in
:data:`advpure.audit.registry.INDICATORS`. The context holds the defended model's parts, the
evaluated attack and a factory for variants of it, the audited images (a prefix of the evaluated
ones) with the evaluation's records of them, and lazily computed, shared pieces: the evaluation's
clean and adversarial draws per image, the evaluated attack re-run under a probe (per-image traces),
and reduced-budget re-runs under another eps or gradient mode. Every random stream is seeded from
(``seed``, the piece's name), so an audit is reproducible.

Scoring rule throughout: the evaluation's majority vote over ``n_draws`` purifications (strict
plurality; a tie is wrong), robust = clean majority correct and adversarial majority correct.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from advpure.attacks.base import Attack
from advpure.audit.probe import ProbedRun, run_probed
from advpure.audit.settings import AuditSchema
from advpure.audit.statistics import draws_from_records, majority_correct
from advpure.config.enums import GradMode, Norm
from advpure.evaluation.batches import stream_seed
from advpure.evaluation.defended import DefendedClassifier
from advpure.purifiers.noise import NoiseSource

# A new attack like the evaluated one, with keyword overrides (eps, n_iter, n_eot).
AttackFactory = Callable[..., Attack]


class Verdict(str, Enum):
    """An indicator's outcome: the evaluation passes it, is suspect (warn), fails it, or the
    indicator does not apply to this setting (n/a, with the reason in its row)."""

    passed = "pass"
    warned = "warn"
    failed = "fail"
    not_applicable = "n/a"


@runtime_checkable
class Wrapper(Protocol):
    """A purifier that wraps another (``.purifier``), e.g. the resizing wrapper."""

    purifier: nn.Module


@runtime_checkable
class GradientModes(Protocol):
    """A purifier that implements advpure's gradient modes itself (the rules of
    :mod:`advpure.purifiers.gradients` call its ``purify``), as every ``ReversePurifier`` does."""

    grad_mode: GradMode
    surrogate: nn.Module | None
    supports_adjoint: bool
    supports_guidance: bool

    def purify(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor: ...


@dataclass
class IndicatorResult:
    """One row of the audit: ``value`` against ``threshold`` (numbers, ``None`` when n/a) with
    their readable forms, the ``verdict``, the ``fix`` it suggests, what was measured
    (``details``), the budget of any re-run attack (``budget``), and the indicator's cost."""

    name: str
    value: float | None
    threshold: float | None
    verdict: Verdict
    fix: str
    details: dict[str, Any] = field(default_factory=dict)
    value_text: str = ""
    threshold_text: str = ""
    budget: str = ""
    seconds: float = 0.0
    purifier_forwards: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict.value}


def not_applicable(name: str, why: str) -> IndicatorResult:
    """A row for an indicator that does not apply here, saying why."""
    return IndicatorResult(name, None, None, Verdict.not_applicable, "", {"reason": why}, value_text=f"n/a: {why}")


def attack_setting(settings: dict[str, Any], *keys: str) -> int | None:
    """The first of ``keys`` in an attack's ``settings()`` (an ensemble: the largest over its
    ``members``), or ``None``."""
    for key in keys:
        if isinstance(settings.get(key), int | float) and not isinstance(settings.get(key), bool):
            return int(settings[key])
    members = settings.get("members")
    if isinstance(members, dict):
        values = [attack_setting(member, *keys) for member in members.values() if isinstance(member, dict)]
        found = [v for v in values if v is not None]
        return max(found) if found else None
    return None


class _BPDA(nn.Module):
    """classifier(purifier(x)) whose backward pass treats the purifier as the identity (for a
    purifier without grad modes). Its parts are not named ``purifier`` / ``classifier``: an attack
    that splits such a model would differentiate the purifier itself."""

    def __init__(self, purifier: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.purification, self.classification = purifier, classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            purified = self.purification(x)
        return self.classification(x + (purified - x).detach())


@dataclass
class AuditContext:
    """Everything an indicator may use.

    Args:
        classifier: x (N, C, H, W) in [0, 1] -> logits (N, K), deterministic.
        purifier: x (N, C, H, W) in [0, 1] -> (N, C, H, W) in [0, 1], one random draw per row; its
            ``grad_mode`` (when it has one) is the evaluated gradient mode.
        attack: the evaluated attack (re-run on the audited images under a probe).
        x: the audited images (B, C, H, W) in [0, 1], a prefix of the evaluated ones; y: (B,) labels.
        options: budgets and thresholds.
        make_attack: ``make_attack(eps=..., n_iter=..., n_eot=...)`` -> a new attack like
            ``attack`` with those settings; ``None``: the indicators that re-run an attack are n/a.
        records: the evaluation's records of the audited images (same order; ``None``: the
            evaluation's draws are computed afresh from the probed re-run).
        all_records: the records of every evaluated image (score stability), ``None``: ``records``.
        seed: seeds every random stream of the audit.
        n_draws: purifications per rescoring when neither ``options.n_draws`` nor records give it.
        draw_chunk: purifications per scoring call (``None``: all draws of the batch in one call).
    """

    classifier: nn.Module
    purifier: nn.Module
    attack: Attack
    x: torch.Tensor
    y: torch.Tensor
    options: AuditSchema = field(default_factory=AuditSchema)
    make_attack: AttackFactory | None = None
    records: list[dict[str, Any]] | None = None
    all_records: list[dict[str, Any]] | None = None
    seed: int = 0
    n_draws: int = 10
    draw_chunk: int | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.x, self.y = self.x.detach(), self.y.detach()
        self.attack_settings = self.attack.settings()  # before any re-run changes its last-call fields
        if self.records is not None and len(self.records) != self.x.shape[0]:
            raise ValueError(f"{len(self.records)} records for {self.x.shape[0]} audited images")

    # ------------------------------------------------------------------ the setting

    @property
    def defended(self) -> nn.Module:
        return DefendedClassifier(self.purifier, self.classifier)

    @property
    def grad_mode(self) -> GradMode:
        """The evaluated gradient mode (``full`` for a purifier without modes)."""
        holder = self.mode_holder
        return GradMode.full if holder is None else holder.grad_mode

    @property
    def mode_holder(self) -> nn.Module | None:
        """The module that implements advpure's gradient modes (a ``grad_mode`` and a ``purify``):
        the purifier, or the purifier a wrapper holds (``.purifier``, e.g. the resizing wrapper);
        ``None``: ``full``, ``bpda`` and ``blind`` are built around the purifier here."""
        holder = self.purifier
        while not isinstance(holder, GradientModes) and isinstance(holder, Wrapper):
            holder = holder.purifier
        return holder if isinstance(holder, GradientModes) else None

    @property
    def has_modes(self) -> bool:
        """Whether the purifier implements advpure's gradient modes (:attr:`mode_holder`)."""
        return self.mode_holder is not None

    def modes(self) -> list[GradMode]:
        """The gradient modes this purifier supports, ``full`` first (``options.modes`` filters)."""
        holder = self.mode_holder
        supported = {
            GradMode.full: True,
            GradMode.bpda: True,
            GradMode.blind: True,
            GradMode.adjoint: holder is not None and holder.supports_adjoint,
            GradMode.surrogate: holder is not None and holder.surrogate is not None,
            GradMode.guidance_blind: holder is not None and holder.supports_guidance,
        }
        wanted = self.options.modes
        chosen = [m for m in GradMode if wanted is None or m.value in wanted or m == self.grad_mode]
        return [m for m in chosen if supported.get(m, False)]

    @contextmanager
    def target(self, mode: GradMode | None = None) -> Iterator[nn.Module]:
        """The model an attack differentiates under ``mode`` (default: the evaluated one); the
        purifier's own mode is restored afterwards."""
        mode = self.grad_mode if mode is None else GradMode(mode)
        holder = self.mode_holder
        if holder is not None:
            before = holder.grad_mode
            holder.grad_mode = mode
            try:
                yield self.defended.attack_target()
            finally:
                holder.grad_mode = before
            return
        generic: dict[GradMode, nn.Module] = {
            GradMode.full: self.defended,
            GradMode.bpda: _BPDA(self.purifier, self.classifier),
            GradMode.blind: self.classifier,
        }
        yield generic[mode]

    @property
    def uses_gradients(self) -> bool:
        return bool(self.attack_settings.get("uses_gradients", True))

    @property
    def eps(self) -> float:
        return float(self.attack.eps)

    @property
    def norm(self) -> Norm:
        return Norm(self.attack.norm)

    @property
    def eot_copies(self) -> int:
        """EOT draws per gradient of the evaluated attack (1 when it declares none)."""
        return attack_setting(self.attack_settings, "n_eot", "eot_iter") or 1

    def seed_for(self, name: str) -> None:
        """Seed torch's generators for the audit's random stream ``name``."""
        torch.manual_seed(stream_seed(self.seed, 0, f"audit/{name}"))

    # ------------------------------------------------------------------ scoring

    @property
    def rescore_draws(self) -> int:
        """Purifications per rescoring: ``options.n_draws``, else the records' draws, else ``n_draws``."""
        if self.options.n_draws is not None:
            return int(self.options.n_draws)
        if self.records:
            return len(self.records[0]["defended_adv_draws"].split())
        return int(self.n_draws)

    @torch.no_grad()
    def predictions(self, x: torch.Tensor, n_draws: int | None = None) -> torch.Tensor:
        """Predictions of ``n_draws`` fresh purifications of x (B, C, H, W): (D, B) ints."""
        n_draws = self.rescore_draws if n_draws is None else int(n_draws)
        chunk = n_draws if self.draw_chunk is None else max(1, min(int(self.draw_chunk), n_draws))
        parts = []
        for start in range(0, n_draws, chunk):
            copies = min(chunk, n_draws - start)
            logits = self.defended(x.detach().repeat(copies, *[1] * (x.ndim - 1)))
            parts.append(logits.argmax(1).view(copies, x.shape[0]))
        return torch.cat(parts)

    def clean_draws(self) -> torch.Tensor:
        """(D, B) predictions on the clean images: the evaluation's records, else fresh draws."""
        if "clean_draws" not in self._cache:
            if self.records is not None:
                draws = draws_from_records(self.records, "defended_clean_draws").to(self.y.device)
            else:
                self.seed_for("clean draws")
                draws = self.predictions(self.x)
            self._cache["clean_draws"] = draws
        return self._cache["clean_draws"]

    def robust(self, adv_draws: torch.Tensor) -> torch.Tensor:
        """(B,) bool: majority vote correct on the clean draws and on ``adv_draws`` (D, B)."""
        clean = majority_correct(self.clean_draws(), self.y)
        return clean & majority_correct(adv_draws, self.y).to(clean.device)  # both on the images' device

    def rescore(self, x_adv: torch.Tensor, name: str) -> torch.Tensor:
        """(B,) bool robust by majority vote of fresh purifications of ``x_adv`` (stream ``name``)."""
        self.seed_for(f"rescore {name}")
        return self.robust(self.predictions(x_adv))

    def evaluated_adv_draws(self) -> torch.Tensor:
        """(D, B) predictions on the evaluation's adversarial examples: the records, else fresh
        draws of the probed re-run's output."""
        if "adv_draws" not in self._cache:
            if self.records is not None:
                draws = draws_from_records(self.records, "defended_adv_draws").to(self.y.device)
            else:
                self.seed_for("rescore evaluated")
                draws = self.predictions(self.probed().x_adv)
            self._cache["adv_draws"] = draws
        return self._cache["adv_draws"]

    def evaluated_robust(self) -> torch.Tensor:
        """(B,) bool: robust in the evaluation, by majority vote of its draws."""
        return self.robust(self.evaluated_adv_draws())

    # ------------------------------------------------------------------ attack runs

    def probed(self) -> ProbedRun:
        """The evaluated attack, as evaluated (same settings and grad mode), re-run on the audited
        images under a probe that records per-image traces (cached)."""
        if "probed" not in self._cache:
            self.seed_for("evaluated attack")
            with self.target() as target:
                self._cache["probed"] = run_probed(self.attack, target, self.x, self.y)
        return self._cache["probed"]

    def reduced_budget(self) -> dict[str, int]:
        """``n_iter`` / ``n_eot`` (and ``n_restarts`` for an attack that declares restarts) of re-run
        attacks: the options', capped at the evaluated attack's."""
        settings = self.attack_settings
        budget = {"n_iter": self.options.rerun_n_iter, "n_eot": self.options.rerun_n_eot}
        own = {
            "n_iter": attack_setting(settings, "n_iter", "steps"),
            "n_eot": attack_setting(settings, "n_eot", "eot_iter"),
        }
        if isinstance(settings.get("n_restarts"), int):  # a keyword of the attack's own constructor
            budget["n_restarts"], own["n_restarts"] = self.options.rerun_n_restarts, settings["n_restarts"]
        return {key: min(value, own[key]) if own[key] is not None else value for key, value in budget.items()}

    def budget_text(self) -> str:
        budget = self.reduced_budget()
        return "re-run at a reduced budget: " + ", ".join(f"{key}={value}" for key, value in budget.items())

    def rerun(self, name: str, eps: float | None = None, mode: GradMode | None = None) -> torch.Tensor:
        """The evaluated attack's family at the reduced budget, at ``eps`` (default: the evaluated
        one) under gradient ``mode`` (default: the evaluated one), on the audited images: x_adv
        (B, C, H, W) in [0, 1]. Needs ``make_attack``."""
        if self.make_attack is None:
            raise ValueError("this audit has no attack factory (make_attack)")
        attack = self.make_attack(eps=self.eps if eps is None else float(eps), **self.reduced_budget())
        self.seed_for(f"rerun {name}")
        with self.target(mode) as target, torch.enable_grad():
            return attack(target, self.x, self.y).detach()

    def largest_eps(self) -> float:
        """The largest meaningful eps of the threat model: Linf 1 (the whole cube), L2 the
        diagonal sqrt(C * H * W)."""
        return 1.0 if self.norm == Norm.Linf else math.sqrt(self.x[0].numel())
