"""VP-SDE closed forms, and the discrete DDPM schedule as its discretization."""

from __future__ import annotations

import math

import torch

from advpure.diffusion.schedule import DiscreteSchedule, VPSchedule


def test_alpha_bar_closed_form():
    schedule = VPSchedule()
    t = torch.tensor([0.0, 0.1, 0.5, 1.0], dtype=torch.float64)
    expected = torch.exp(-0.1 * t - 0.5 * 19.9 * t**2)
    assert torch.allclose(schedule.alpha_bar(t), expected)
    assert torch.allclose(schedule.sigma(t) ** 2 + schedule.alpha_bar(t), torch.ones_like(t))
    # alpha_bar' = -beta alpha_bar
    h = 1e-6
    derivative = (schedule.alpha_bar(t[1:3] + h) - schedule.alpha_bar(t[1:3] - h)) / (2 * h)
    assert torch.allclose(derivative, -schedule.beta(t[1:3]) * schedule.alpha_bar(t[1:3]), rtol=1e-6)


def test_discrete_schedule_matches_the_continuous_one():
    discrete = DiscreteSchedule()
    assert discrete.continuous() == VPSchedule(0.1, 20.0)
    steps = torch.arange(0, 1000, 37)
    t = discrete.time_of_step(steps).double()
    continuous = VPSchedule().alpha_bar(t)
    # first-order agreement; the gap is the sum of beta_j^2 / 2 terms (< 1% where alpha_bar > 0.05)
    relative = (discrete.alpha_bars[steps] - continuous).abs() / continuous
    assert relative[continuous > 0.05].max() < 0.02
    assert math.isclose(
        float(discrete.alpha_bars[99]),
        float(VPSchedule().alpha_bar(torch.tensor(0.1))),
        rel_tol=5e-3,
    )


def test_diffuse_has_the_right_moments():
    schedule = VPSchedule()
    x0 = torch.full((200_000,), 0.6)
    t = torch.tensor(0.3)
    x_t = schedule.diffuse(x0, t, torch.randn_like(x0))
    assert abs(x_t.mean() - schedule.alpha_bar(t).sqrt() * 0.6) < 0.01
    assert abs(x_t.std() - schedule.sigma(t)) < 0.01
