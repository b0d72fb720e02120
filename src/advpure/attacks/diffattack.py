"""DiffAttack (Kang et al., NeurIPS 2023): PGD-EOT whose objective adds a deviated-reconstruction
term on the purifier's intermediate states.

The classification loss only sees the purified image; DiffAttack also pushes the reverse process
itself off course: at every reverse step the state reached from the adversarial input is pulled
away from the state the clean input would reach. advpure's reading, named in ``settings()``:

- the intermediate states are the diffusion backbone's inputs, one per backbone call of the
  purification (each reverse step's state, in the model's [-1, 1] space), observed by a forward
  hook, so every purifier variant is covered without changing its loop;
- the reference is the same purification of the clean input with the same noise (recorded, then
  replayed for the adversarial copies), without a graph;
- the deviation is the mean over steps of the per-image mean squared difference, weighted by
  ``deviation_weight`` (uniform weights over steps; the paper's alpha_t schedule is not specified
  in a form that carries over to every purifier);
- memory stays flat in the number of steps through the purifiers' per-step checkpointing: only
  the observed states (one image per step) are kept beyond the checkpoints.

A model without a diffusion backbone (``purifier=none``, ``grad_mode=blind``) has no states: the
objective is then the classification loss alone (plain PGD-EOT), and ``last_checks`` says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from advpure.attacks.base import Trace
from advpure.attacks.diffhammer import PurifiedModel
from advpure.attacks.losses import LOSSES
from advpure.attacks.pgd_eot import PGDEOT
from advpure.config.enums import AttackLoss, Norm
from advpure.purifiers.base import ReversePurifier
from advpure.purifiers.noise import NoiseTape


def backbones(purifier: nn.Module) -> list[nn.Module]:
    """The distinct diffusion backbones of the reverse purifiers inside ``purifier``."""
    found: dict[int, nn.Module] = {}
    for module in purifier.modules():
        if isinstance(module, ReversePurifier) and isinstance(module.backbone, nn.Module):
            found.setdefault(id(module.backbone), module.backbone)
    return list(found.values())


@contextmanager
def observed_states(purifier: nn.Module) -> Iterator[list[torch.Tensor]]:
    """The inputs (states) of every backbone call of ``purifier`` inside the block, in call order."""
    states: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        states.append(inputs[0])

    handles = [backbone.register_forward_pre_hook(hook) for backbone in backbones(purifier)]
    try:
        yield states
    finally:
        for handle in handles:
            handle.remove()


class DiffAttack(PGDEOT):
    """PGD-EOT on ``loss + deviation_weight * deviation`` (see the module docstring).

    Args (beyond :class:`~advpure.attacks.pgd_eot.PGDEOT`'s): ``deviation_weight``: the weight of
    the deviated-reconstruction term. Published protocol: PGD 100 steps with EOT 20 at CIFAR-10's
    8/255 (``n_iter``/``n_eot`` null keep them).
    """

    name = "diffattack"
    published_steps = 100
    published_eot = 20

    def __init__(
        self,
        eps: float,
        norm: Norm = Norm.Linf,
        n_iter: int | None = None,
        n_eot: int | None = None,
        step_size: float | None = None,
        random_start: bool = True,
        n_restarts: int = 1,
        loss: AttackLoss = AttackLoss.ce,
        deviation_weight: float = 1.0,
        seed: int = 0,
        eot_chunk: int | None = None,
    ) -> None:
        super().__init__(
            eps,
            norm,
            self.published_steps if n_iter is None else n_iter,
            self.published_eot if n_eot is None else n_eot,
            step_size,
            random_start,
            n_restarts,
            loss,
            seed,
            eot_chunk,
        )
        self.deviation_weight = float(deviation_weight)
        self._clean: torch.Tensor | None = None
        self._observed_steps = 0

    def _iterate(self, model, x, y, generator, best, trace: Trace | None):  # type: ignore[override]
        self._clean = x.detach()
        try:
            return super()._iterate(model, x, y, generator, best, trace)
        finally:
            self._clean = None

    def eot_chunk_step(
        self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, copies: int, with_gradient: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """As PGD-EOT's, on the objective with the deviation term (b points, ``copies`` copies each)."""
        if not isinstance(model, PurifiedModel) or self._clean is None or not backbones(model.purifier):
            self._observed_steps = 0
            return super().eot_chunk_step(model, x_adv, y, copies, with_gradient)
        purifier, classifier = model.purifier, model.classifier
        repeat = [copies, *[1] * (x_adv.ndim - 1)]
        tape = NoiseTape()
        with torch.no_grad(), observed_states(purifier) as reference:
            purifier(self._clean.repeat(*repeat), tape)
        reference = [state.detach() for state in reference]
        with torch.set_grad_enabled(with_gradient):
            batch = x_adv.detach().repeat(*repeat).requires_grad_(with_gradient)
            with observed_states(purifier) as states:
                purified = purifier(batch, tape.replay())
            self._observed_steps = len(states)
            logits = classifier(purified)
            objective = LOSSES[self.loss](logits, y.repeat(copies))
            if states and len(states) == len(reference):
                deviation = torch.stack(
                    [(s.float() - r.float()).flatten(1).pow(2).mean(1) for s, r in zip(states, reference, strict=True)]
                ).mean(0)
                objective = objective + self.deviation_weight * deviation
            grad = None
            if with_gradient:
                (tiled,) = torch.autograd.grad(objective.sum(), batch)
                grad = tiled.view(copies, *x_adv.shape).sum(0)
        return logits.detach(), objective.detach().view(copies, -1), grad

    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = super().attack(model, x, y)
        self.last_checks = {"observed_states_per_purification": self._observed_steps}
        return x_adv

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "deviation_weight": self.deviation_weight,
            "deviation": "mean over the backbone's input states of the per-image MSE to the clean input's "
            "purification with the same noise (uniform step weights; advpure's reading of DiffAttack)",
            "reduced_budget": self.n_iter < self.published_steps or self.n_eot < self.published_eot,
        }
