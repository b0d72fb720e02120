"""AutoAttack (Croce & Hein, 2020) through pyautoattack, with gradients through the purifier.

pyautoattack's checks for unreliable evaluations (``pyautoattack.checks``) only log warnings on the
``auto-attack`` logger; the runner records them per call in ``last_checks``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from pyautoattack import AutoAttack, checks
from pyautoattack.autopgd_base import APGDAttack
from torch import nn

from advpure.attacks.batched_eot import batch_eot, eot_description, eot_samples
from advpure.config.enums import AutoAttackVersion, Norm
from advpure.errors import ConfigError

KNOWN_ATTACKS = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
# pyautoattack's checks, by function name (the name its warning records carry as funcName).
CHECKS = (
    "check_randomized",
    "check_range_output",
    "check_dynamic",
    "check_n_classes",
    "check_zero_gradients",
    "check_square_sr",
)


class CheckRecorder(logging.Handler):
    """Collects the warnings pyautoattack's checks log, keyed by the check that logged them."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: dict[str, list[str]] = {name: [] for name in CHECKS}

    def emit(self, record: logging.LogRecord) -> None:
        messages = self.messages.setdefault(record.funcName if record.funcName in CHECKS else "other", [])
        if record.getMessage() not in messages:
            messages.append(record.getMessage())

    def report(self) -> dict[str, dict[str, Any]]:
        """``{check: {"warned": bool, "messages": [str, ...]}}`` for every check."""
        return {name: {"warned": bool(messages), "messages": messages} for name, messages in self.messages.items()}


def set_apgd_iterations(apgd: APGDAttack, n_iter: int) -> None:
    """Give an APGD attack ``n_iter`` iterations, with the checkpoint schedule its constructor derives."""
    apgd.n_iter = n_iter
    apgd.n_iter_orig = n_iter
    apgd.n_iter_2 = max(int(0.22 * n_iter), 1)
    apgd.n_iter_min = max(int(0.06 * n_iter), 1)
    apgd.size_decr = max(int(0.03 * n_iter), 1)


class AutoAttackRunner:
    """Runs AutoAttack on a given model.

    Args:
        norm: ``Linf`` or ``L2``.
        eps: budget (in [0, 1] pixel units).
        version: ``rand`` (APGD-CE + APGD-DLR with EOT, for randomized defenses), ``standard``
            (APGD-CE, APGD-T, FAB-T, Square) or ``custom`` (``attacks``).
        attacks: attack list for ``custom`` (from ``KNOWN_ATTACKS``).
        n_iter: APGD iterations (``None``: AutoAttack's 100).
        n_eot: EOT gradient samples per APGD iteration (``None``: 20 for ``rand``, else 1).
        n_restarts: APGD restarts (``None``: the version's own).
        seed: AutoAttack's seed.
        eot_chunk: EOT copies per model call (:mod:`advpure.attacks.batched_eot`): ``None`` draws
            all ``n_eot`` samples of a gradient in one batched call; 1 keeps pyautoattack's loop of
            single calls. Same estimator either way; batching is faster and uses more memory.

    After each call ``last_checks`` holds that call's check results (:meth:`CheckRecorder.report`:
    per check, whether it warned and its messages); ``check_randomized``, which AutoAttack skips
    for ``rand``, is run on every call, so ``last_checks["check_randomized"]["warned"]`` always
    says whether the model looked randomized. The evaluation calls the runner once per batch and
    model and stores ``last_checks`` per call; ``settings()["checks"]`` is the last call's.
    """

    def __init__(
        self,
        eps: float,
        norm: Norm = Norm.Linf,
        version: AutoAttackVersion = AutoAttackVersion.rand,
        attacks: list[str] | None = None,
        n_iter: int | None = None,
        n_eot: int | None = None,
        n_restarts: int | None = None,
        seed: int = 0,
        eot_chunk: int | None = None,
    ) -> None:
        self.norm = Norm(norm)
        self.eps = float(eps)
        self.version = AutoAttackVersion(version)
        if self.version == AutoAttackVersion.custom:
            if not attacks:
                raise ConfigError("attack.attacks", "is empty for version=custom", f"list some of {KNOWN_ATTACKS}")
            unknown = [a for a in attacks if a not in KNOWN_ATTACKS]
            if unknown:
                raise ConfigError(
                    "attack.attacks",
                    f"unknown attacks {unknown}",
                    f"use names from {KNOWN_ATTACKS}",
                )
        elif attacks:
            raise ConfigError(
                "attack.attacks",
                f"is set but version={self.version.value}",
                "use attack.version=custom or attack.attacks=null",
            )
        self.attacks = list(attacks) if attacks else None
        self.n_iter = n_iter
        self.n_eot = n_eot
        self.n_restarts = n_restarts
        self.seed = seed
        self.eot_chunk = eot_chunk
        self._last: dict[str, Any] = {}
        self.last_checks: dict[str, dict[str, Any]] | None = None
        # AutoAttack reports its per-attack progress at DEBUG: show it (progress within a batch).
        logging.getLogger("auto-attack").setLevel(logging.DEBUG)

    def build(self, model: nn.Module, device: torch.device) -> AutoAttack:
        """A pyautoattack ``AutoAttack`` on ``model`` with this runner's budget applied."""
        adversary = AutoAttack(
            model,
            attacks=self.attacks,
            device=str(device),
            eps=self.eps,
            norm=self.norm.value,
            seed=self.seed,
            version=self.version.value,
        )
        for apgd in (adversary.apgd, adversary.apgd_targeted):
            if self.n_iter is not None:
                set_apgd_iterations(apgd, self.n_iter)
            batch_eot(apgd, model, apgd.eot_iter if self.n_eot is None else self.n_eot, self.eot_chunk)
        if self.n_restarts is not None:
            adversary.apgd.n_restarts = self.n_restarts
        return adversary

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in [0, 1], y (B,) -> x_adv within the eps-ball, in [0, 1]."""
        adversary = self.build(model, x.device)
        self._last = self._describe(adversary)
        logger = logging.getLogger("auto-attack")
        recorder = CheckRecorder()
        logger.addHandler(recorder)
        # check_dynamic counts autograd calls in a module-level dict it never resets: without this,
        # one model that calls autograd in its forward would flag every later model as dynamic.
        checks.funcs.update(dict.fromkeys(checks.funcs, 0))
        try:
            if self.version == AutoAttackVersion.rand:
                checks.check_randomized(adversary.get_logits, x, y, logger=logger)
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=x.shape[0])
        finally:
            logger.removeHandler(recorder)
        self.last_checks = recorder.report()
        return x_adv.detach()

    def settings(self) -> dict[str, Any]:
        """The effective settings (attack list, iterations, EOT), as AutoAttack will run them, and
        the last call's ``checks`` (``None`` before the first call)."""
        described = self._last or self._describe(self.build(nn.Identity(), torch.device("cpu")))
        return {**described, "checks": self.last_checks}

    def _describe(self, adversary: AutoAttack) -> dict[str, Any]:
        return {
            "name": "autoattack",
            "version": self.version.value,
            "norm": self.norm.value,
            "eps": self.eps,
            "attacks": list(adversary.attacks_to_run),
            "n_iter": adversary.apgd.n_iter,
            "n_eot": eot_samples(adversary.apgd),
            "eot": eot_description(self.eot_chunk, eot_samples(adversary.apgd)),
            "n_restarts": adversary.apgd.n_restarts,
            "seed": self.seed,
            "reduced_budget": (self.n_iter is not None and self.n_iter < 100)
            or (self.version == AutoAttackVersion.rand and self.n_eot is not None and self.n_eot < 20),
        }
