"""AutoAttack's APGD with its EOT samples computed in one batched call instead of a loop.

pyautoattack's APGD estimates each gradient as the mean over ``eot_iter`` forward-backward passes
of the (random) model, one pass at a time, and keeps the logits and per-example loss of the last
pass for its step-size and best-iterate bookkeeping. It also accepts a *model adapter* in place of
a module (the interface it uses for TensorFlow models: ``predict(x)`` and
``get_logits_loss_grad_{xent,dlr,target}``, each returning logits, per-example loss and input
gradient). :class:`BatchedEOTAdapter` implements that interface over a PyTorch model: one call
repeats the batch ``n_eot`` times (copy k of image b is row ``k * B + b``, the tiling every batched
call in advpure uses), runs the model once on it, and returns the mean gradient over the copies
and the logits and loss of the last copy. With APGD's own ``eot_iter`` set to 1 this is the
same estimator as the loop (the same number of independent draws, averaged the same way); only
which random numbers are drawn differs. A purification of 100 steps is then 100 backbone
calls on n_eot * B images instead of n_eot * 100 calls on B images.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyautoattack.autopgd_base import APGDAttack
from torch import nn
from torch.nn import functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class BatchedEOTAdapter:
    """pyautoattack's model-adapter interface over ``model``, with ``n_eot`` EOT copies per call.

    Args:
        apgd: the attack whose losses (DLR, targeted DLR) the adapter evaluates.
        model: x (B, C, H, W) in [0, 1] -> logits (B, K); each call one random draw per row.
        n_eot: EOT samples per gradient (>= 1).
        chunk: largest number of copies in one call (``None``: all ``n_eot``); the gradient is
            summed over chunks, so memory is bounded by ``chunk * B`` images.
    """

    def __init__(self, apgd: APGDAttack, model: nn.Module, n_eot: int, chunk: int | None = None) -> None:
        if int(n_eot) < 1:
            raise ValueError(f"n_eot must be >= 1, got {n_eot}")
        self.apgd = apgd
        self.model = model
        self.n_eot = int(n_eot)
        self.chunk = self.n_eot if chunk is None else max(1, min(int(chunk), self.n_eot))
        self.calls = 0  # model calls made (for tests and benchmarks)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of one draw, no graph: x (B, C, H, W) -> (B, K)."""
        with torch.no_grad():
            self.calls += 1
            return self.model(x)

    def get_logits_loss_grad_xent(self, x: torch.Tensor, y: torch.Tensor):
        return self.logits_loss_grad(x, y, lambda logits, labels: F.cross_entropy(logits, labels, reduction="none"))

    def get_logits_loss_grad_dlr(self, x: torch.Tensor, y: torch.Tensor):
        return self.logits_loss_grad(x, y, self.apgd.dlr_loss)

    def get_logits_loss_grad_target(self, x: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor):
        """Targeted DLR towards ``y_target`` (APGD-T sets ``apgd.y_target`` to it before the run)."""
        if not torch.equal(y_target, self.apgd.y_target):
            raise ValueError("y_target differs from the attack's own y_target")
        return self.logits_loss_grad(x, y, self.apgd.dlr_loss_targeted)

    def logits_loss_grad(
        self, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Over ``n_eot`` draws of the model at x (B, C, H, W): the last draw's logits (B, K) and
        per-example loss (B,), and the mean over draws of d loss / d x (B, C, H, W).

        ``loss_fn(logits (B, K), y (B,)) -> (B,)`` is applied to each copy's rows separately."""
        batch = x.shape[0]
        grad = torch.zeros_like(x)
        logits = loss = None
        for start in range(0, self.n_eot, self.chunk):
            copies = min(self.chunk, self.n_eot - start)
            tiled = x.detach().repeat(copies, *[1] * (x.ndim - 1)).requires_grad_(True)
            with torch.enable_grad():
                self.calls += 1
                all_logits = self.model(tiled)
                losses = [loss_fn(all_logits[k * batch : (k + 1) * batch], y) for k in range(copies)]
                (tiled_grad,) = torch.autograd.grad(torch.stack(losses).sum(), tiled)
            grad += tiled_grad.view(copies, *x.shape).sum(0)
            logits, loss = all_logits[(copies - 1) * batch :].detach(), losses[-1].detach()
        return logits, loss, grad / self.n_eot


def batch_eot(apgd: APGDAttack, model: nn.Module, n_eot: int, chunk: int | None = None) -> None:
    """Give ``apgd`` ``n_eot`` EOT samples per gradient (in place): drawn in batched calls of at
    most ``chunk`` copies (``None``: all at once), or by APGD's own loop of single calls when
    ``chunk`` or ``n_eot`` is 1."""
    if n_eot == 1 or chunk == 1:
        apgd.model, apgd.is_tf_model, apgd.eot_iter = model, False, int(n_eot)
        return
    apgd.model = BatchedEOTAdapter(apgd, model, n_eot, chunk)
    apgd.is_tf_model = True
    apgd.eot_iter = 1


def eot_samples(apgd: APGDAttack) -> int:
    """EOT samples per gradient of ``apgd``, batched or not."""
    return apgd.model.n_eot if isinstance(apgd.model, BatchedEOTAdapter) else int(apgd.eot_iter)


def eot_description(chunk: int | None, n_eot: int) -> str:
    """How the EOT samples are drawn, for result files."""
    if n_eot == 1 or chunk == 1:
        return "sequential (one model call per sample, pyautoattack's loop)"
    per_call = n_eot if chunk is None else min(chunk, n_eot)
    return f"batched ({per_call} copies per model call)"
