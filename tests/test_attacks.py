"""AutoAttack runner: budget overrides reach pyautoattack; perturbations stay in the ball and in [0, 1]."""

from __future__ import annotations

import torch

from advpure.attacks.autoattack import AutoAttackRunner
from advpure.config.enums import Norm
from advpure.training.pgd import pgd_attack, project


def _linear_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    return model.eval()


def test_budget_overrides_reach_autoattack():
    runner = AutoAttackRunner(eps=0.1, version="rand", n_iter=10, n_eot=3)
    adversary = runner.build(torch.nn.Identity(), torch.device("cpu"))
    assert adversary.attacks_to_run == ["apgd-ce", "apgd-dlr"]
    assert (adversary.apgd.n_iter, adversary.apgd.n_iter_orig, adversary.apgd.eot_iter) == (
        10,
        10,
        3,
    )
    assert adversary.apgd.n_iter_2 == max(int(0.22 * 10), 1)
    assert runner.settings()["reduced_budget"] is True
    published = AutoAttackRunner(eps=0.1, version="rand").settings()
    assert (published["n_iter"], published["n_eot"], published["reduced_budget"]) == (
        100,
        20,
        False,
    )


def test_autoattack_stays_in_the_ball_and_breaks_a_linear_model():
    model = _linear_model()
    x = torch.rand(32, 1, 8, 8)
    y = model(x).argmax(1)  # correctly classified by construction
    for norm, eps in ((Norm.Linf, 0.3), (Norm.L2, 3.0)):
        runner = AutoAttackRunner(eps=eps, norm=norm, version="custom", attacks=["apgd-ce"], n_iter=20)
        x_adv = runner(model, x, y)
        delta = (x_adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == Norm.Linf else delta.norm(dim=1)
        assert size.max() <= eps + 1e-5
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert (model(x_adv).argmax(1) == y).float().mean() < 0.5


def test_pgd_projection_and_ascent():
    delta = torch.randn(4, 1, 8, 8)
    assert project(delta, Norm.Linf, 0.1).abs().max() <= 0.1
    assert project(delta, Norm.L2, 0.5).flatten(1).norm(dim=1).max() <= 0.5 + 1e-6
    model = _linear_model()
    x = torch.rand(16, 1, 8, 8)
    y = model(x).argmax(1)
    x_adv = pgd_attack(model, x, y, norm=Norm.Linf, eps=0.3, step_size=0.05, steps=10)
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    loss = torch.nn.functional.cross_entropy
    assert loss(model(x_adv), y) > loss(model(x), y)
