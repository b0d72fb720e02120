"""Per-step gradient checkpointing for reverse processes.

A checkpointed call runs without recording a graph and keeps only its input tensors, its noise
and a single autograd node; the backward pass recomputes the call (with the same noise tensors)
and differentiates it. The graph therefore holds O(state) per step instead of every
activation of the network, so activation memory does not grow with the number of steps
(``make bench``: ``benchmarks/grad_memory.py``). Gradients flow to every input tensor and to
every parameter of ``params`` that requires grad. The function may itself use autograd
(guidance): the recomputation runs under ``torch.enable_grad``, so a guided step whose guidance
gradient is built with ``create_graph`` contributes its second-order terms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

StepFn = Callable[[int, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


class _CheckpointedCall(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, fn: Callable[..., torch.Tensor], layout: tuple[int, int, tuple[bool, ...]], *tensors):
        n_inputs, n_params, present = layout
        ctx.fn, ctx.layout = fn, layout
        ctx.save_for_backward(*tensors)
        inputs, constants = tensors[:n_inputs], _constants(tensors[n_inputs + n_params :], present)
        with torch.no_grad():
            return fn(*inputs, *constants)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):
        n_inputs, n_params, present = ctx.layout
        saved = ctx.saved_tensors
        params = saved[n_inputs : n_inputs + n_params]
        constants = _constants(saved[n_inputs + n_params :], present)
        with torch.enable_grad():
            inputs = tuple(t.detach().requires_grad_(True) for t in saved[:n_inputs])
            out = ctx.fn(*inputs, *constants)
            grads = torch.autograd.grad(out, (*inputs, *params), grad_out, allow_unused=True)
        return (None, None, *grads, *[None] * sum(present))


def _constants(stored: Sequence[torch.Tensor], present: tuple[bool, ...]) -> list[torch.Tensor | None]:
    """Re-insert the ``None`` constants between the stored ones."""
    values = iter(stored)
    return [next(values) if here else None for here in present]


def checkpointed_call(
    fn: Callable[..., torch.Tensor],
    inputs: Sequence[torch.Tensor],
    constants: Sequence[torch.Tensor | None] = (),
    params: Sequence[torch.Tensor] = (),
) -> torch.Tensor:
    """``fn(*inputs, *constants)`` whose activations are recomputed in the backward pass.

    Args:
        fn: returns one tensor.
        inputs: tensors that receive gradients (state, guidance reference).
        constants: tensors replayed as-is in the recomputation (noise), or None.
        params: parameters of ``fn`` that need gradients (those with ``requires_grad``).
    """
    present = tuple(c is not None for c in constants)
    layout = (len(inputs), len(params), present)
    stored = [c for c in constants if c is not None]
    return _CheckpointedCall.apply(fn, layout, *inputs, *params, *stored)


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
    return checkpointed_call(lambda state, noise: step(i, state, noise), (x,), (z,), params)
