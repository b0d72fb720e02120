"""Per-step checkpointing keeps the memory of exact gradients flat in the number of solver steps.

Measured as the growth of the process high-water mark in a fresh process (advpure.profiling.memory),
on the digits UNet with a batch of 32; on a GPU, as CUDA's allocator peak on the CIFAR-10 UNet.
Plain autograd is measured too, so each test proves its measurement sees activation memory when
it is there.
"""

from __future__ import annotations

import pytest
import torch

from advpure.profiling.memory import GradMemoryCase, peak_memory_growth
from advpure.purifiers.diffpure import DiffPure
from advpure.purifiers.noise import SeededNoise


@pytest.mark.slow  # ~75 s on 2 CPU cores; make bench measures the same growth
def test_full_gradient_memory_at_200_steps_is_within_1_5x_of_20_steps():
    checkpointed_20 = peak_memory_growth(GradMemoryCase(n_steps=20))
    checkpointed_200 = peak_memory_growth(GradMemoryCase(n_steps=200))
    assert checkpointed_200 < 1.5 * checkpointed_20, (checkpointed_20, checkpointed_200)
    plain_20 = peak_memory_growth(GradMemoryCase(n_steps=20, checkpoint_steps=False))
    plain_60 = peak_memory_growth(GradMemoryCase(n_steps=60, checkpoint_steps=False))
    assert plain_60 > 2.0 * plain_20, (plain_20, plain_60)  # without checkpointing memory grows with steps
    assert plain_20 > 3 * checkpointed_20


def _cuda_gradient_peak(backbone: torch.nn.Module, n_steps: int, checkpoint_steps: bool, batch: int) -> int:
    """Peak CUDA memory above the baseline during one DiffPure forward + exact gradient (t* = 0.1)."""
    x = torch.rand(batch, 3, 32, 32, device="cuda", requires_grad=True)
    purifier = DiffPure(backbone, t_star=0.1, dt=0.1 / n_steps, checkpoint_steps=checkpoint_steps)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    (grad,) = torch.autograd.grad(purifier(x, SeededNoise(0)).sum(), x)
    torch.cuda.synchronize()
    assert torch.isfinite(grad).all() and grad.abs().max() > 0
    return torch.cuda.max_memory_allocated() - baseline


@pytest.mark.gpu
def test_gpu_full_gradient_memory_at_200_steps_is_within_1_5x_of_20_steps():
    """The DDPM CIFAR-10 UNet (35.7M, random weights), batch 32, on CUDA: checkpointed ``full``
    gradients stay flat in the number of steps; plain autograd (20 vs 60 steps, batch 8) grows."""
    from benchmarks.purification import cifar_unet

    backbone = cifar_unet(torch.device("cuda"))
    checkpointed_20 = _cuda_gradient_peak(backbone, 20, True, 32)
    checkpointed_200 = _cuda_gradient_peak(backbone, 200, True, 32)
    assert checkpointed_200 < 1.5 * checkpointed_20, (checkpointed_20, checkpointed_200)
    # ~31 MB of activations per image and step: plain autograd on 8 images holds ~5 GB at 20 steps
    plain_20 = _cuda_gradient_peak(backbone, 20, False, 8)
    plain_60 = _cuda_gradient_peak(backbone, 60, False, 8)
    assert plain_60 > 2.0 * plain_20, (plain_20, plain_60)
