"""DiffHammer (Wang et al., NeurIPS 2024): a selective attack on randomized purification with
gradient grafting, scored by N-evaluation.

Per iteration, for each image:

1. **N-evaluation.** ``n_eot`` fresh purifications of the current point (one batched call, no
   graph), each classified: per draw the loss, whether it is fooled, and the loss's gradient with
   respect to that draw's *purified image* (output space: a classifier backward only).
2. **Selective aggregation (EM).** The draws do not agree (the "gradient dilemma": averaging them
   cancels the directions that fool some draws). Start from the draw whose unit direction raises the
   predicted loss of the most draws, sum_b elu(loss_b + eps <unit(g_a), g_b>); then ``em_steps``
   rounds of: weight each draw by sigmoid(``em_lam`` (loss_j + eps <unit(r), g_j>)) (the draws a
   step along r would push furthest: the vulnerable ones), and set r to the weighted mean of the
   g_j. ``unit`` is the norm's steepest-ascent direction (sign for Linf).
3. **Gradient grafting.** r is sent backward once, through the stored trajectory of each image's
   selected draw (its noise replayed from the tape of step 1), under the purifier's grad mode:
   one purifier backward per iteration instead of ``n_eot`` for full EOT.
4. An APGD step (momentum 0.75, step 2 eps halved at APGD's checkpoints when the mean loss
   stalls), with the grafted gradient averaged with the previous one by weight (i + 1)^-``em_alpha``.

Restarts use the losses in ``losses`` in turn (the published CW, CE, DLR) and attack only the
images whose best point fools at most ``restart_below`` of the draws. Each image returns its most
adversarial point over all iterates: most draws fooled (N-evaluation), ties broken by the mean
loss. Published defaults: N = 10, 5 EM steps, 3 restarts x 50 APGD iterations. ``em_lam`` and
``em_alpha`` are set in the authors' config, not in their attacker code; advpure's values are
named in ``settings()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import Unpack

from advpure.attacks.base import (
    BudgetedAttack,
    BudgetOptions,
    Candidates,
    PurifiedModel,
    Trace,
    broadcast,
    lexicographic_greater,
)
from advpure.attacks.geometry import GEOMETRIES, clip_to_image
from advpure.attacks.losses import LOSSES, margin
from advpure.config.enums import AttackLoss, Norm
from advpure.purifiers.noise import NoiseTape, RecordedNoise

PUBLISHED_RESTARTS = 3
PUBLISHED_LOSSES = (AttackLoss.margin, AttackLoss.ce, AttackLoss.dlr)
APGD_CHECKPOINTS = (0.0, 0.22, 0.41, 0.57, 0.7, 0.8, 0.87, 0.93)


@dataclass
class DrawEvaluation:
    """``n_eot`` purifications of a batch: ``loss``, ``fooled``, ``margin`` (N, B); ``grads`` (N, B, D) the
    loss gradients in output space; ``tape`` the noise of the batched call (rows k * B + b)."""

    loss: torch.Tensor
    fooled: torch.Tensor
    margin: torch.Tensor
    grads: torch.Tensor
    tape: NoiseTape

    def key(self) -> torch.Tensor:
        """(B, 2): (fraction of draws fooled, mean CW margin), higher is more adversarial."""
        return torch.stack([self.fooled.float().mean(0), self.margin.mean(0)], dim=1)


class DiffHammer(BudgetedAttack):
    """``attack(model, x, y) -> x_adv``; x, x_adv (B, C, H, W) in [0, 1], y (B,) int labels.

    Args:
        eps: radius of the ``norm`` ball, in [0, 1] pixel units.
        seed: seeds torch's global generator at the start of each call (random starts and the
            purifications' noise follow from it).
        n_restarts: restarts, restart r using ``losses[r % len(losses)]`` (``None``: 3).
        losses: the restarts' objectives (default CW margin, CE, DLR).
        restart_below: later restarts attack the points whose best iterate fools at most this
            fraction of the draws.
        em_steps: EM rounds per aggregation (5).
        em_lam: the EM weights' temperature: weight sigmoid(em_lam * predicted loss).
        em_alpha: the grafted gradient of iteration i is averaged with the previous one by
            weight (i + 1)^-em_alpha.

    Keyword options (:class:`~advpure.attacks.base.BudgetOptions`, defaults declared in
    :class:`~advpure.attacks.base.BudgetedAttack` and :class:`~advpure.attacks.base.Attack`):
        norm: ``Linf`` or ``L2``.
        n_iter: APGD iterations per restart (``None``: 50).
        n_eot: purifications per N-evaluation (``None``: 10).

    A model that is not a :class:`PurifiedModel` (``grad_mode=blind`` hands the bare classifier)
    is attacked as a classifier behind the identity purification.
    """

    name = "diffhammer"
    published_steps = 50
    published_eot = 10
    verdict_rule = "robust when no draw of its own N-evaluation of the returned point is fooled"
    selection = (
        "per point, the iterate of any restart fooling the most of its n_eot N-evaluation draws, "
        "ties broken by the mean CW margin over those draws"
    )

    def __init__(
        self,
        eps: float,
        *,
        seed: int = 0,
        n_restarts: int | None = None,
        losses: list[AttackLoss] | tuple[AttackLoss, ...] = PUBLISHED_LOSSES,
        restart_below: float = 0.5,
        em_steps: int = 5,
        em_lam: float = 1.0,
        em_alpha: float = 0.5,
        **options: Unpack[BudgetOptions],
    ) -> None:
        super().__init__(eps, **options)
        self.seed = int(seed)
        self.n_restarts = PUBLISHED_RESTARTS if n_restarts is None else int(n_restarts)
        self.losses = tuple(AttackLoss(loss) for loss in losses)
        self.restart_below = float(restart_below)
        self.em_steps = int(em_steps)
        self.em_lam = float(em_lam)
        self.em_alpha = float(em_alpha)
        self.geometry = GEOMETRIES[self.norm]
        self.trace = Trace()

    def reduced_budget(self) -> bool:
        """Also below the published budget with fewer restarts."""
        return super().reduced_budget() or self.n_restarts < PUBLISHED_RESTARTS

    # -- the pieces -------------------------------------------------------------------------
    @staticmethod
    def split(model: nn.Module) -> tuple[nn.Module, nn.Module]:
        """(purifier, classifier) of ``model``; the identity purification for a bare classifier."""
        if isinstance(model, PurifiedModel):
            return model.purifier, model.classifier
        from advpure.purifiers.identity import IdentityPurifier

        return IdentityPurifier(), model

    def evaluate_draws(
        self, purifier: nn.Module, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: AttackLoss
    ) -> DrawEvaluation:
        """The N-evaluation of x (B, C, H, W): one batched purification of ``n_eot`` copies (no
        graph), classified and differentiated in output space; one trace entry."""
        tape = NoiseTape()
        with torch.no_grad():
            purified = purifier.purify_copies(x.detach(), self.n_eot, tape)  # (N, B, C, H, W)
        flat = purified.flatten(0, 1).detach().requires_grad_(True)
        n, b = self.n_eot, x.shape[0]
        labels = y.repeat(n)
        with torch.enable_grad():
            logits = classifier(flat)
            losses = LOSSES[loss](logits, labels)
            (grads,) = torch.autograd.grad(losses.sum(), flat)
        self.trace.record(logits, labels)
        return DrawEvaluation(
            loss=losses.detach().view(n, b),
            fooled=(logits.argmax(1) != labels).view(n, b),
            margin=margin(logits.detach(), labels).view(n, b),
            grads=grads.view(n, b, -1),
            tape=tape,
        )

    def _unit(self, g: torch.Tensor) -> torch.Tensor:
        """The steepest-ascent direction of each (..., D) vector in the threat model's norm."""
        if self.norm == Norm.Linf:
            return g.sign()
        return g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def aggregate(self, evaluation: DrawEvaluation) -> tuple[torch.Tensor, torch.Tensor]:
        """EM aggregation: ``(r, selected)``: r (B, D) the output-space direction, ``selected`` (B,)
        the draw whose trajectory the gradient is grafted onto."""
        grads, loss = evaluation.grads, evaluation.loss  # (N, B, D), (N, B)
        # delta[a, c, b]: predicted loss change of draw c after a step along draw a's direction.
        delta = torch.einsum("abd,cbd->acb", self._unit(grads), grads)
        predicted = F.elu(loss.unsqueeze(0) + self.eps * delta).sum(1)  # (N, B)
        selected = predicted.argmax(0)  # (B,)
        r = grads[selected, torch.arange(grads.shape[1], device=grads.device)]  # (B, D)
        for _ in range(self.em_steps):
            expected = loss + self.eps * (self._unit(r).unsqueeze(0) * grads).sum(-1)  # (N, B)
            weights = torch.sigmoid(self.em_lam * expected).unsqueeze(-1)  # (N, B, 1)
            r = (weights * grads).sum(0) / weights.sum(0).clamp_min(1e-12)
        return r, selected

    def graft(
        self,
        purifier: nn.Module,
        x_adv: torch.Tensor,
        r: torch.Tensor,
        evaluation: DrawEvaluation,
        selected: torch.Tensor,
    ) -> torch.Tensor:
        """d <r, purifier(x_adv)> / d x_adv through each point's selected stored trajectory (its
        recorded noise replayed), under the purifier's grad mode: one backward pass of B images.
        (B, C, H, W). A purification that drew a Brownian path over the batch (``solver=torchsde``,
        ``grad_mode=adjoint``) cannot be replayed by row: the whole batch of copies is replayed and r
        sent back through the selected rows, exact but at full EOT's cost."""
        batch = x_adv.shape[0]
        point = x_adv.detach().requires_grad_(True)
        columns = torch.arange(batch, device=selected.device)
        if not evaluation.tape.by_row:
            # The purification drew a Brownian path over the whole batch of copies (torchsde solver,
            # adjoint): replay the batch whole and send r back through the selected rows only.
            with torch.enable_grad():
                purified = purifier.purify_copies(point, self.n_eot, evaluation.tape.replay())  # (N, B, ...)
                direction = torch.zeros_like(purified)
                direction[selected, columns] = r.view(batch, *purified.shape[2:]).to(purified.dtype)
                (grad,) = torch.autograd.grad(purified, point, grad_outputs=direction)
            return grad
        rows = selected * batch + columns
        replay = RecordedNoise({key: draw[rows] for key, draw in evaluation.tape.draws.items()})
        with torch.enable_grad():
            purified = purifier(point, replay)
            (grad,) = torch.autograd.grad(purified, point, grad_outputs=r.view_as(purified))
        return grad

    # -- the attack -------------------------------------------------------------------------
    def run_restart(
        self, purifier: nn.Module, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: AttackLoss
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One APGD run from a random start on ``loss``: ``(best iterate (b, C, H, W), its key (b, 2))``
        (:meth:`DrawEvaluation.key`)."""
        delta = clip_to_image(x, self.geometry.start(x, self.eps, None))
        x_adv = (x + delta).detach()
        evaluation = self.evaluate_draws(purifier, classifier, x_adv, y, loss)
        best_x, best_key = x_adv.clone(), evaluation.key()
        step = torch.full((x.shape[0], *[1] * (x.ndim - 1)), 2.0 * self.eps, device=x.device)
        step_last = step.clone()
        x_prev, grad_prev = x_adv.clone(), None
        mean_losses = [evaluation.loss.mean(0)]
        checkpoints = sorted({int(f * self.n_iter) for f in APGD_CHECKPOINTS})
        last_checkpoint = 0
        for i in range(self.n_iter):
            r, selected = self.aggregate(evaluation)
            grad = self.graft(purifier, x_adv, r, evaluation, selected)
            if grad_prev is not None:
                v = (i + 1) ** -self.em_alpha
                grad = v * grad + (1 - v) * grad_prev
            grad_prev = grad
            z = self._project(x, x_adv + step * self.geometry.ascent(grad))
            momentum = 0.75 if i else 1.0
            x_next = self._project(x, x_adv + momentum * (z - x_adv) + (1 - momentum) * (x_adv - x_prev))
            x_prev, x_adv = x_adv, x_next
            evaluation = self.evaluate_draws(purifier, classifier, x_adv, y, loss)
            key = evaluation.key()
            better = lexicographic_greater(key, best_key)
            best_x[better], best_key[better] = x_adv[better], key[better]
            mean_losses.append(evaluation.loss.mean(0))
            if i + 1 in checkpoints[1:]:
                history = torch.stack(mean_losses)  # (i + 2, b)
                increases = (history[last_checkpoint + 1 : i + 2] > history[last_checkpoint : i + 1]).sum(0)
                stalled = increases < 0.75 * (i + 1 - last_checkpoint)
                unchanged = (step.flatten() == step_last.flatten()) & (history[i + 1] <= history[last_checkpoint])
                halve = broadcast(stalled | unchanged, step)
                step_last = step.clone()
                step = torch.where(halve, step / 2, step)
                last_checkpoint = i + 1
                if bool(halve.any()):  # APGD restarts the halved points from their best iterate
                    x_adv = torch.where(halve, best_x, x_adv)
                    x_prev = torch.where(halve, best_x, x_prev)
                    evaluation = self.evaluate_draws(purifier, classifier, x_adv, y, loss)
        return best_x, best_key

    def _project(self, x: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
        delta = self.geometry.project(point - x, self.eps)
        return (x + clip_to_image(x, delta)).detach()

    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        purifier, classifier = self.split(model)
        x = x.detach().float()
        torch.random.manual_seed(self.seed)
        self.trace = Trace()
        best = Candidates(x)
        for restart in range(self.n_restarts):
            todo = (best.key[:, 0] <= self.restart_below).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            loss = self.losses[restart % len(self.losses)]
            self.trace.start(f"restart {restart} ({loss.value})")
            point, key = self.run_restart(purifier, classifier, x[todo], y[todo], loss)
            best.offer(todo, point, key, key[:, 0] > 0)
        self.last_verdict = best.key[:, 0] <= 0.0
        self.last_checks = {"fooled_fraction": [round(v, 4) for v in best.key[:, 0].tolist()]}
        self.last_trace = self.trace.data
        return best.x_adv

    def variant_options(self) -> dict[str, Any]:
        return {
            "n_restarts": self.n_restarts,
            "losses": [loss.value for loss in self.losses],
            "em_steps": self.em_steps,
            "em_lam": self.em_lam,
            "em_alpha": self.em_alpha,
            "restart_below": self.restart_below,
            "seed": self.seed,
            "gradient": "grafted: the EM-aggregated output-space gradient of n_eot purifications, sent back "
            "once through each point's selected stored trajectory (the purifier's grad mode; a trajectory "
            "on a Brownian path, solver=torchsde or adjoint, is replayed with its whole batch of copies)",
        }
