"""GDMP and MimicDiffusion: unguided limits, guidance strength, batch independence, exact
(second-order) gradients against finite differences, and the nearest-operator duplication."""

from __future__ import annotations

import pytest
import torch

from advpure.errors import ConfigError
from advpure.purifiers.diffpure import DiffPure
from advpure.purifiers.diffpure_ddpm import DiffPureDDPM
from advpure.purifiers.gdmp import GDMP, REPEAT_KEY_STRIDE
from advpure.purifiers.guidance import channel_l1_distance, structural_similarity
from advpure.purifiers.mimicdiffusion import MimicDiffusion
from advpure.purifiers.noise import NoiseTape, OffsetNoise, RecordedNoise, SeededNoise
from tests.test_diffpure import smooth_backbone


def _gdmp(backbone, **kwargs):
    options = {"guide_eps": 0.15, "stride": 12, "checkpoint_steps": False} | kwargs
    return GDMP(backbone, **options)


def _mimic(backbone, **kwargs):
    return MimicDiffusion(backbone, **({"stride": 100, "checkpoint_steps": False} | kwargs))


def _images(batch=3, seed=0, dtype=torch.float64):
    return torch.rand(batch, 1, 8, 8, dtype=dtype, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.1


def test_gdmp_without_guidance_is_its_ddpm_chain_repeated_exactly():
    backbone = smooth_backbone()
    x = 2 * _images() - 1
    gdmp = _gdmp(backbone, guide_scale=0.0, n_repeats=2)
    ddpm = DiffPureDDPM(backbone, t_star=0.036, stride=12, variance="beta")
    expected = x
    for r in range(2):
        expected = ddpm.purify_signed(expected, OffsetNoise(SeededNoise(4), r * REPEAT_KEY_STRIDE))
    assert torch.equal(gdmp.purify_signed(x, SeededNoise(4)), expected)


def test_mimicdiffusion_without_guidance_is_the_respaced_ddpm_posterior_chain():
    """DDIM with eta = 1 is ancestral sampling on the respaced chain (Song et al. 2021): an
    independent formula, equal up to rounding."""
    backbone = smooth_backbone()
    x = 2 * _images() - 1
    mimic = _mimic(backbone, rho=0.0, start="diffused", t_star=0.1, stride=10)
    ddpm = DiffPureDDPM(backbone, t_star=0.1, stride=10, variance="posterior")
    assert mimic.n_steps == ddpm.n_steps == 10
    assert torch.allclose(mimic.purify_signed(x, SeededNoise(5)), ddpm.purify_signed(x, SeededNoise(5)), atol=1e-10)


def _mean_distance(purifier, x, draws=6):
    return sum(((purifier.purify(x, SeededNoise(d)) - x) ** 2).mean().item() for d in range(draws)) / draws


@pytest.mark.parametrize(
    ("build", "key", "scales"),
    [(_gdmp, "guide_scale", (0.0, 30000.0, 300000.0)), (_mimic, "rho", (0.0, 300.0, 3000.0))],
)
def test_distance_to_the_input_shrinks_as_guidance_grows(build, key, scales):
    backbone = smooth_backbone()
    x = _images(batch=4)
    distances = [_mean_distance(build(backbone, **{key: scale}), x) for scale in scales]
    assert distances[0] > distances[1] > distances[2], distances


@pytest.mark.parametrize("build", [_gdmp, _mimic])
def test_an_images_guidance_does_not_depend_on_its_batch(build):
    backbone = smooth_backbone()
    purifier = build(backbone)
    batch = 2 * _images(batch=4) - 1
    tape = NoiseTape(SeededNoise(9))
    together = purifier.purify_signed(batch, tape)
    alone_noise = RecordedNoise({key: draw[1:2] for key, draw in tape.draws.items()})
    alone = purifier.purify_signed(batch[1:2], alone_noise)
    assert torch.allclose(alone, together[1:2], atol=1e-10)


def _directional_check(purifier, x, direction, weights):
    def objective(inputs):
        return (purifier.purify_signed(inputs, SeededNoise(3)) * weights).sum()

    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(x), x)
    h = 1e-6
    with torch.no_grad():
        numeric = (objective(x + h * direction) - objective(x - h * direction)) / (2 * h)
    return (grad * direction).sum(), numeric


