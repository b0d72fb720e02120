"""DiffPure variants: solver semantics, torchsde as reference, replayable noise, and the gradient modes.

(The laws of the purified output against closed forms are in test_closed_form.py; the memory of
checkpointed gradients in test_grad_memory.py.)
"""

from __future__ import annotations

import pytest
import torch
import torchsde

from advpure.errors import ConfigError
from advpure.evaluation.defended import DefendedClassifier
from advpure.purifiers.diffpure import DiffPure
from advpure.purifiers.diffpure_ddpm import DiffPureDDPM
from advpure.purifiers.diffpure_ode import DiffPureODE
from advpure.purifiers.noise import BrownianNoise, NoiseTape, SeededNoise


def _variant(cls, defaults):
    """A factory taking the union of the variants' keywords and keeping those ``cls`` accepts
    (``dt`` for the continuous ones, ``stride`` for the DDPM)."""

    def make(backbone, **kwargs):
        merged = {**defaults, **kwargs}
        merged.pop("stride" if "dt" in defaults else "dt", None)
        return cls(backbone, **merged)

    return make


VARIANTS = {
    "diffpure": _variant(DiffPure, {"t_star": 0.05, "dt": 1e-2}),
    "diffpure_ddpm": _variant(DiffPureDDPM, {"t_star": 0.05, "stride": 10}),
    "diffpure_ode": _variant(DiffPureODE, {"t_star": 0.05, "dt": 1e-2}),
}


def smooth_backbone(dtype=torch.float64, seed=0):
    """A tiny smooth eps-predictor that depends on x and t (for gradient checks)."""
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(1, 1, 3, padding=1).to(dtype)

    def backbone(x, t):
        return torch.tanh(conv(x)) * (1 + t.view(-1, 1, 1, 1))

    backbone.conv = conv
    return backbone


def recording_backbone(calls):
    def backbone(x, t):
        calls.append(float(t[0]))
        return torch.zeros_like(x)

    return backbone


# ------------------------------------------------------------------------------ semantics


@pytest.mark.parametrize(("t_star", "dt"), [(0.1, 1e-3), (0.075, 1e-3), (0.3, 0.01)])
def test_vp_sde_takes_t_star_over_dt_steps_at_the_right_times(t_star, dt):
    calls = []
    purifier = DiffPure(recording_backbone(calls), t_star=t_star, dt=dt)
    out = purifier(torch.rand(3, 1, 8, 8))
    assert out.shape == (3, 1, 8, 8) and out.min() >= 0 and out.max() <= 1
    assert purifier.n_steps == len(calls) == round(t_star / dt)
    assert calls == pytest.approx([t_star - i * dt for i in range(len(calls))], abs=1e-6)


def test_ddpm_starts_at_round_1000_t_star_and_respaces_by_stride():
    calls = []
    purifier = DiffPureDDPM(recording_backbone(calls), t_star=0.1)
    purifier(torch.rand(2, 1, 4, 4))
    assert purifier.start_step == 100 and purifier.n_steps == 100
    assert calls == pytest.approx([(i + 1) / 1000 for i in range(99, -1, -1)])
    calls.clear()
    strided = DiffPureDDPM(recording_backbone(calls), t_star=0.1, stride=10)
    strided(torch.rand(2, 1, 4, 4))
    assert calls == pytest.approx([(i + 1) / 1000 for i in range(99, -1, -10)])
    assert [strided.step_is_random(i) for i in range(10)] == [True] * 9 + [False]


def test_ode_is_deterministic_given_the_diffusion_noise_and_heun_costs_two_calls():
    x = torch.rand(4, 1, 8, 8)
    euler = DiffPureODE(smooth_backbone(torch.float32), t_star=0.1, dt=0.01)
    tape = NoiseTape()
    first = euler(x, tape)
    assert list(tape.draws) == [0]  # only the forward diffusion draws noise
    assert torch.equal(first, euler(x, tape.replay()))
    calls = []
    DiffPureODE(recording_backbone(calls), t_star=0.1, dt=0.01, method="heun")(x)
    assert len(calls) == 2 * 10 - 1  # the last Heun step falls back to Euler (no score at t = 0)


@pytest.mark.parametrize("name", VARIANTS)
def test_tiny_t_star_returns_the_input(name):
    purifier = VARIANTS[name](lambda x, t: torch.zeros_like(x), t_star=1e-3, dt=1e-3, stride=1)
    x = torch.rand(64, 1, 8, 8) * 0.8 + 0.1
    error = (purifier(x) - x).abs().mean()
    assert error < 0.02
    # ... and the distance grows with t* (so the check above is not vacuous)
    far = VARIANTS[name](lambda x, t: torch.zeros_like(x), t_star=0.3)
    assert (far(x) - x).abs().mean() > 5 * error


