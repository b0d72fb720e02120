"""Finding NaN and Inf in one evaluation batch, per example, wherever they appear.

:class:`NonFiniteWatch` checks the purifier's output, the classifier's logits and the gradient
each of them passes back while an attack runs (forward hooks, and tensor hooks on their inputs),
the attack's output, and the purifications and logits the scoring uses. A non-finite row is
traced back to its example in the batch: rows of a call over ``k * B`` images are copies
``r % B`` (the tiling every batched EOT and ``purify_copies`` call uses); rows of a call over a
subset (an attack running only on still-robust images) go to the clean image nearest in Linf.
Each finding is kept per *category*: which prediction it makes untrustworthy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

# Which predictions a finding invalidates: the undefended or defended model, on clean or adversarial images.
CATEGORIES = ("undefended_clean", "undefended_adv", "defended_clean", "defended_adv")


class NonFiniteWatch:
    """Non-finite findings of one batch ``x`` (B, C, H, W) with dataset indices ``index``.

    ``events``: one dict per place (``stage``) with the ``batch`` id, the dataset ``indices`` and
    in-batch ``positions`` of the affected examples.
    """

    def __init__(self, x: torch.Tensor, index: torch.Tensor, batch_id: int) -> None:
        self.x = x.detach()
        self.index = [int(i) for i in index.tolist()]
        self.batch_id = int(batch_id)
        self._found: dict[str, tuple[str, set[int]]] = {}

    # ---------------------------------------------------------------- checks

    def rows(self, stage: str, values: torch.Tensor, category: str, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Record the examples whose rows of ``values`` (N, ...) hold NaN or Inf; returns a (B,)
        bool mask of the affected examples. ``inputs``: the (N, C, H, W) images the rows came
        from, to place rows of a subset call."""
        values = values.detach()
        flat = values.reshape(values.shape[0], -1) if values.ndim else values.reshape(1, 1)
        bad = ~torch.isfinite(flat).all(dim=1)
        mask = torch.zeros(self.x.shape[0], dtype=torch.bool)
        if not bool(bad.any()):
            return mask
        positions = self._locate(bad.nonzero().flatten().cpu(), flat.shape[0], inputs)
        mask[positions] = True
        _, found = self._found.setdefault(stage, (category, set()))
        found.update(int(p) for p in positions)
        return mask

    def predictions(self, stage: str, logits: torch.Tensor, category: str) -> torch.Tensor:
        """``logits.argmax(1)``, after recording rows with NaN or Inf (their prediction is set to -1
        by the caller through :meth:`invalid_examples`)."""
        self.rows(stage, logits, category)
        return logits.nan_to_num(0.0, 0.0, 0.0).argmax(1)

    @contextmanager
    def attack(self, model: str, purifier: nn.Module, classifier: nn.Module) -> Iterator[None]:
        """While an attack on ``model`` ("undefended" / "defended") runs: check every purifier
        output and classifier logit, and every gradient they pass back to their input."""
        category = f"{model}_adv"

        def forward_hook(part: str, output_name: str) -> Any:
            def hook(_module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
                inputs = args[0] if args and isinstance(args[0], torch.Tensor) else None
                held = inputs.detach() if inputs is not None else None
                if isinstance(output, torch.Tensor):
                    self.rows(f"{model} attack: {part} {output_name}", output, category, held)
                if inputs is not None and inputs.requires_grad and torch.is_grad_enabled():
                    stage = f"{model} attack: gradient at the {part} input"

                    def check_gradient(grad: torch.Tensor, stage: str = stage, held: Any = held) -> None:
                        self.rows(stage, grad, category, held)

                    inputs.register_hook(check_gradient)

            return hook

        handles = [
            purifier.register_forward_hook(forward_hook("purifier", "output")),
            classifier.register_forward_hook(forward_hook("classifier", "logits")),
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    # ---------------------------------------------------------------- results

    @property
    def events(self) -> list[dict[str, Any]]:
        """One dict per stage with findings: ``stage``, ``batch``, dataset ``indices``, ``positions``."""
        return [
            {
                "stage": stage,
                "batch": self.batch_id,
                "indices": [self.index[p] for p in sorted(found)],
                "positions": sorted(found),
            }
            for stage, (_, found) in self._found.items()
        ]

    def invalid_examples(self) -> dict[str, torch.Tensor]:
        """Per category, a (B,) bool mask of the examples whose prediction cannot be trusted."""
        masks = {category: torch.zeros(self.x.shape[0], dtype=torch.bool) for category in CATEGORIES}
        for category, found in self._found.values():
            masks[category][sorted(found)] = True
        return masks

    def column(self) -> list[str]:
        """Per example, the stages that found NaN or Inf in it ("" when none)."""
        stages: list[list[str]] = [[] for _ in self.index]
        for stage, (_, found) in self._found.items():
            for position in found:
                stages[position].append(stage)
        return ["; ".join(sorted(s)) for s in stages]

    def describe(self) -> str:
        """The error message: batch, dataset indices and stage of every finding, and the fixes."""
        where = "; ".join(f"{e['stage']} at dataset indices {e['indices']}" for e in self.events)
        return (
            f"non-finite values (NaN or Inf) in evaluation batch {self.batch_id}: {where}. No result was written "
            "for this batch. Fix: find the cause (a diverging solver step: lower purifier.dt or purifier.t_star; "
            "a half-precision backbone: diffusion.precision=fp32), or set task.on_nonfinite=skip to record these "
            "examples as not robust (never counted correct) and go on"
        )

    # ---------------------------------------------------------------- placement

    def _locate(self, bad_rows: torch.Tensor, n_rows: int, inputs: torch.Tensor | None) -> list[int]:
        batch = self.x.shape[0]
        if n_rows % batch == 0:
            return sorted({int(r) % batch for r in bad_rows})
        if inputs is not None and inputs.shape[1:] == self.x.shape[1:]:
            rows = inputs[bad_rows.to(inputs.device)].flatten(1).nan_to_num(0.0, 0.0, 0.0).to(self.x.device)
            distance = (rows[:, None, :] - self.x.flatten(1)[None, :, :]).abs().amax(dim=2)
            return sorted({int(p) for p in distance.argmin(dim=1)})
        return list(range(batch))  # cannot place the rows: every example of the batch is suspect
