"""The attack contract, over every option in conf/attack/*.yaml, composed as run.py composes it.

Each option, with a tiny budget, against a small linear classifier behind a random "purifier"
(Gaussian noise on the input): outputs in the eps-ball and [0, 1], seeded determinism, declared
settings, a (B,) verdict and a per-iteration trace; and the rule that an attack returns its most
adversarial iterate for every point it moved, never the clean image.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advpure.attacks.base import Attack
from advpure.attacks.geometry import GEOMETRIES
from advpure.attacks.losses import margin
from advpure.config.validate import validate_config
from advpure.instantiate import build
from tests.compose_cache import make_fast_compose
from tests.conftest import group_options

pytestmark = pytest.mark.usefixtures("single_thread")
fast_compose = pytest.fixture(scope="module")(make_fast_compose)

OPTIONS = group_options("attack")
# The smallest budget of every knob an option has (keys an option lacks are skipped).
TINY = {"n_iter": 4, "n_eot": 2, "n_defense_reps": 2}


class NoisyMarginModel(nn.Module):
    """10-class linear classifier behind an additive-noise "purifier": logits of x + sigma z (fresh
    z per call and row). Class 0's logit is ``scale * (mean(x) - threshold)``, class 1's is 0, the
    others -5: class 0 wins exactly where mean(x) > threshold, and every loss (CE, margin, DLR)
    rises as mean(x) falls, so one direction helps every attack."""

    def __init__(self, sigma: float = 0.0, scale: float = 20.0, threshold: float = 0.45) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.weight[0] = scale / 64
            self.linear.bias.fill_(-5.0)
            self.linear.bias[0] = -scale * threshold
            self.linear.bias[1] = 0.0
        self.requires_grad_(False)
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x + self.sigma * torch.randn_like(x)).flatten(1))


def _images(levels: list[float]) -> torch.Tensor:
    """One 8x8 image per level: that level plus uniform jitter in [-0.05, 0.05], (B, 1, 8, 8)."""
    generator = torch.Generator().manual_seed(1)
    jitter = (torch.rand(len(levels), 1, 8, 8, generator=generator) - 0.5) * 0.1
    return (torch.tensor(levels).view(-1, 1, 1, 1) + jitter).clamp(0, 1)


def _attack(compose, option: str, eps: float) -> Attack:
    cfg = compose(f"attack={option}")
    for key, value in TINY.items():
        if key in cfg.attack:
            cfg.attack[key] = value
    cfg.attack.eps = eps
    validate_config(cfg)
    attack = build(cfg.attack, key="attack", eps=eps)
    assert isinstance(attack, Attack)
    return attack


@pytest.mark.parametrize("option", OPTIONS)
def test_in_the_ball_seeded_and_declares_settings_verdict_and_trace(fast_compose, option):
    attack = _attack(fast_compose, option, eps=0.1)
    model = NoisyMarginModel(sigma=0.05)
    x = _images([0.5, 0.52, 0.56, 0.6, 0.7, 0.8])
    y = torch.zeros(6, dtype=torch.long)
    outputs = []
    for _ in range(2):
        torch.manual_seed(0)
        outputs.append(attack(model, x, y))
    x_adv = outputs[0]
    assert torch.equal(outputs[0], outputs[1])  # same seed -> identical examples
    size = GEOMETRIES[attack.norm].size(x_adv - x)
    assert size.max() <= attack.eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    settings = attack.settings()
    assert {"name", "eps", "norm", "verdict_rule", "selection"} <= set(settings)
    assert settings["name"] == attack.name and settings["eps"] == attack.eps and settings["norm"] == attack.norm.value
    assert attack.last_verdict.shape == (6,) and attack.last_verdict.dtype == torch.bool
    assert attack.last_checks is None or isinstance(attack.last_checks, dict)
    trace = attack.last_trace
    assert set(trace) == {"run", "margin", "fooled_draws"} and len({len(v) for v in trace.values()}) == 1
    assert all(0.0 <= f <= 1.0 for f in trace["fooled_draws"])
    if attack.uses_gradients:
        assert len(trace["margin"]) >= TINY["n_iter"]  # at least one entry per iteration


@pytest.mark.parametrize("option", OPTIONS)
def test_never_returns_the_clean_image_for_a_point_it_could_not_fool(fast_compose, option):
    """eps = 1e-3 cannot overturn a margin of 1 or more: nothing is fooled, every point is moved,
    and (a deterministic model) the returned loss is above the clean loss."""
    attack = _attack(fast_compose, option, eps=1e-3)
    model = NoisyMarginModel(sigma=0.0)
    x = _images([0.6, 0.65, 0.7, 0.8])
    y = torch.zeros(4, dtype=torch.long)
    torch.manual_seed(0)
    x_adv = attack(model, x, y)
    assert attack.last_verdict.all()  # robust, by every attack's own rule
    if not attack.uses_gradients:  # attack=none: the clean image is its example by definition
        assert torch.equal(x_adv, x)
        return
    assert (x_adv != x).flatten(1).any(1).all(), "a point the attack moved came back as the clean image"
    assert (margin(model(x_adv), y) > margin(model(x), y)).all()


@pytest.mark.parametrize("option", OPTIONS)
def test_a_point_it_fooled_returns_a_fooling_iterate(fast_compose, option):
    """A deterministic model, eps = 0.1: points with mean(x) < 0.55 can be fooled (the first one
    within 4 steps of 2/255), the others cannot. Every point the verdict calls broken comes back
    misclassified; every point is moved."""
    attack = _attack(fast_compose, option, eps=0.1)
    model = NoisyMarginModel(sigma=0.0)
    x = _images([0.47, 0.5, 0.52, 0.7, 0.8])
    y = torch.zeros(5, dtype=torch.long)
    torch.manual_seed(0)
    x_adv = attack(model, x, y)
    broken = ~attack.last_verdict
    assert torch.equal(model(x_adv)[broken].argmax(1) != 0, torch.ones(int(broken.sum()), dtype=torch.bool))
    if attack.uses_gradients:
        assert broken[0] and not broken[3:].any()
        assert (x_adv != x).flatten(1).any(1).all()
