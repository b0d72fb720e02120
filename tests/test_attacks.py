"""Attacks: AutoAttack, PGD-EOT, torchattacks; losses and ball geometry; perturbations stay in the ball and [0, 1]."""

from __future__ import annotations

import pytest
import torch

from advpure.attacks.autoattack import AutoAttackRunner
from advpure.attacks.geometry import GEOMETRIES, project
from advpure.attacks.losses import LOSSES
from advpure.attacks.pgd_eot import PGDEOT
from advpure.attacks.torchattacks_runner import TorchAttacksRunner
from advpure.config.enums import AttackLoss, Norm
from advpure.errors import ConfigError
from advpure.training.pgd import pgd_attack


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


# ------------------------------------------------------------------------------- PGD-EOT


class NoisyLinear(torch.nn.Module):
    """A random model: logits of x + sigma z (fresh z each call); counts its calls."""

    def __init__(self, sigma: float = 0.0) -> None:
        super().__init__()
        self.linear = _linear_model()
        self.sigma = sigma
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.linear(x + self.sigma * torch.randn_like(x))


def test_margin_and_dlr_against_hand_computed_values():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.5, 2.0, 1.5, 0.0]])
    y = torch.tensor([0, 2])
    assert torch.allclose(LOSSES[AttackLoss.margin](logits, y), torch.tensor([1.0 - 3.0, 2.0 - 1.5]))
    # dlr = margin / (z_(1) - z_(3)): (1 - 3) / (3 - 0) and (2 - 1.5) / (2 - 0.5)
    assert torch.allclose(LOSSES[AttackLoss.dlr](logits, y), torch.tensor([-2.0 / 3.0, 0.5 / 1.5]))
    ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    assert torch.allclose(LOSSES[AttackLoss.ce](logits, y), ce)


def test_l2_geometry_projects_and_normalizes():
    geometry = GEOMETRIES[Norm.L2]
    delta = torch.randn(5, 1, 8, 8)
    assert torch.allclose(geometry.size(geometry.project(delta, 0.5)), torch.full((5,), 0.5))
    small = delta / geometry.size(delta).view(-1, 1, 1, 1) * 0.1
    assert torch.equal(geometry.project(small, 0.5), small)  # inside the ball: unchanged
    assert torch.allclose(geometry.size(geometry.ascent(delta)), torch.ones(5))
    start = geometry.start(delta, 0.5, torch.Generator().manual_seed(0))
    assert geometry.size(start).max() <= 0.5 + 1e-6


@pytest.mark.parametrize(("norm", "eps"), [(Norm.Linf, 0.2), (Norm.L2, 2.0)])
def test_pgd_eot_stays_in_the_ball_and_breaks_a_linear_model(norm, eps):
    model = NoisyLinear(sigma=0.05)
    x = torch.rand(32, 1, 8, 8)
    y = model.linear(x).argmax(1)
    attack = PGDEOT(eps=eps, norm=norm, n_iter=20, n_eot=4, step_size=eps / 8)
    x_adv = attack(model, x, y)
    size = GEOMETRIES[norm].size(x_adv - x)
    assert size.max() <= eps + 1e-5 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (model.linear(x_adv).argmax(1) != y).float().mean() > 0.9
    # one batched call of n_eot * B images per step, plus one success check per restart
    assert model.calls == 20 + 1


def test_pgd_eot_gradient_sums_the_passes_and_restarts_only_unbroken_points():
    model = NoisyLinear(sigma=0.0)
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    attack = PGDEOT(eps=0.1, n_iter=1, n_eot=5)
    (single,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y, reduction="sum"), x)
    assert torch.allclose(attack.eot_gradient(model, x, y), 5 * single, atol=1e-6)
    # an unbreakable budget: every restart runs on every image; a huge one: the first breaks all
    tiny = PGDEOT(eps=1e-6, n_iter=2, n_eot=1, n_restarts=3)
    model.calls = 0
    tiny(model, x.detach(), model.linear(x.detach()).argmax(1))
    assert model.calls == 3 * (2 + 1)
    huge = PGDEOT(eps=1.0, n_iter=20, n_eot=1, n_restarts=3, step_size=0.2)
    model.calls = 0
    huge(model, x.detach(), model.linear(x.detach()).argmax(1))
    assert model.calls == 20 + 1


def test_pgd_eot_is_reproducible_and_reports_its_budget():
    model = NoisyLinear(sigma=0.0)
    x = torch.rand(4, 1, 8, 8)
    y = model.linear(x).argmax(1)
    attack = PGDEOT(eps=0.05, n_iter=3, n_eot=1, seed=3)
    assert torch.equal(attack(model, x, y), attack(model, x, y))
    assert attack.settings()["reduced_budget"] is True
    published = PGDEOT(eps=8 / 255).settings()
    assert (published["n_iter"], published["n_eot"], published["reduced_budget"]) == (200, 20, False)
    assert published["step_size"] == pytest.approx(2.5 * (8 / 255) / 200)


def test_torchattacks_by_name_with_kwargs_and_clear_errors():
    model = NoisyLinear(sigma=0.0)
    x = torch.rand(8, 1, 8, 8)
    y = model.linear(x).argmax(1)
    runner = TorchAttacksRunner("EOTPGD", eps=0.1, n_iter=5, n_eot=2, kwargs={"alpha": 0.03})
    assert runner.kwargs == {"eps": 0.1, "steps": 5, "eot_iter": 2, "alpha": 0.03}
    x_adv = runner(model, x, y)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (model.linear(x_adv).argmax(1) != y).any()
    with pytest.raises(ConfigError, match=r"attack\.name"):
        TorchAttacksRunner("EOTPDG", eps=0.1)
    with pytest.raises(ConfigError, match=r"attack\.kwargs"):
        TorchAttacksRunner("PGD", eps=0.1, kwargs={"eot_iter": 3})
