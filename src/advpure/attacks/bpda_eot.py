"""BPDA+EOT: DiffPure's published protocol (Nie et al. 2022), after Hill et al. (2021).

The protocol is DiffPure's ``bpda_eot/bpda_eot_attack.py`` (github.com/NVlabs/DiffPure), itself
Hill et al.'s ``bpda_eot_attack.py`` (github.com/point0bar1/ebm-defense), as configured there:
50 Linf sign steps of 2/255 from x (no random start), each step's gradient from 15 purifications
(one batched call), a defense check of 150 purifications, projection to the eps-ball and [0, 1].
The BPDA part (backward pass as identity) is the purifier's ``grad_mode=bpda``, not this class.

Both averages are of logits, as in the reference (``eot_attack_ave='logits'``,
``eot_defense_ave='logits'``):
- attack loss: cross-entropy of the mean of the ``n_eot`` draws' logits;
- defense prediction: argmax of the mean of ``n_defense_reps`` draws' logits.

Checks, one per iterate x_0 = x, ..., x_n_iter: the batched ``n_eot`` draws that give the step's
gradient also give a cheap prediction (mean logits of the ``n_eot`` draws); only an image that
this prediction misclassifies gets the full check of ``n_defense_reps`` draws, and it is broken
if that check misclassifies it too (the reference's ``eot_defense_verification``). A broken image
stays broken: it is neither attacked nor checked again, and returns the iterate at which it broke
(the clean image when it broke at x itself, step 0). An image never broken returns its iterate of
highest attack loss (cross-entropy of the n_eot draws' mean logits, computed for every iterate
by the call that gives its gradient or, for the last, its gate), never the clean image unless no
step moved it: the reference returns the last iterate, which is scored again afterwards on fresh
purifications however far the loss fell. The reference checks x twice (a baseline pass, then
step 0); here x is checked once.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import Unpack

from advpure.attacks.base import BudgetedAttack, BudgetOptions, Candidates, Run, Trace
from advpure.config.enums import Norm
from advpure.errors import ConfigError

PUBLISHED_DEFENSE_REPS = 150
PUBLISHED_STEP_SIZE = 2 / 255


class BPDAEOT(BudgetedAttack):
    """``attack(model, x, y) -> x_adv``; x, x_adv (B, C, H, W) in [0, 1], y (B,) int labels.

    After each call ``last_verdict`` (B,) bool is True where the protocol counts the image as
    defended (correctly classified at every check): the protocol's own robust accuracy.

    Args:
        eps: Linf radius, in [0, 1] pixel units.
        n_defense_reps: purifications per defense check (``None``: 150).
        step_size: Linf step (``None``: 2/255).
        defense_chunk: purifications per image in one forward call of a defense check
            (``None``: as many as keep a call within n_eot * B images, the size of the
            gradient step's call on the batch, which the batch size already fits in memory).

    Keyword options (:class:`~advpure.attacks.base.BudgetOptions`, defaults declared in
    :class:`~advpure.attacks.base.BudgetedAttack` and :class:`~advpure.attacks.base.Attack`):
        norm: ``Linf`` only (the protocol is Linf).
        n_iter: sign steps (``None``: 50).
        n_eot: purifications per gradient (``None``: 15).
    """

    name = "bpda_eot"
    published_steps = 50
    published_eot = 15
    verdict_rule = (
        "robust unless a defense check (argmax of the mean logits of n_defense_reps draws) misclassified one of "
        "its iterates; checked only where the mean logits of the step's n_eot draws misclassified it"
    )
    selection = (
        "per point: the iterate at which it broke; else the iterate with the highest cross-entropy of the mean "
        "logits of its n_eot draws (the attack loss)"
    )

    def __init__(
        self,
        eps: float,
        *,
        n_defense_reps: int | None = None,
        step_size: float | None = None,
        defense_chunk: int | None = None,
        **options: Unpack[BudgetOptions],
    ) -> None:
        super().__init__(eps, **options)
        if self.norm != Norm.Linf:
            raise ConfigError("attack.norm", "BPDA+EOT is a Linf protocol", "use attack.norm=Linf, or attack=pgd_eot")
        self.n_defense_reps = PUBLISHED_DEFENSE_REPS if n_defense_reps is None else int(n_defense_reps)
        self.step_size = PUBLISHED_STEP_SIZE if step_size is None else float(step_size)
        self.defense_chunk = None if defense_chunk is None else int(defense_chunk)

    def reduced_budget(self) -> bool:
        """Also below the published budget with fewer draws per defense check."""
        return super().reduced_budget() or self.n_defense_reps < PUBLISHED_DEFENSE_REPS

    def eot_logits_and_gradient(
        self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, with_gradient: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean logits (B, K) of ``n_eot`` draws (one call on n_eot * B images) and, if asked,
        the gradient (B, C, H, W) of the cross-entropy of those mean logits."""
        with torch.set_grad_enabled(with_gradient):
            x_in = x_adv.detach().requires_grad_(with_gradient)
            batch = x_in.repeat(self.n_eot, *[1] * (x_adv.ndim - 1))
            mean_logits = model(batch).view(self.n_eot, x_adv.shape[0], -1).mean(0)
            if not with_gradient:
                return mean_logits, None
            (grad,) = torch.autograd.grad(F.cross_entropy(mean_logits, y, reduction="sum"), x_in)
        return mean_logits.detach(), grad

    @torch.no_grad()
    def defense_prediction(self, model: nn.Module, x: torch.Tensor, max_call: int | None = None) -> torch.Tensor:
        """The defense's label (B,): argmax of the mean logits of ``n_defense_reps`` draws, in
        calls of ``defense_chunk`` draws per image (``None``: calls of at most ``max_call``
        images; ``max_call=None``: all draws in one call)."""
        if self.defense_chunk is not None:
            chunk = self.defense_chunk
        else:
            chunk = self.n_defense_reps if max_call is None else max(1, max_call // x.shape[0])
        total = None
        for start in range(0, self.n_defense_reps, chunk):
            reps = min(chunk, self.n_defense_reps - start)
            logits = model(x.repeat(reps, *[1] * (x.ndim - 1))).view(reps, x.shape[0], -1).sum(0)
            total = logits if total is None else total + logits
        return (total / self.n_defense_reps).argmax(1)

    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        trace = Trace()
        best = self.best_of_runs(x, y, 1, lambda xs, ys: self.run_once(model, xs, ys, trace), trace)
        self.last_verdict = ~best.fooled
        self.last_trace = trace.data
        self.last_checks = None
        return best.x_adv

    def run_once(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, trace: Trace | None = None) -> Run:
        """The protocol on x (b, C, H, W): per point the iterate at which it broke, else its
        highest-loss iterate; key (broken, loss); fooled = broken."""
        x_adv = x.clone()
        best = Candidates(x)
        defended = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for step in range(self.n_iter + 1):
            active = defended.nonzero().squeeze(1)
            if active.numel() == 0:
                break
            attack_step = step < self.n_iter
            mean_logits, grad = self.eot_logits_and_gradient(model, x_adv[active], y[active], attack_step)
            suspects = active[mean_logits.argmax(1) != y[active]]
            if suspects.numel() > 0:
                predicted = self.defense_prediction(model, x_adv[suspects], max_call=self.n_eot * x.shape[0])
                defended[suspects] = predicted == y[suspects]
            broken = ~defended[active]
            loss = F.cross_entropy(mean_logits, y[active], reduction="none")
            best.offer(active, x_adv[active], torch.stack([broken.float(), loss], dim=1), broken)
            if trace is not None:
                trace.record(mean_logits, y[active])
            if attack_step:
                still = defended[active]
                index = active[still]
                stepped = x_adv[index] + self.step_size * grad[still].sign()
                delta = (stepped - x[index]).clamp(-self.eps, self.eps)
                x_adv[index] = (x[index] + delta).clamp(0.0, 1.0)
        return Run(best.x_adv, best.fooled, best.key)

    def variant_options(self) -> dict[str, Any]:
        return {
            "n_defense_reps": self.n_defense_reps,
            "step_size": self.step_size,
            "defense_chunk": self.defense_chunk,
            "average": "logits",
            # the reference's gate: the full check runs only where the n_eot draws misclassify
            "gated_checks": True,
        }
