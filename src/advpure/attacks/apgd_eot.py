"""APGD (Croce & Hein, 2020) with EOT, run through pyautoattack's ``APGDAttack``.

APGD's own step-size schedule, momentum and checkpoints; each iteration averages the gradient
over ``n_eot`` forward passes of the (random) model, batched into calls of ``eot_chunk`` copies
(:mod:`advpure.attacks.batched_eot`; ``eot_chunk=1`` is APGD's loop of single calls).
Restarts attack only the images no earlier restart fooled (:meth:`Attack.best_of_runs`). An image
APGD fooled (one draw misclassified it at some iterate) returns that iterate, as APGD's ``perturb``
does; an image it did not fool returns its highest-loss iterate over all restarts (``perturb``
would return the clean image, which wastes the attack on a randomized defense that is scored
again afterwards).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from pyautoattack.autopgd_base import APGDAttack
from torch import nn
from typing_extensions import Unpack

from advpure.attacks.autoattack import set_apgd_iterations
from advpure.attacks.base import RestartedEOTAttack, RestartedEOTOptions, Run, Trace, TracedModel, broadcast
from advpure.attacks.batched_eot import batch_eot, eot_description
from advpure.config.enums import AttackLoss
from advpure.errors import ConfigError

APGD_LOSSES = (AttackLoss.ce, AttackLoss.dlr)


class APGDEOT(RestartedEOTAttack):
    """``attack(model, x, y) -> x_adv``; x, x_adv (B, C, H, W) in [0, 1], y (B,) int labels.

    Args:
        eps: radius of the ``norm`` ball, in [0, 1] pixel units.
        rho: APGD's step-size decrease threshold, in (0, 1) (0.75 in AutoAttack).

    Keyword options (:class:`~advpure.attacks.base.RestartedEOTOptions`, defaults declared in
    :class:`~advpure.attacks.base.RestartedEOTAttack` and its bases):
        norm: ``Linf`` or ``L2``.
        n_iter: APGD iterations per restart (``None``: 100).
        n_eot: forward passes averaged per gradient (``None``: 20, AutoAttack's rand version).
        n_restarts: APGD runs from random starts; later ones attack only unfooled images.
        loss: ``ce`` or ``dlr`` (APGD has no margin loss).
        eot_chunk: EOT copies per model call (``None``: all ``n_eot``; 1: APGD's loop).
        seed: APGD's seed; like ``APGDAttack.perturb`` it seeds torch's global generator
            at the start of every call (random starts; the model's draws follow from it).
    """

    name = "apgd_eot"
    published_steps = 100
    published_eot = 20
    verdict_rule = (
        "robust unless APGD saw a draw misclassify one of its iterates (the last of the n_eot draws at each "
        "iterate, APGD's own bookkeeping)"
    )
    selection = (
        "per point: the iterate at which APGD saw a draw misclassify it; else, over restarts, the iterate with "
        "the highest loss APGD recorded (one draw per iterate)"
    )

    def __init__(self, eps: float, *, rho: float = 0.75, **options: Unpack[RestartedEOTOptions]) -> None:
        super().__init__(eps, **options)
        if self.loss not in APGD_LOSSES:
            raise ConfigError(
                "attack.loss",
                f"APGD has no {self.loss.value} loss",
                "use attack.loss=ce or attack.loss=dlr (attack=pgd_eot has the margin loss)",
            )
        self.rho = float(rho)

    def build(self, model: nn.Module, device: torch.device) -> APGDAttack:
        """A pyautoattack ``APGDAttack`` on ``model`` with this attack's budget."""
        apgd = APGDAttack(
            model,
            n_iter=self.n_iter,
            norm=self.norm.value,
            n_restarts=self.n_restarts,
            eps=self.eps,
            seed=self.seed,
            loss=self.loss.value,
            rho=self.rho,
            device=device,
            logger=logging.getLogger("auto-attack"),
        )
        set_apgd_iterations(apgd, self.n_iter)
        batch_eot(apgd, model, self.n_eot, self.eot_chunk)
        return apgd

    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.detach().float()
        traced = TracedModel(model, Trace())
        apgd = self.build(traced, x.device)
        apgd.init_hyperparam(x)
        torch.random.manual_seed(self.seed)

        def run(xs: torch.Tensor, ys: torch.Tensor) -> Run:
            with traced.labelled(ys, self.n_eot):
                x_best, robust, loss_best, x_best_adv = apgd.attack_single_run(xs, ys)
            fooled = ~robust.bool()
            chosen = torch.where(broadcast(fooled, xs), x_best_adv, x_best)
            return Run(chosen.detach(), fooled, torch.stack([fooled.float(), loss_best.float()], dim=1))

        best = self.best_of_runs(x, y, self.n_restarts, run, traced.trace)
        self.last_verdict = ~best.fooled
        self.last_trace = traced.trace.data
        self.last_checks = None
        return best.x_adv

    def variant_options(self) -> dict[str, Any]:
        return {
            "eot": eot_description(self.eot_chunk, self.n_eot),
            "n_restarts": self.n_restarts,
            "loss": self.loss.value,
            "rho": self.rho,
            "seed": self.seed,
        }
