"""The purifier contract (:mod:`advpure.purifiers.protocol`), checked on every option of
``conf/purifier/`` built as run.py builds it: the digits default, ``budget=cpu_quick``, the shipped
models, ``build_purifier`` with the threat model's eps, a batch of 3 test images.

One test per clause and per option (diffusers' common test per family), plus the resize wrapper
(``diffusion.image_size`` set: inputs of another size are resized to it and back) and
MimicDiffusion from the diffused input (the released start, from pure noise, has an exactly zero
input gradient, so its finite-difference check is 0 = 0; the diffused start makes the check bite).
The ``check_*`` functions are the contract; tests/test_contributing.py runs them on a new purifier.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from hydra.utils import get_class
from torch import nn

from advpure.api import threat_eps
from advpure.config.enums import GradMode
from advpure.data.digits import DigitsDataModule
from advpure.purifiers.noise import SeededNoise
from advpure.purifiers.protocol import REQUIRED_SETTINGS, Purifier, capabilities
from advpure.tasks.components import build_purifier
from tests.compose_cache import make_fast_compose
from tests.conftest import group_options

pytestmark = pytest.mark.usefixtures("single_thread")
fast_compose = pytest.fixture(scope="module")(make_fast_compose)

CASES: dict[str, tuple[str, ...]] = {option: (f"purifier={option}",) for option in group_options("purifier")}
CASES["diffpure+image_size"] = ("purifier=diffpure", "diffusion.image_size=8")  # the resize wrapper
GRADIENT_CASES = {**CASES, "mimicdiffusion+diffused": ("purifier=mimicdiffusion", "purifier.start=diffused")}
INPUT_SIDE = {"diffpure+image_size": 6}  # resized 6 -> 8 -> 6 around the purifier
ZERO_INPUT_GRADIENT = {
    "mimicdiffusion": "from pure noise the input enters only through sign(x0_hat - x_in), whose derivative is 0 "
    "almost everywhere (docs/guide.md, gradient masking)",
}


# ----------------------------------------------------------------------------- the contract


def check_declarations(purifier: nn.Module, purifier_class: type, grad_mode: GradMode) -> None:
    """An ``nn.Module`` satisfying :class:`Purifier`, whose class declares (for start-up
    validation) what the instance does, with the configured grad mode."""
    assert isinstance(purifier, nn.Module)
    assert isinstance(purifier, Purifier), f"{type(purifier).__name__} lacks part of the Purifier protocol"
    declared = capabilities(purifier_class)
    built = (purifier.name, purifier.uses_backbone, purifier.supports_adjoint, purifier.supports_guidance)
    assert built == (declared.name, declared.uses_backbone, declared.supports_adjoint, declared.supports_guidance)
    assert isinstance(purifier.grad_mode, GradMode) and purifier.grad_mode == grad_mode


def check_shape_and_range(purifier: Purifier, x: torch.Tensor) -> None:
    """x (B, C, H, W) in [0, 1] -> the same shape and dtype, finite, in [0, 1]; K copies ->
    (K, B, C, H, W) in [0, 1]; global noise when no source is given."""
    with torch.no_grad():
        out = purifier(x)
        copies = purifier.purify_copies(x, 2)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert copies.shape == (2, *x.shape) and copies.dtype == x.dtype
    assert torch.isfinite(copies).all() and copies.min() >= 0.0 and copies.max() <= 1.0


def check_seeded_replay(purifier: Purifier, x: torch.Tensor) -> None:
    """The same :class:`SeededNoise` replays the same purification, bit for bit; copy k of image
    b is row k * B + b of one batched call; another seed gives another draw (if it draws)."""
    with torch.no_grad():
        first = purifier(x, SeededNoise(5))
        assert torch.equal(first, purifier(x, SeededNoise(5)))
        copies = purifier.purify_copies(x, 2, SeededNoise(5))
        assert torch.equal(copies, purifier.purify_copies(x, 2, SeededNoise(5)))
        assert torch.equal(copies, purifier(x.repeat(2, 1, 1, 1), SeededNoise(5)).view(2, *x.shape))
        if purifier.uses_backbone:
            assert not torch.equal(first, purifier(x, SeededNoise(6)))


def check_settings(purifier: Purifier) -> dict:
    """``settings()`` is JSON for the result files and names the purifier, its grad mode and
    whether that mode's gradient is an approximation."""
    settings = purifier.settings()
    assert set(REQUIRED_SETTINGS) <= set(settings), f"settings() lacks {set(REQUIRED_SETTINGS) - set(settings)}"
    assert settings["name"] == purifier.name and settings["grad_mode"] == purifier.grad_mode.value
    assert isinstance(settings["gradient_is_approximation"], bool)
    json.dumps(settings)
    return settings


