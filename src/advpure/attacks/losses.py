"""Per-example attack objectives to maximize: logits (B, K), labels (B,) -> (B,)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from advpure.config.enums import AttackLoss


def _best_other(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _best_other(logits, y) - logits.gather(1, y[:, None]).squeeze(1)


def dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-(z_y - max_{j != y} z_j) / (z_(1) - z_(3) + 1e-12), z_(k) the k-th largest logit."""
    top = logits.sort(dim=1, descending=True).values
    return margin(logits, y) / (top[:, 0] - top[:, 2] + 1e-12)


LOSSES: dict[AttackLoss, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    AttackLoss.ce: cross_entropy,
    AttackLoss.margin: margin,
    AttackLoss.dlr: dlr,
}
