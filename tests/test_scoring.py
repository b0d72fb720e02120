"""Scoring a randomized defense: single draw, majority vote (ties are wrong), worst of N; budget checks."""

from __future__ import annotations

import pytest
import torch

from advpure.config.enums import Norm
from advpure.evaluation.module import AttackBudgetError, check_budget
from advpure.evaluation.scoring import majority_vote, score, single_draw, worst_of_n


def test_rules_on_hand_made_draws():
    assert single_draw([3, 1, 1], 3, 3) and not single_draw([1, 3, 3], 3, 3)
    assert majority_vote([1, 3, 3], 3, 3) and not majority_vote([1, 3, 3, 1], 3, 4)  # a tie is not a win
    assert majority_vote([1, 3, 3, 1], 3, 3)  # only the first k draws vote
    assert not majority_vote([2, 2, 3], 3, 3)
    assert worst_of_n([3, 3, 1], 3, 2) and not worst_of_n([3, 3, 1], 3, 3)


def test_robust_needs_clean_and_adversarial_and_rules_are_ordered():
    labels = [0, 1, 2, 3]
    clean = [[0, 0, 0], [1, 2, 1], [2, 2, 2], [0, 3, 3]]
    adv = [[0, 5, 0], [1, 1, 1], [9, 9, 9], [3, 3, 3]]
    results = {rule: score(clean, adv, labels, rule, 3) for rule in ("single", "majority", "worst")}
    assert [results[r][0].correct for r in ("single", "majority", "worst")] == [3, 4, 2]
    assert [results[r][1].correct for r in ("single", "majority", "worst")] == [2, 3, 0]
    for clean_acc, robust_acc in results.values():
        assert robust_acc.correct <= clean_acc.correct and robust_acc.n == 4
    # worst-of-N never exceeds the single draw (draw 0 is one of the N)
    assert results["worst"][1].correct <= results["single"][1].correct


class _Attack:
    eps = 0.1
    norm = Norm.Linf


def test_budget_violations_are_errors_not_numbers():
    x = torch.full((2, 1, 4, 4), 0.5)
    check_budget(_Attack(), x, x + 0.1, "defended")  # on the sphere: fine
    with pytest.raises(AttackBudgetError, match="eps-ball"):
        check_budget(_Attack(), x, x + 0.11, "defended")
    with pytest.raises(AttackBudgetError, match=r"\[0, 1\]"):
        check_budget(_Attack(), torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), -0.05), "undefended")
