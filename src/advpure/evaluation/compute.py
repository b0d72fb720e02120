"""What an attack cost, counted in purifications: the unit the strength table matches attacks on.

An attack's cost is dominated by the purifier (a diffusion model run over many steps); the
classifier's passes are negligible next to it. :func:`count_purifications` counts, while an attack
runs, the images the purifier processed in calls that record a graph (a forward that is then
differentiated: forward + backward) and in calls without one (forward only). One forward+backward
is about 3 forwards under per-step checkpointing (benchmarks/NOTES.md), which
:func:`forward_equivalents` uses to put both on one scale.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

BACKWARD_COST = 3.0  # one forward + backward through the purifier, in forwards (benchmarks/NOTES.md)


@contextmanager
def count_purifications(purifier: nn.Module) -> Iterator[dict[str, int]]:
    """Count the images ``purifier`` processes inside the block: ``{"with_graph": n, "forward_only": m}``
    (a call on an input that requires grad, with grad enabled, records a graph)."""
    counts = {"with_graph": 0, "forward_only": 0}

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        x = inputs[0]
        graph = torch.is_grad_enabled() and isinstance(x, torch.Tensor) and x.requires_grad
        counts["with_graph" if graph else "forward_only"] += int(x.shape[0])

    handle = purifier.register_forward_hook(hook)
    try:
        yield counts
    finally:
        handle.remove()


def forward_equivalents(counts: dict[str, int]) -> float:
    """``forward_only + BACKWARD_COST * with_graph``: an attack's cost in purifier forwards."""
    return counts.get("forward_only", 0) + BACKWARD_COST * counts.get("with_graph", 0)
