"""The fast purification path computes the reference path's purification.

Reference (``purifier.solver=torchsde``): ``torchsde.sdeint``, Euler, fp32, as DiffPure runs it.
Fast: advpure's Euler-Maruyama loop, optionally with the backbone in bf16 (state in fp32),
channels_last and torch.compile. On one Brownian path (the loop draws torchsde's increments),
the fp32 loop equals the reference to rounding, and the bf16 fast path stays within a stated
bf16-level tolerance. GPU versions of the same checks are marked ``gpu``.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torchsde

from advpure.config.enums import CompileMode, SdeSolver
from advpure.diffusion.acceleration import AcceleratedBackbone, accelerated
from advpure.diffusion.precision import with_precision
from advpure.purifiers.diffpure import DiffPure
from advpure.purifiers.noise import BrownianNoise, SeededNoise

# Largest |fast - reference| on [0, 1] images (32 digits, 10 steps) with the backbone in bf16
# (8 significant bits: eps relative error ~ 2^-8 per call, damped by the step size): measured
# 8.1e-3 (NCHW) and 9.1e-3 (channels_last) on this project's CPU; the bound leaves 2x for other
# kernels. A wrong fast path (another noise path) differs by ~1.
BF16_TOLERANCE = 0.02


def _path(purifier: DiffPure, x: torch.Tensor, device: str | torch.device = "cpu") -> BrownianNoise:
    """One Brownian path on the purifier's grid; key 0 (forward diffusion) seeded."""
    grid = torch.tensor(
        [1.0 - purifier.t_star + i * purifier.step_size for i in range(purifier.n_steps + 1)], dtype=torch.float64
    )
    path = torchsde.BrownianInterval(
        t0=1.0 - purifier.t_star,
        t1=1.0,
        size=(x.shape[0], x[0].numel()),
        dtype=x.dtype,
        device=device,
        entropy=11,
        levy_area_approximation="none",
    )
    return BrownianNoise(path, grid, start=SeededNoise(5))


def _images(batch: int = 16, side: int = 8, channels: int = 1, device: str = "cpu") -> torch.Tensor:
    return torch.rand(batch, channels, side, side, generator=torch.Generator().manual_seed(2)).to(device)


def test_solver_option_selects_torchsde_and_matches_the_loop(digits_backbone):
    x = _images()
    loop = DiffPure(digits_backbone, t_star=0.1, dt=0.01)
    reference = DiffPure(digits_backbone, t_star=0.1, dt=0.01, solver="torchsde")
    with torch.no_grad():
        fast_out = loop(x, _path(loop, x))
        reference_out = reference(x, _path(reference, x))
    assert (fast_out - reference_out).abs().max() < 1e-5
    assert (fast_out - x).abs().max() > 0.05  # it purified
    assert reference.settings()["solver"] == "torchsde" and loop.settings()["solver"] == "loop"


def test_reference_solver_gradient_equals_the_checkpointed_loop_gradient(digits_backbone):
    """Autograd through torchsde.sdeint and through the checkpointed loop: the same derivative."""
    x = _images(batch=4)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    grads = []
    for solver in SdeSolver:
        purifier = DiffPure(digits_backbone, t_star=0.05, dt=0.01, solver=solver)
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((purifier(xg, _path(purifier, x)) * weights).sum(), xg)
        grads.append(grad)
    assert grads[0].abs().max() > 1e-3
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_bf16_channels_last_fast_path_matches_the_fp32_reference_within_bf16_tolerance(digits_backbone):
    x = _images(batch=32)
    reference = DiffPure(digits_backbone, t_star=0.1, dt=0.01, solver="torchsde")
    fast_backbone = with_precision(accelerated(copy.deepcopy(digits_backbone), channels_last=True), "bf16")
    fast = DiffPure(fast_backbone, t_star=0.1, dt=0.01)
    with torch.no_grad():
        reference_out = reference(x, _path(reference, x))
        fast_out = fast(x, _path(fast, x))
        other_path = fast(x, SeededNoise(99))
    error = (fast_out - reference_out).abs().max().item()
    assert 0.0 < error < BF16_TOLERANCE  # bf16 changes the numbers, within tolerance
    assert (other_path - reference_out).abs().max() > 5 * BF16_TOLERANCE  # the check can fail
    assert fast.settings()["backbone"] == {
        "channels_last": True,
        "compile": "off",
        "precision": "bf16",
        "mode": "autocast",
    }
    # channels_last alone changes nothing but the memory order
    with torch.no_grad():
        eps_plain = digits_backbone(x * 2 - 1, torch.full((32,), 0.05))
        eps_nhwc = accelerated(copy.deepcopy(digits_backbone), channels_last=True)(x * 2 - 1, torch.full((32,), 0.05))
    assert eps_nhwc.is_contiguous()
    torch.testing.assert_close(eps_plain, eps_nhwc, rtol=1e-4, atol=1e-5)


def test_accelerated_is_the_identity_when_off_and_rejects_unknown_modes(digits_backbone):
    assert accelerated(digits_backbone) is digits_backbone
    with pytest.raises(ValueError):
        AcceleratedBackbone(digits_backbone, False, "fastest")
    assert [mode.value for mode in CompileMode] == ["off", "default", "reduce-overhead", "max-autotune"]


@pytest.mark.slow
def test_compiled_backbone_matches_the_eager_one_with_gradients(digits_backbone):
    """torch.compile (inductor, CPU here): same eps and same input gradient as eager, to fp32 rounding."""
    x = (_images(batch=8) * 2 - 1).requires_grad_(True)
    t = torch.full((8,), 0.07)
    compiled = accelerated(digits_backbone, compile_mode="default")
    eager_eps = digits_backbone(x, t)
    compiled_eps = compiled(x, t)
    torch.testing.assert_close(compiled_eps, eager_eps, rtol=1e-4, atol=1e-5)
    (g_eager,) = torch.autograd.grad(eager_eps.square().sum(), x)
    (g_compiled,) = torch.autograd.grad(compiled_eps.square().sum(), x)
    torch.testing.assert_close(g_compiled, g_eager, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("compile_mode", ["off", "reduce-overhead"])
def test_gpu_fast_path_matches_the_fp32_torchsde_reference(digits_backbone, compile_mode):
    """On CUDA: bf16 + channels_last (+ torch.compile with CUDA graphs) against the fp32 reference."""
    device = torch.device("cuda")
    backbone = copy.deepcopy(digits_backbone).to(device)
    x = _images(batch=64, device="cuda")
    reference = DiffPure(backbone, t_star=0.1, dt=0.001, solver="torchsde")
    fast = DiffPure(
        with_precision(accelerated(backbone, channels_last=True, compile_mode=compile_mode), "bf16"),
        t_star=0.1,
        dt=0.001,
    )
    with torch.no_grad():
        reference_out = reference(x, _path(reference, x, device))
        fast_out = fast(x, _path(fast, x, device))
        fast_again = fast(x, _path(fast, x, device))  # a replay (CUDA graph) gives the same output
    assert (fast_out - reference_out).abs().max().item() < BF16_TOLERANCE
    torch.testing.assert_close(fast_again, fast_out)
