"""Wilson intervals against published values."""

import pytest

from advpure.evaluation.metrics import accuracy, wilson_interval


@pytest.mark.parametrize(
    ("correct", "n", "low", "high"),
    [
        (5, 10, 0.2366, 0.7634),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (81, 263, 0.2553, 0.3662),
    ],
)
def test_wilson_interval_known_values(correct, n, low, high):
    lo, hi = wilson_interval(correct, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


def test_accuracy_record():
    a = accuracy(3, 4)
    assert a.value == 0.75 and a.n == 4 and a.ci_low < 0.75 < a.ci_high
