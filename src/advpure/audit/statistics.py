"""The audit's scoring and tests: majority votes over draws, and exact one-sided tests on images."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy import stats

from advpure.evaluation.scoring import majority_vote


def majority_correct(draws: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) bool: per image, the label strictly out-votes every other class among its draws
    (D, B) ints (the evaluation's majority rule: a tie counts as wrong)."""
    columns = draws.T.tolist()
    return torch.tensor(
        [majority_vote(column, label, len(column)) for column, label in zip(columns, y.tolist(), strict=True)],
        dtype=torch.bool,
        device=draws.device,
    )


def draws_from_records(records: list[dict], column: str) -> torch.Tensor:
    """(D, B) ints from the records' space-separated draw column (``defended_clean_draws`` or
    ``defended_adv_draws``); every record must hold the same number of draws."""
    rows = [[int(v) for v in record[column].split()] for record in records]
    return torch.tensor(rows, dtype=torch.long).T


@dataclass(frozen=True)
class Comparison:
    """Attack B against attack A on the same images: ``b_only`` images only B fooled, ``a_only``
    only A fooled, and the one-sided exact sign test's p-value that B fools more (1.0 when it does
    not fool more)."""

    b_only: int
    a_only: int
    p_value: float

    @property
    def beats(self) -> bool:
        """B fooled more images than A (not necessarily significantly)."""
        return self.b_only > self.a_only

    def as_dict(self) -> dict[str, float | int]:
        return {"only_this_fooled": self.b_only, "only_reference_fooled": self.a_only, "p_value": self.p_value}


def compare_fooled(fooled_a: torch.Tensor, fooled_b: torch.Tensor) -> Comparison:
    """Does B (fooled_b (B,) bool) fool significantly more images than A (fooled_a)? McNemar's
    exact test: among discordant images, binomial(b_only; b_only + a_only, 1/2), one-sided."""
    b_only = int((fooled_b & ~fooled_a).sum())
    a_only = int((fooled_a & ~fooled_b).sum())
    if b_only <= a_only:
        return Comparison(b_only, a_only, 1.0)
    p_value = float(stats.binomtest(b_only, b_only + a_only, 0.5, alternative="greater").pvalue)
    return Comparison(b_only, a_only, p_value)


def more_wrong(wrong_a: int, wrong_b: int, n_draws: int) -> float:
    """One-sided Fisher exact test that a point with ``wrong_a`` of ``n_draws`` misclassifying
    draws is misclassified more often than one with ``wrong_b`` of ``n_draws``: the p-value."""
    table = [[wrong_a, n_draws - wrong_a], [wrong_b, n_draws - wrong_b]]
    return float(stats.fisher_exact(table, alternative="greater")[1])
