"""AutoAttack (Croce & Hein, 2020) through pyautoattack, with gradients through the purifier."""

from __future__ import annotations

import logging
from typing import Any

import torch
from pyautoattack import AutoAttack
from pyautoattack.autopgd_base import APGDAttack
from torch import nn

from advpure.config.enums import AutoAttackVersion, Norm
from advpure.errors import ConfigError

KNOWN_ATTACKS = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")


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
        self._last: dict[str, Any] = {}
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
            if self.n_eot is not None:
                apgd.eot_iter = self.n_eot
        if self.n_restarts is not None:
            adversary.apgd.n_restarts = self.n_restarts
        return adversary

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in [0, 1], y (B,) -> x_adv within the eps-ball, in [0, 1]."""
        adversary = self.build(model, x.device)
        self._last = self._describe(adversary)
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=x.shape[0])
        return x_adv.detach()

    def settings(self) -> dict[str, Any]:
        """The effective settings (attack list, iterations, EOT), as AutoAttack will run them."""
        return self._last or self._describe(self.build(nn.Identity(), torch.device("cpu")))

    def _describe(self, adversary: AutoAttack) -> dict[str, Any]:
        return {
            "name": "autoattack",
            "version": self.version.value,
            "norm": self.norm.value,
            "eps": self.eps,
            "attacks": list(adversary.attacks_to_run),
            "n_iter": adversary.apgd.n_iter,
            "n_eot": adversary.apgd.eot_iter,
            "n_restarts": adversary.apgd.n_restarts,
            "seed": self.seed,
            "reduced_budget": (self.n_iter is not None and self.n_iter < 100)
            or (self.version == AutoAttackVersion.rand and self.n_eot is not None and self.n_eot < 20),
        }