def directional_derivatives(purifier: Purifier, x: torch.Tensor, seed: int = 0) -> tuple[float, float, torch.Tensor]:
    """(autograd, central finite difference, gradient) of <w, purifier(x)> along one random
    direction, the noise fixed (``SeededNoise(3)``); x and the purifier in float64."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(x.shape, dtype=x.dtype, generator=generator)
    weights = torch.randn(x.shape, dtype=x.dtype, generator=generator)

    def objective(inp: torch.Tensor) -> torch.Tensor:
        return (purifier(inp, SeededNoise(3)) * weights).sum()

    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(leaf), leaf, allow_unused=True)
    grad = torch.zeros_like(x) if grad is None else grad
    h = 1e-6
    with torch.no_grad():
        numeric = (objective(x + h * direction) - objective(x - h * direction)) / (2 * h)
    return float((grad * direction).sum()), float(numeric), grad


def check_full_gradient(purifier: Purifier, x: torch.Tensor) -> torch.Tensor:
    """Under ``grad_mode=full`` autograd's directional derivative equals a central finite
    difference (float64, relative 1e-6): the exact gradient of the real purification."""
    assert purifier.grad_mode == GradMode.full
    analytic, numeric, grad = directional_derivatives(purifier, x)
    assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9), (analytic, numeric)
    return grad


# ----------------------------------------------------------------------------- every option


@pytest.fixture(scope="module")
def digits_images() -> torch.Tensor:
    datamodule = DigitsDataModule()
    datamodule.setup()
    return torch.stack([datamodule.test_set[i][0] for i in range(3)])


def images_for(case: str, digits: torch.Tensor) -> torch.Tensor:
    side = INPUT_SIDE.get(case, digits.shape[-1])
    return digits[..., :side, :side].contiguous()


@pytest.fixture(scope="module")
def built(fast_compose):
    """``built(case, *overrides)`` -> (purifier in eval mode, its config node), cached."""
    cache: dict[tuple[str, ...], tuple[nn.Module, object]] = {}

    def _build(case: str, *overrides: str):
        key = (case, *overrides)
        if key not in cache:
            cfg = fast_compose(*GRADIENT_CASES[case], *overrides)
            purifier = build_purifier(cfg.purifier, cfg.diffusion, threat_eps(cfg)).eval()
            cache[key] = (purifier, cfg.purifier)
        return cache[key]

    return _build


@pytest.mark.parametrize("case", CASES)
def test_declares_the_protocol_its_class_states(case, built):
    purifier, node = built(case)
    check_declarations(purifier, get_class(node._target_), GradMode(node.grad_mode))


@pytest.mark.parametrize("case", CASES)
def test_maps_unit_range_images_to_the_same_shape_and_range(case, built, digits_images):
    check_shape_and_range(built(case)[0], images_for(case, digits_images))


@pytest.mark.parametrize("case", CASES)
def test_the_same_seeded_noise_replays_the_same_purification(case, built, digits_images):
    check_seeded_replay(built(case)[0], images_for(case, digits_images))


@pytest.mark.parametrize("case", CASES)
def test_settings_name_the_purifier_and_whether_its_gradient_is_exact(case, built):
    purifier, _ = built(case)
    assert check_settings(purifier)["gradient_is_approximation"] is False  # grad_mode=full everywhere by default
    approximate = built(case, "purifier.grad_mode=bpda")[0]
    assert check_settings(approximate)["gradient_is_approximation"] is purifier.uses_backbone  # the identity's is exact


@pytest.mark.parametrize("case", GRADIENT_CASES)
def test_full_gradient_matches_a_finite_difference(case, built, digits_images):
    purifier = copy.deepcopy(built(case)[0]).double()
    grad = check_full_gradient(purifier, images_for(case, digits_images).double().clamp(0.05, 0.95))
    if case in ZERO_INPUT_GRADIENT:
        assert torch.count_nonzero(grad) == 0, ZERO_INPUT_GRADIENT[case]
    else:
        assert grad.abs().sum() > 0


def test_checks_catch_a_purifier_that_breaks_the_contract(digits_images):
    """The checks can fail: a purifier that leaves [0, 1], ignores its noise source, misdeclares
    its class or computes a wrong gradient is caught by the clause it breaks."""

    class Broken(nn.Module):
        name = "broken"
        uses_backbone = True
        supports_adjoint = False
        supports_guidance = False

        def __init__(self, shift: float = 0.0, grad_scale: float = 1.0, ignores_noise: bool = False) -> None:
            super().__init__()
            self.grad_mode = GradMode.full
            self.shift, self.grad_scale, self.ignores_noise = shift, grad_scale, ignores_noise

        def forward(self, x, noise=None):
            z = torch.randn_like(x) if noise is None or self.ignores_noise else noise.normal(0, x)
            value = (x + self.shift + 0.01 * z).clamp(0.0, 1.0 + self.shift)
            return value.detach() + self.grad_scale * (x - x.detach())  # this value, gradient scaled

        def purify_copies(self, x, n_copies, noise=None):
            return self(x.repeat(n_copies, 1, 1, 1), noise).view(n_copies, *x.shape)

        def settings(self):
            return {"name": self.name, "grad_mode": self.grad_mode.value, "gradient_is_approximation": False}

    x = digits_images
    check_shape_and_range(Broken(), x)
    check_seeded_replay(Broken(), x)
    with pytest.raises(AssertionError):
        check_shape_and_range(Broken(shift=0.5), x)
    with pytest.raises(AssertionError):
        check_seeded_replay(Broken(ignores_noise=True), x)
    x64 = x.double().clamp(0.05, 0.95)
    check_full_gradient(Broken().double(), x64)
    with pytest.raises(AssertionError):
        check_full_gradient(Broken(grad_scale=2.0).double(), x64)

    class Misdeclared(Broken):
        supports_guidance = True

    check_declarations(Broken(), Broken, GradMode.full)
    with pytest.raises(AssertionError):
        check_declarations(Broken(), Misdeclared, GradMode.full)
