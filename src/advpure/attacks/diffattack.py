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
from typing_extensions import Unpack

from advpure.attacks.base import PurifiedModel, Trace
from advpure.attacks.losses import LOSSES
from advpure.attacks.pgd_eot import PGDEOT, PGDOptions
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

    Args (beyond :class:`~advpure.attacks.pgd_eot.PGDEOT`'s, which it takes as keyword options,
    :class:`~advpure.attacks.pgd_eot.PGDOptions`): ``deviation_weight``: the weight of the
    deviated-reconstruction term, >= 0. Published protocol: PGD 100 steps with EOT 20 at
    CIFAR-10's 8/255 (``n_iter``/``n_eot`` null keep them).
    """

    name = "diffattack"
    published_steps = 100
    published_eot = 20

    def __init__(self, eps: float, *, deviation_weight: float = 1.0, **options: Unpack[PGDOptions]) -> None:
        super().__init__(eps, **options)
        self.deviation_weight = float(deviation_weight)
        self._clean: torch.Tensor | None = None
        self._observed_steps = 0

    def _iterate(self, model, x, y, generator, best, trace: Trace | None):  # type: ignore[override]
        self._clean = x.detach()
        try:
            return super()._iterate(model, x, y, generator, best, trace)
        finally:
            self._clean = None

    def objective(
        self, model: nn.Module, batch: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """PGD-EOT's, plus ``deviation_weight`` times each row's deviation from the purification
        of its clean point (``_clean``, b points; ``batch`` holds copies of b points) with the
        same noise; PGD-EOT's alone where the model has no states to observe."""
        if not isinstance(model, PurifiedModel) or self._clean is None or not backbones(model.purifier):
            self._observed_steps = 0
            return super().objective(model, batch, labels)
        purifier, classifier = model.purifier, model.classifier
        clean = self._clean.repeat(batch.shape[0] // self._clean.shape[0], *[1] * (batch.ndim - 1))
        tape = NoiseTape()
        with torch.no_grad(), observed_states(purifier) as reference:
            purifier(clean, tape)
        reference = [state.detach() for state in reference]
        with observed_states(purifier) as states:
            purified = purifier(batch, tape.replay())
        self._observed_steps = len(states)
        logits = classifier(purified)
        objective = LOSSES[self.loss](logits, labels)
        if states and len(states) == len(reference):
            deviation = torch.stack(
                [(s.float() - r.float()).flatten(1).pow(2).mean(1) for s, r in zip(states, reference, strict=True)]
            ).mean(0)
            objective = objective + self.deviation_weight * deviation
        return logits, objective

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
        }
