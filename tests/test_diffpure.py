"""DiffPure: shape and range, exact gradients, near-identity at tiny t*, and the reverse SDE's law."""

from __future__ import annotations

import pytest
import torch

from advpure.diffusion.schedule import VPSchedule
from advpure.purifiers.diffpure import DiffPure


class GaussianEps(torch.nn.Module):
    """The exact noise predictor for data x0 ~ N(0, s^2 I) under the VP-SDE:
    x_t ~ N(0, v(t) I) with v = alpha_bar s^2 + sigma^2, and E[noise | x_t] = sigma(t) x_t / v(t)."""

    def __init__(self, data_std: float, schedule: VPSchedule) -> None:
        super().__init__()
        self.data_std = data_std
        self.schedule = schedule

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.view(-1, *[1] * (x.ndim - 1))
        variance = self.schedule.alpha_bar(t) * self.data_std**2 + self.schedule.sigma(t) ** 2
        return self.schedule.sigma(t) * x / variance


def test_reverse_sde_recovers_the_data_distribution():
    """From x_t* ~ N(0, v(t*)) the exact reverse SDE must end at N(0, s^2): checks drift, diffusion
    and the score = -eps / sigma conversion (a wrong sign or scale moves the final variance)."""
    schedule = VPSchedule()
    data_std = 0.5
    purifier = DiffPure(GaussianEps(data_std, schedule), t_star=0.5, dt=1e-3)
    t_star = torch.tensor(0.5)
    start_std = (schedule.alpha_bar(t_star) * data_std**2 + schedule.sigma(t_star) ** 2).sqrt()
    x_t = torch.randn(2048, 1, 4, 4) * start_std
    x_0 = purifier.solve_reverse(x_t, 0.5)
    assert abs(x_0.var().item() - data_std**2) < 0.01
    assert abs(x_0.mean().item()) < 0.01


def test_shape_range_and_step_count():
    calls = []

    def backbone(x, t):
        calls.append(float(t[0]))
        return torch.zeros_like(x)

    purifier = DiffPure(backbone, t_star=0.1, dt=1e-3)
    x = torch.rand(3, 1, 8, 8)
    out = purifier(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert purifier.n_steps == 100
    # torchsde evaluates the drift once to check shapes, then once per Euler step
    assert len(calls) == 101
    assert calls[-1] == pytest.approx(1e-3, abs=1e-6)


def test_tiny_t_star_nearly_returns_the_input():
    purifier = DiffPure(lambda x, t: torch.zeros_like(x), t_star=2e-3, dt=1e-3)
    x = torch.rand(16, 1, 8, 8) * 0.8 + 0.1
    assert (purifier(x) - x).abs().mean() < 0.01


def test_purification_is_random_but_replayable_under_a_seed():
    purifier = DiffPure(lambda x, t: torch.zeros_like(x), t_star=0.1, dt=1e-2)
    x = torch.rand(2, 1, 8, 8)
    torch.manual_seed(5)
    a = purifier(x)
    torch.manual_seed(5)
    b = purifier(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, purifier(x))


def test_gradient_matches_finite_differences():
    """With the random stream fixed, purification is a function of x; autograd's directional
    derivative must equal a central finite difference (float64, smooth backbone, no clamping)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 1, 3, padding=1).double()

    def backbone(x, t):
        return torch.tanh(conv(x)) * (1 + t.view(-1, 1, 1, 1))

    purifier = DiffPure(backbone, t_star=0.05, dt=1e-2)
    x = (torch.rand(2, 1, 6, 6, dtype=torch.float64) * 0.2 + 0.4).requires_grad_(True)
    direction = torch.randn_like(x)
    weights = torch.randn(2, 1, 6, 6, dtype=torch.float64)

    def objective(inp):
        torch.manual_seed(123)
        return (purifier(inp) * weights).sum()

    (grad,) = torch.autograd.grad(objective(x), x)
    h = 1e-5
    with torch.no_grad():
        numeric = (objective(x + h * direction) - objective(x - h * direction)) / (2 * h)
    analytic = (grad * direction).sum()
    assert grad.abs().sum() > 0
    assert torch.isclose(analytic, numeric, rtol=1e-5, atol=1e-8)
