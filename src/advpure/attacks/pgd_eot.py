"""PGD with Expectation over Transformation (EOT) for randomized defenses.

Each step averages the gradient of the loss over ``n_eot`` independent forward passes of the
(random) model, batched into one call of n_eot * B images, then takes a steepest-ascent step of
``step_size`` in the threat model's norm and projects back onto the eps-ball and [0, 1].
Every iterate (the start, each step, the last one) is judged by the n_eot draws of its call (the
last iterate by one call without gradients): per point the run keeps the iterate with the largest
fraction of misclassifying draws, ties broken by the larger mean loss over the draws (the EOT
objective), not the last iterate. Restarts attack only the images no earlier restart fooled (some
draw misclassified one of their iterates).
Lee & Kim (ICCV 2023) protocol: 200 steps, EOT 20, step 0.007, Linf eps 8/255 (``pgd_eot_leekim``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from typing_extensions import Unpack

from advpure.attacks.base import Candidates, RestartedEOTAttack, RestartedEOTOptions, Run, Trace
from advpure.attacks.geometry import GEOMETRIES, clip_to_image
from advpure.attacks.losses import LOSSES


class PGDOptions(RestartedEOTOptions, total=False):
    """The keywords of :class:`PGDEOT` besides ``eps``; a subclass (DiffAttack) forwards them with
    ``**options: Unpack[PGDOptions]``."""

    step_size: float | None
    random_start: bool


class PGDEOT(RestartedEOTAttack):
    """``attack(model, x, y) -> x_adv``; x, x_adv (B, C, H, W) in [0, 1], y (B,) int labels.

    Args:
        eps: radius of the ``norm`` ball, in [0, 1] pixel units.
        step_size: step length (``None``: 2.5 eps / n_iter, Madry et al.).
        random_start: start from a uniform point of the ball (else from x).

    Keyword options (:class:`~advpure.attacks.base.RestartedEOTOptions`, defaults declared in
    :class:`~advpure.attacks.base.RestartedEOTAttack` and its bases):
        norm: ``Linf`` (sign steps) or ``L2`` (normalized-gradient steps).
        n_iter: PGD steps (``None``: 200).
        n_eot: forward passes averaged per gradient (``None``: 20).
        n_restarts: independent runs; later ones attack only the images not yet fooled.
        loss: ``ce``, ``margin`` or ``dlr`` (maximized).
        seed: seeds the attack's own generator (random starts); the model's randomness is its own.
        eot_chunk: EOT copies per model call (``None``: all n_eot in one call); bounds memory so
            that many copies (DiffBreak's 128) run on a small machine, with the same gradient sum.
    """

    name = "pgd_eot"
    published_steps = 200
    published_eot = 20
    verdict_rule = "robust unless one of the n_eot draws at one of its iterates (start, steps, last) misclassified it"
    selection = (
        "per point, over restarts and iterates: the iterate with the largest fraction of its n_eot draws "
        "misclassifying, ties broken by the larger mean loss over those draws (the EOT objective)"
    )

    def __init__(
        self,
        eps: float,
        *,
        step_size: float | None = None,
        random_start: bool = True,
        **options: Unpack[RestartedEOTOptions],
    ) -> None:
        super().__init__(eps, **options)
        self.step_size = 2.5 * self.eps / self.n_iter if step_size is None else float(step_size)
        self.random_start = bool(random_start)

    def eot_step(
        self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, with_gradient: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """n_eot copies of x_adv (b, C, H, W), in calls of at most ``eot_chunk`` copies (``None``: one
        call): the logits (n_eot * b, K) (copy k of point i at row k * b + i), the per-draw losses
        (n_eot, b) and, if asked, the sum over draws of d loss / d x_adv (b, C, H, W). Chunking
        changes memory, not the estimator: the sum is the same as one big batch's."""
        chunk = self.n_eot if self.eot_chunk is None else max(1, min(int(self.eot_chunk), self.n_eot))
        logits, losses, grad = [], [], None
        for start in range(0, self.n_eot, chunk):
            copies = min(chunk, self.n_eot - start)
            chunk_logits, chunk_losses, chunk_grad = self.eot_chunk_step(model, x_adv, y, copies, with_gradient)
            logits.append(chunk_logits)
            losses.append(chunk_losses)
            if chunk_grad is not None:
                grad = chunk_grad if grad is None else grad + chunk_grad
        return torch.cat(logits), torch.cat(losses), grad

    def eot_chunk_step(
        self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, copies: int, with_gradient: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One batched call on ``copies`` copies of x_adv: logits (copies * b, K), losses (copies, b)
        (the :meth:`objective`), summed gradient (b, C, H, W) or ``None``."""
        with torch.set_grad_enabled(with_gradient):
            batch = x_adv.detach().repeat(copies, *[1] * (x_adv.ndim - 1)).requires_grad_(with_gradient)
            logits, losses = self.objective(model, batch, y.repeat(copies))
            grad = None
            if with_gradient:
                (tiled,) = torch.autograd.grad(losses.sum(), batch)
                grad = tiled.view(copies, *x_adv.shape).sum(0)
        return logits.detach(), losses.detach().view(copies, -1), grad

    def objective(
        self, model: nn.Module, batch: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the attack maximizes, on ``batch`` (copies * b, C, H, W) in [0, 1] (copy k of point i
        at row k * b + i) with ``labels`` (copies * b,): the model's logits (copies * b, K) and the
        per-row objective (copies * b,), here the ``loss`` of those logits. A subclass that
        maximizes something else (DiffAttack) overrides this, not the EOT step around it."""
        logits = model(batch)
        return logits, LOSSES[self.loss](logits, labels)

    def eot_gradient(self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum over n_eot forward passes of d loss / d x_adv, from one batched call: (B, C, H, W)."""
        _, _, grad = self.eot_step(model, x_adv, y)
        return grad if grad is not None else torch.zeros_like(x_adv)

    def run_once(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """One PGD run from a (random) start on x (b, C, H, W): the final iterate, within the ball
        and [0, 1] (adversarial training's PGD; the attack keeps each point's best iterate,
        :meth:`best_run`). ``generator``: for the random start (``None``: torch's global one)."""
        return self._iterate(model, x, y, generator, None, None)

    def best_run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator | None,
        trace: Trace | None = None,
    ) -> Run:
        """One PGD run on x (b, C, H, W), judging every iterate (the last one by an extra call
        without gradients): per point its best iterate, key (fraction of the iterate's n_eot draws
        misclassifying, mean loss over them) and whether a draw misclassified one of its iterates."""
        best = Candidates(x)
        self._iterate(model, x, y, generator, best, trace)
        return Run(best.x_adv, best.fooled, best.key)

    def _iterate(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator | None,
        best: Candidates | None,
        trace: Trace | None,
    ) -> torch.Tensor:
        """The PGD loop; offers every iterate to ``best`` when given. Returns the final iterate."""
        geometry = GEOMETRIES[self.norm]
        delta = geometry.start(x, self.eps, generator) if self.random_start else torch.zeros_like(x)
        delta = clip_to_image(x, delta)
        everyone = torch.arange(x.shape[0], device=x.device)
        for step in range(self.n_iter + (best is not None)):
            attack_step = step < self.n_iter
            logits, losses, grad = self.eot_step(model, x + delta, y, attack_step)
            if best is not None:
                wrong = (logits.argmax(1) != y.repeat(self.n_eot)).view(self.n_eot, -1).float()
                key = torch.stack([wrong.mean(0), losses.mean(0)], dim=1)
                best.offer(everyone, x + delta, key, wrong.amax(0).bool())
            if trace is not None:
                trace.record(logits, y.repeat(self.n_eot))
            if grad is not None:
                delta = geometry.project(delta + self.step_size * geometry.ascent(grad), self.eps)
                delta = clip_to_image(x, delta).detach()
        return (x + delta).detach()

    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        generator = torch.Generator(device=x.device)
        generator.manual_seed(self.seed)
        trace = Trace()
        best = self.best_of_runs(
            x, y, self.n_restarts, lambda xs, ys: self.best_run(model, xs, ys, generator, trace), trace
        )
        self.last_verdict = ~best.fooled
        self.last_trace = trace.data
        self.last_checks = None
        return best.x_adv

    def variant_options(self) -> dict[str, Any]:
        return {
            "step_size": self.step_size,
            "random_start": self.random_start,
            "n_restarts": self.n_restarts,
            "loss": self.loss.value,
            "seed": self.seed,
            "eot_chunk": self.eot_chunk,
        }
