"""Gradient modes: how an attack differentiates a purifier, one rule per :class:`GradMode`.

Each rule's ``purify(purifier, x, noise)`` returns the real purification's value (x in [0, 1] ->
[0, 1]); the rules differ only in the backward pass. ``attacks_classifier_only`` tells the
evaluation to hand the attack the bare classifier (``blind``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from advpure.config.enums import GradMode
from advpure.purifiers.noise import NoiseSource
from advpure.purifiers.protocol import Purifier


class ReverseProcess(Protocol):
    """What a rule calls on a purifier (:class:`~advpure.purifiers.base.ReversePurifier` has it):
    the real purification, its adjoint variant and the cheaper surrogate (or None)."""

    surrogate: Callable[[torch.Tensor, NoiseSource], torch.Tensor] | None

    def purify(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor: ...

    def purify_adjoint(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor: ...


PurifyFn = Callable[[ReverseProcess, torch.Tensor, NoiseSource], torch.Tensor]


def _exact(purifier: ReverseProcess, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
    return purifier.purify(x, noise)


def _adjoint(purifier: ReverseProcess, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
    return purifier.purify_adjoint(x, noise)


def _surrogate(purifier: ReverseProcess, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
    """Value of the real purification, gradient of the surrogate's (straight-through).

    The surrogate draws from the same noise source: a seeded source gives it the same
    forward-diffusion draw as the real purification; the global generator, fresh draws.
    """
    with torch.no_grad():
        real = purifier.purify(x, noise)
    approx = purifier.surrogate(x, noise)
    return approx + (real - approx).detach()


def _bpda(purifier: ReverseProcess, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
    """Value of the real purification, gradient of the identity (Athalye et al. 2018)."""
    with torch.no_grad():
        real = purifier.purify(x, noise)
    return x + (real - x).detach()


def _no_graph(purifier: ReverseProcess, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
    """Value only: the attack never differentiates the purifier."""
    with torch.no_grad():
        return purifier.purify(x, noise)


@dataclass(frozen=True)
class GradientRule:
    """How one grad mode purifies, whether its gradient is approximate, and what the attack sees."""

    purify: PurifyFn
    description: str
    approximation: bool
    attacks_classifier_only: bool = False


GRADIENT_RULES: dict[GradMode, GradientRule] = {
    GradMode.full: GradientRule(_exact, "exact autograd through every solver step", False),
    GradMode.adjoint: GradientRule(
        _adjoint, "torchsde stochastic adjoint (approximation: adjoint solve has its own solver error)", True
    ),
    GradMode.surrogate: GradientRule(
        _surrogate, "approximation: gradient of a cheaper surrogate purification (Lee & Kim 2023)", True
    ),
    GradMode.bpda: GradientRule(_bpda, "approximation: BPDA, backward pass as identity", True),
    GradMode.guidance_blind: GradientRule(
        _exact,
        "approximation: exact through the sampler, guidance gradient treated as a constant (as earlier "
        "GDMP/MimicDiffusion evaluations)",
        True,
    ),
    GradMode.blind: GradientRule(
        _no_graph,
        "approximation: blind, the attack differentiates the classifier alone",
        True,
        attacks_classifier_only=True,
    ),
}


def gradient_rule(purifier: Purifier) -> GradientRule:
    """The rule of ``purifier.grad_mode``."""
    return GRADIENT_RULES[purifier.grad_mode]
