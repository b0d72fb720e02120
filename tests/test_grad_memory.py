"""Per-step checkpointing keeps the memory of exact gradients flat in the number of solver steps.

Measured as the growth of the process high-water mark in a fresh process (advpure.profiling.memory),
on the digits UNet with a batch of 32. Plain autograd is measured too, so the test proves the
measurement sees activation memory when it is there.
"""

from __future__ import annotations

import pytest

from advpure.profiling.memory import GradMemoryCase, peak_memory_growth


@pytest.mark.slow  # ~75 s on 2 CPU cores; make bench measures the same growth
def test_full_gradient_memory_at_200_steps_is_within_1_5x_of_20_steps():
    checkpointed_20 = peak_memory_growth(GradMemoryCase(n_steps=20))
    checkpointed_200 = peak_memory_growth(GradMemoryCase(n_steps=200))
    assert checkpointed_200 < 1.5 * checkpointed_20, (checkpointed_20, checkpointed_200)
    plain_20 = peak_memory_growth(GradMemoryCase(n_steps=20, checkpoint_steps=False))
    plain_60 = peak_memory_growth(GradMemoryCase(n_steps=60, checkpoint_steps=False))
    assert plain_60 > 2.0 * plain_20, (plain_20, plain_60)  # without checkpointing memory grows with steps
    assert plain_20 > 3 * checkpointed_20
