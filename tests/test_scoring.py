"""Scoring a randomized defense (single draw, majority vote with ties wrong, worst of N), budget checks, subsets."""

from __future__ import annotations

import pytest
import torch

from advpure.config.enums import Norm
from advpure.errors import ConfigError
from advpure.evaluation.module import AttackBudgetError, check_budget
from advpure.evaluation.scoring import majority_vote, score, single_draw, worst_of_n
from advpure.evaluation.subsets import select_subset


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


# ------------------------------------------------------------------------------- subsets


def test_default_subset_is_the_first_n_in_test_order():
    assert select_subset([0] * 10, 4) == [0, 1, 2, 3]


def test_seeded_subsets_are_reproducible_disjoint_and_balanced():
    labels = [i % 5 for i in range(100)]  # 5 classes of 20
    first = select_subset(labels, 25, seed=3, index=0, class_balanced=True)
    assert first == select_subset(labels, 25, seed=3, index=0, class_balanced=True)
    assert first != select_subset(labels, 25, seed=4, index=0, class_balanced=True)
    subsets = [select_subset(labels, 25, seed=3, index=k, class_balanced=True) for k in range(4)]
    assert sorted(i for s in subsets for i in s) == list(range(100))  # disjoint, cover the split
    counts = [sum(labels[i] == c for i in first) for c in range(5)]
    assert counts == [5] * 5
    plain = select_subset(labels, 25, seed=3)
    assert len(set(plain)) == 25 and plain != list(range(25))


def test_a_subset_past_the_end_names_the_key():
    with pytest.raises(ConfigError, match=r"task\.subset_index"):
        select_subset([0] * 10, 4, seed=0, index=2)
    with pytest.raises(ConfigError, match=r"task\.n_images"):
        select_subset([0] * 10, 11)
