"""PGD with Expectation over Transformation (EOT) for randomized defenses.

Each step averages the gradient of the loss over ``n_eot`` independent forward passes of the
(random) model, batched into one call of n_eot * B images, then takes a steepest-ascent step of
``step_size`` in the threat model's norm and projects back onto the eps-ball and [0, 1].
Restarts attack only the images no earlier restart fooled (checked with one forward pass).
Lee & Kim (ICCV 2023) protocol: 200 steps, EOT 20, step 0.007, Linf eps 8/255 (``pgd_eot_leekim``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advpure.attacks.geometry import GEOMETRIES, clip_to_image
from advpure.attacks.losses import LOSSES
from advpure.config.enums import AttackLoss, Norm

PUBLISHED_STEPS = 200
PUBLISHED_EOT = 20


class PGDEOT:
    """``attack(model, x, y) -> x_adv``; x, x_adv (B, C, H, W) in [0, 1], y (B,) int labels.

    Args:
        eps: radius of the ``norm`` ball, in [0, 1] pixel units.
        norm: ``Linf`` (sign steps) or ``L2`` (normalized-gradient steps).
        n_iter: PGD steps (``None``: 200).
        n_eot: forward passes averaged per gradient (``None``: 20).
        step_size: step length (``None``: 2.5 eps / n_iter, Madry et al.).
        random_start: start from a uniform point of the ball (else from x).
        n_restarts: independent runs; later ones attack only the images not yet fooled.
        loss: ``ce``, ``margin`` or ``dlr`` (maximized).
        seed: seeds the attack's own generator (random starts); the model's randomness is its own.
    """

    name = "pgd_eot"

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
        seed: int = 0,
    ) -> None:
        self.eps = float(eps)
        self.norm = Norm(norm)
        self.n_iter = PUBLISHED_STEPS if n_iter is None else int(n_iter)
        self.n_eot = PUBLISHED_EOT if n_eot is None else int(n_eot)
        self.step_size = 2.5 * self.eps / self.n_iter if step_size is None else float(step_size)
        self.random_start = bool(random_start)
        self.n_restarts = int(n_restarts)
        self.loss = AttackLoss(loss)
        self.seed = int(seed)

    def eot_gradient(self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum over n_eot forward passes of d loss / d x_adv, from one batched call: (B, C, H, W)."""
        batch = x_adv.detach().repeat(self.n_eot, *[1] * (x_adv.ndim - 1)).requires_grad_(True)
        objective = LOSSES[self.loss](model(batch), y.repeat(self.n_eot)).sum()
        (grad,) = torch.autograd.grad(objective, batch)
        return grad.view(self.n_eot, *x_adv.shape).sum(0)

    def run_once(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """One PGD run from a (random) start: the final iterate, within the ball and [0, 1].
        ``generator``: for the random start (``None``: torch's global generator)."""
        geometry = GEOMETRIES[self.norm]
        delta = geometry.start(x, self.eps, generator) if self.random_start else torch.zeros_like(x)
        delta = clip_to_image(x, delta)
        for _ in range(self.n_iter):
            grad = self.eot_gradient(model, x + delta, y)
            delta = geometry.project(delta + self.step_size * geometry.ascent(grad), self.eps)
            delta = clip_to_image(x, delta).detach()
        return (x + delta).detach()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator(device=x.device)
        generator.manual_seed(self.seed)
        x_adv = x.detach().clone()
        remaining = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.n_restarts):
            index = remaining.nonzero().squeeze(1)
            if index.numel() == 0:
                break
            candidate = self.run_once(model, x[index], y[index], generator)
            x_adv[index] = candidate
            with torch.no_grad():
                fooled = model(candidate).argmax(1) != y[index]
            remaining[index[fooled]] = False
        return x_adv

    def settings(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "norm": self.norm.value,
            "eps": self.eps,
            "n_iter": self.n_iter,
            "n_eot": self.n_eot,
            "step_size": self.step_size,
            "random_start": self.random_start,
            "n_restarts": self.n_restarts,
            "loss": self.loss.value,
            "seed": self.seed,
            "reduced_budget": self.n_iter < PUBLISHED_STEPS or self.n_eot < PUBLISHED_EOT,
        }
