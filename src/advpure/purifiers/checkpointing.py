"""Per-step gradient checkpointing for reverse processes.

A checkpointed step runs without recording a graph and keeps only its input state, its noise
and a single autograd node; the backward pass recomputes the step (with the same noise tensor)
and differentiates it. The graph therefore holds O(state) per step instead of every
activation of the network, so activation memory does not grow with the number of steps
(``make bench``: ``benchmarks/grad_memory.py``). Gradients flow to the input state and to every
parameter of ``params`` that requires grad; the step function may itself use autograd
(guidance), which runs under ``torch.enable_grad`` in the recomputation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

StepFn = Callable[[int, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


class _CheckpointedStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, step: StepFn, i: int, z: torch.Tensor | None, x: torch.Tensor, *params: torch.Tensor):
        ctx.step, ctx.i, ctx.has_noise, ctx.n_params = step, i, z is not None, len(params)
        ctx.save_for_backward(x, *params, *([z] if z is not None else []))
        with torch.no_grad():
            return step(i, x, z)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):
        saved = ctx.saved_tensors
        x, params = saved[0], saved[1 : 1 + ctx.n_params]
        z = saved[-1] if ctx.has_noise else None
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            out = ctx.step(ctx.i, x_in, z)
            grads = torch.autograd.grad(out, (x_in, *params), grad_out, allow_unused=True)
        return (None, None, None, *grads)


def checkpointed_step(
    step: StepFn, i: int, x: torch.Tensor, z: torch.Tensor | None, params: Sequence[torch.Tensor] = ()
) -> torch.Tensor:
    """``step(i, x, z)`` whose activations are recomputed in the backward pass.

    Args:
        step: the reverse step, ``(i, x, z) -> x_next`` (same shape as x).
        i: step index.
        x: state (B, C, H, W).
        z: the step's standard-normal noise (replayed as-is in the recomputation) or None.
        params: parameters of ``step`` that need gradients (those with ``requires_grad``).
    """
    return _CheckpointedStep.apply(step, i, z, x, *params)