@pytest.mark.parametrize("name", VARIANTS)
def test_outputs_stay_finite_up_to_t_star_1(name, digits_backbone):
    purifier = VARIANTS[name](digits_backbone, t_star=1.0, dt=0.02, stride=20)
    with torch.no_grad():
        out = purifier(torch.rand(8, 1, 8, 8))
    assert torch.isfinite(out).all() and out.std() > 0.05


def test_explicit_loop_matches_torchsde_on_one_brownian_path():
    """torchsde is the reference solver: on the same Brownian path, sdeint and the explicit
    Euler-Maruyama loop take identical steps (float64: agreement to rounding)."""
    purifier = DiffPure(smooth_backbone(), t_star=0.1, dt=2e-3)
    noise, x_t = brownian_setup(purifier, batch=3)
    loop = purifier.reverse(x_t, noise)
    reference = purifier.torchsde_reverse(x_t, noise)
    assert (loop - reference).abs().max() < 1e-7
    assert (loop - x_t).abs().max() > 0.01


# ----------------------------------------------------------------------------- noise replay


@pytest.mark.parametrize("name", VARIANTS)
def test_seeded_and_recorded_noise_replay_a_purification_exactly(name):
    purifier = VARIANTS[name](smooth_backbone(torch.float32))
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(purifier(x, SeededNoise(4)), purifier(x, SeededNoise(4)))
    assert not torch.equal(purifier(x, SeededNoise(4)), purifier(x, SeededNoise(5)))
    tape = NoiseTape()
    recorded = purifier(x, tape)
    assert torch.equal(recorded, purifier(x, tape.replay()))
    assert not torch.equal(recorded, purifier(x))  # fresh draws by default
    seeded = VARIANTS[name](smooth_backbone(torch.float32), seed=9)
    assert torch.equal(seeded(x), seeded(x))


def test_k_copies_in_one_call_are_independent_draws_of_each_image():
    purifier = DiffPure(smooth_backbone(torch.float32), t_star=0.1, dt=0.01)
    x = torch.rand(2, 1, 8, 8)
    copies = purifier.purify_copies(x, 5, SeededNoise(1))
    assert copies.shape == (5, 2, 1, 8, 8)
    batched = purifier(x.repeat(5, 1, 1, 1), SeededNoise(1)).view(5, 2, 1, 8, 8)
    assert torch.equal(copies, batched)
    assert (copies[0] - copies[1]).abs().max() > 1e-3  # copies differ


# ------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("checkpoint_steps", [True, False])
def test_full_gradient_matches_central_finite_differences(name, checkpoint_steps):
    """With the noise fixed, purification is a function of x: autograd's directional derivative
    (through the checkpointed steps, which replay the recorded noise) must equal a central
    finite difference in float64."""
    purifier = VARIANTS[name](smooth_backbone(), checkpoint_steps=checkpoint_steps)
    x = (torch.rand(2, 1, 6, 6, dtype=torch.float64) * 0.6 - 0.3).requires_grad_(True)
    direction, weights = torch.randn_like(x), torch.randn_like(x)

    def objective(inp):
        return (purifier.purify_signed(inp, SeededNoise(11)) * weights).sum()

    (grad,) = torch.autograd.grad(objective(x), x)
    h = 1e-6
    with torch.no_grad():
        numeric = (objective(x + h * direction) - objective(x - h * direction)) / (2 * h)
    analytic = (grad * direction).sum()
    assert grad.abs().sum() > 0
    assert torch.isclose(analytic, numeric, rtol=1e-6, atol=1e-9)


class TinyEps(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 1, 1))

    def forward(self, x, t):
        return self.net(x) * (1 + t.view(-1, 1, 1, 1))


