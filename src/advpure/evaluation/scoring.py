"""Scoring a randomized defense from per-image prediction draws.

For one image with label y and D purification draws (predictions d_1..d_D):
- single draw: d_1 == y (DiffPure's protocol);
- majority vote over the first K draws: y has strictly more votes than every other class
  (a tie is not a correct vote: conservative);
- worst-of-N: all of the first N draws equal y.
Robust accuracy counts an image when it is correct both clean and after the attack.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from advpure.evaluation.metrics import Accuracy, accuracy


def single_draw(draws: Sequence[int], label: int, k: int) -> bool:
    return draws[0] == label


def majority_vote(draws: Sequence[int], label: int, k: int) -> bool:
    counts = Counter(draws[:k]).most_common()
    top = counts[0][1]
    winners = [cls for cls, c in counts if c == top]
    return winners == [label]


def worst_of_n(draws: Sequence[int], label: int, k: int) -> bool:
    return all(d == label for d in draws[:k])


Scorer = Callable[[Sequence[int], int, int], bool]
SCORERS: dict[str, Scorer] = {"single": single_draw, "majority": majority_vote, "worst": worst_of_n}


def score(
    clean_draws: list[Sequence[int]], adv_draws: list[Sequence[int]], labels: Sequence[int], scorer: str, k: int
) -> tuple[Accuracy, Accuracy]:
    """(clean accuracy, robust accuracy) of one scoring rule over all images."""
    rule = SCORERS[scorer]
    clean = [rule(c, y, k) for c, y in zip(clean_draws, labels, strict=True)]
    robust = [ok and rule(a, y, k) for ok, a, y in zip(clean, adv_draws, labels, strict=True)]
    return accuracy(sum(clean), len(clean)), accuracy(sum(robust), len(robust))