@pytest.mark.parametrize(
    ("build", "kwargs"),
    [
        (_gdmp, {"guide_scale": 300000.0, "n_repeats": 2}),
        (_gdmp, {"guide_scale": 300000.0, "n_repeats": 2, "distance": "ssim"}),
        (_mimic, {"rho": 3000.0, "start": "diffused", "t_star": 0.3, "stride": 30}),
    ],
)
@pytest.mark.parametrize("checkpoint_steps", [False, True])
def test_full_gradient_matches_finite_differences_and_guidance_blind_does_not(build, kwargs, checkpoint_steps):
    backbone = smooth_backbone()
    x = 2 * _images(batch=2) - 1
    gen = torch.Generator().manual_seed(1)
    direction = torch.randn(x.shape, dtype=x.dtype, generator=gen)
    weights = torch.randn(x.shape, dtype=x.dtype, generator=gen)
    full = build(backbone, checkpoint_steps=checkpoint_steps, **kwargs)
    analytic, numeric = _directional_check(full, x, direction, weights)
    assert torch.isclose(analytic, numeric, rtol=1e-5, atol=1e-8), (analytic, numeric)
    blind = build(backbone, checkpoint_steps=checkpoint_steps, grad_mode="guidance_blind", **kwargs)
    blind_analytic, blind_numeric = _directional_check(blind, x, direction, weights)
    assert torch.isclose(blind_numeric, numeric)  # same function
    assert (blind_analytic - numeric).abs() > 1e-3 * numeric.abs()  # a different gradient


def test_released_mimicdiffusion_has_zero_exact_input_gradient():
    """From pure noise the input enters only through sign(x0_hat - x_in) terms, whose derivative
    in x_in is zero almost everywhere: exact autograd gives the attack no signal."""
    purifier = _mimic(smooth_backbone())
    x = _images().requires_grad_(True)
    (grad,) = torch.autograd.grad(purifier.purify_signed(2 * x - 1, SeededNoise(2)).sum(), x, allow_unused=True)
    assert grad is None or torch.count_nonzero(grad) == 0
    assert not torch.equal(
        purifier.purify_signed(2 * _images() - 1, SeededNoise(2)),
        purifier.purify_signed(2 * _images(seed=1) - 1, SeededNoise(2)),
    )  # yet the output depends on the input


def test_nearest_short_range_term_duplicates_the_long_range_one_bicubic_does_not():
    x0_hat, reference = 2 * _images() - 1, 2 * _images(seed=3) - 1
    for operator, duplicates in (("nearest", True), ("bicubic", False)):
        purifier = _mimic(smooth_backbone(), operator=operator)
        long_range, short_range = purifier.guidance_terms(x0_hat, reference)
        assert torch.allclose(long_range, short_range, rtol=1e-12) is duplicates
    assert torch.allclose(long_range * 16, channel_l1_distance(x0_hat, reference))


def test_ssim_of_an_image_with_itself_is_one_and_drops_with_noise():
    x = _images()
    assert torch.allclose(structural_similarity(x, x), torch.ones(3, dtype=x.dtype))
    assert (structural_similarity(x, x + 0.2 * torch.randn_like(x)) < 0.9).all()


def test_guidance_blind_is_refused_for_unguided_purifiers_and_gdmp_needs_an_eps():
    with pytest.raises(ConfigError, match=r"purifier\.grad_mode.*no guidance"):
        DiffPure(smooth_backbone(), grad_mode="guidance_blind", dt=0.01)
    with pytest.raises(ConfigError, match=r"purifier\.guide_eps"):
        GDMP(smooth_backbone())


def test_an_output_without_a_path_to_the_input_gets_a_zero_gradient_not_an_error():
    purifier = _mimic(smooth_backbone(torch.float32), grad_mode="guidance_blind")
    x = _images(dtype=torch.float32).requires_grad_(True)
    (grad,) = torch.autograd.grad(purifier(x).sum(), x)
    assert torch.count_nonzero(grad) == 0