def test_checkpointed_and_plain_autograd_give_the_same_gradients_incl_parameters():
    backbone = TinyEps()
    x0 = torch.rand(2, 1, 6, 6)
    grads = []
    for checkpoint_steps in (True, False):
        purifier = DiffPure(backbone, t_star=0.05, dt=0.01, checkpoint_steps=checkpoint_steps)
        x = x0.clone().requires_grad_(True)
        backbone.zero_grad()
        (purifier(x, SeededNoise(2)) ** 2).sum().backward()
        grads.append([x.grad.clone(), *(p.grad.clone() for p in backbone.parameters())])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def brownian_setup(purifier, batch=2, dtype=torch.float64, size=16):
    grid = torch.tensor(
        [1.0 - purifier.t_star + i * purifier.step_size for i in range(purifier.n_steps + 1)], dtype=torch.float64
    )
    path = torchsde.BrownianInterval(
        t0=1.0 - purifier.t_star, t1=1.0, size=(batch, size), dtype=dtype, entropy=7, levy_area_approximation="none"
    )
    noise = BrownianNoise(path, grid, start=SeededNoise(3))
    side = int(size**0.5)
    x_t = torch.randn(batch, 1, side, side, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 0.5
    return noise, x_t


@pytest.mark.parametrize(("dt", "tolerance"), [(1e-2, 0.03), (2e-3, 0.006)])
def test_full_and_adjoint_gradients_agree_on_the_same_brownian_path(dt, tolerance):
    """The adjoint solves a backward SDE with its own Euler error: relative disagreement with the
    exact gradient is ~1% at dt = 0.01 and shrinks with dt (measured 1.0% and 0.2%)."""
    purifier = DiffPure(smooth_backbone(), t_star=0.1, dt=dt)
    noise, _ = brownian_setup(purifier)
    x = (torch.rand(2, 1, 4, 4, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    weights = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    full = purifier.purify(x, noise)
    adjoint = purifier.purify_adjoint(x, noise)
    assert (full - adjoint).abs().max() < 1e-6  # same forward path
    (g_full,) = torch.autograd.grad((full * weights).sum(), x, retain_graph=True)
    (g_adjoint,) = torch.autograd.grad((adjoint * weights).sum(), x)
    assert ((g_full - g_adjoint).norm() / g_full.norm()) < tolerance


@pytest.mark.parametrize("name", ["diffpure_ddpm", "diffpure_ode"])
def test_adjoint_is_refused_for_variants_that_are_not_the_vp_sde(name):
    with pytest.raises(ConfigError, match=r"purifier.grad_mode.*diffpure"):
        VARIANTS[name](smooth_backbone(), grad_mode="adjoint")


def test_every_grad_mode_returns_the_real_purification_value():
    """(The adjoint integrates a torchsde Brownian path; its value is checked against the loop on
    the same path in the adjoint test.)"""
    backbone = smooth_backbone(torch.float32)
    surrogate = DiffPureDDPM(backbone, t_star=0.1, stride=50)
    x = torch.rand(3, 1, 4, 4)
    exact = DiffPure(backbone, t_star=0.1, dt=0.01)(x, SeededNoise(6))
    for mode in ("surrogate", "bpda", "blind"):
        purifier = DiffPure(backbone, t_star=0.1, dt=0.01, grad_mode=mode, surrogate=surrogate)
        assert torch.allclose(purifier(x, SeededNoise(6)), exact, atol=1e-6), mode


def test_bpda_backward_is_the_identity_and_blind_has_no_graph():
    backbone = smooth_backbone(torch.float32)
    x = torch.rand(3, 1, 4, 4, requires_grad=True)
    weights = torch.randn(3, 1, 4, 4)
    (grad,) = torch.autograd.grad((DiffPure(backbone, grad_mode="bpda", dt=0.01)(x) * weights).sum(), x)
    assert torch.equal(grad, weights)
    blind = DiffPure(backbone, grad_mode="blind", dt=0.01)
    assert not blind(x).requires_grad
    classifier = torch.nn.Flatten()
    assert DefendedClassifier(blind, classifier).attack_target() is classifier
    full = DefendedClassifier(DiffPure(backbone, dt=0.01), classifier)
    assert full.attack_target() is full


def test_surrogate_gradient_is_the_surrogates_gradient():
    backbone = smooth_backbone(torch.float32)
    surrogate = DiffPureDDPM(backbone, t_star=0.1, stride=25)
    purifier = DiffPure(backbone, t_star=0.1, dt=0.01, grad_mode="surrogate", surrogate=surrogate)
    x = torch.rand(3, 1, 4, 4, requires_grad=True)
    weights = torch.randn(3, 1, 4, 4)
    (grad,) = torch.autograd.grad((purifier(x, SeededNoise(8)) * weights).sum(), x)
    (expected,) = torch.autograd.grad((surrogate(x, SeededNoise(8)) * weights).sum(), x)
    (exact,) = torch.autograd.grad((DiffPure(backbone, t_star=0.1, dt=0.01)(x, SeededNoise(8)) * weights).sum(), x)
    assert torch.allclose(grad, expected)
    assert not torch.allclose(grad, exact, atol=1e-3)
    assert purifier.settings()["surrogate"]["name"] == "diffpure_ddpm"


def test_surrogate_mode_without_a_surrogate_names_the_key():
    with pytest.raises(ConfigError, match=r"purifier\.surrogate"):
        DiffPure(smooth_backbone(), grad_mode="surrogate")


def test_settings_mark_every_mode_but_full_as_an_approximation():
    backbone = smooth_backbone(torch.float32)
    surrogate = DiffPureDDPM(backbone, stride=50)
    flags = {
        mode: DiffPure(backbone, grad_mode=mode, surrogate=surrogate).settings()["gradient_is_approximation"]
        for mode in ("full", "adjoint", "surrogate", "bpda", "blind")
    }
    assert flags == {"full": False, "adjoint": True, "surrogate": True, "bpda": True, "blind": True}
