"""diffusion.precision (a backbone computing in fp16/bf16) and diffusion.image_size (purify at the model's size)."""

from __future__ import annotations

import pytest
import torch

from advpure.config.enums import GradMode
from advpure.config.validate import validate_config
from advpure.diffusion.backbone import UNetEpsilon
from advpure.diffusion.precision import LowPrecisionBackbone, with_precision
from advpure.purifiers.diffpure import DiffPure
from advpure.purifiers.gradients import gradient_rule
from advpure.purifiers.resize import ResizedPurifier, resized
from advpure.tasks.components import build_purifier

TINY = dict(
    sample_size=8,
    in_channels=1,
    out_channels=1,
    block_out_channels=(8, 16),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=1,
    norm_num_groups=4,
    attention_head_dim=8,
)


pytestmark = pytest.mark.usefixtures("single_thread")


def conv_backbone(channels: int = 1):
    """A small smooth eps-predictor depending on x and t."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def backbone(x, t):
        return torch.tanh(conv(x)) * (1 + torch.as_tensor(t).reshape(-1, 1, 1, 1))

    return backbone


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).norm() / expected.norm()).item()


# ------------------------------------------------------------------------------ precision


def test_fp32_leaves_the_backbone_itself():
    backbone = UNetEpsilon(**TINY)
    assert with_precision(backbone, "fp32") is backbone


@pytest.mark.parametrize(("precision", "tolerance"), [("bf16", 3e-2), ("fp16", 5e-3)])
def test_autocast_precision_is_close_to_fp32_and_differentiable(precision, tolerance):
    backbone = UNetEpsilon(**TINY).eval()
    low = with_precision(backbone, precision)
    assert isinstance(low, LowPrecisionBackbone) and low.settings() == {"precision": precision, "mode": "autocast"}
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    t = torch.tensor([0.2, 0.9])
    exact = backbone(x, t)
    (exact_grad,) = torch.autograd.grad((exact**2).sum(), x)
    eps = low(x, t)
    assert eps.dtype == torch.float32 and next(backbone.parameters()).dtype == torch.float32
    assert 0 < relative_error(eps, exact) < tolerance  # computed in the low format, not in float32
    (grad,) = torch.autograd.grad((eps**2).sum(), x)
    assert grad.dtype == torch.float32 and relative_error(grad, exact_grad) < 10 * tolerance


def test_a_purifier_records_its_backbone_precision():
    purifier = DiffPure(with_precision(UNetEpsilon(**TINY).eval(), "bf16"), t_star=0.002, dt=1e-3, seed=0)
    out = purifier(torch.rand(1, 1, 8, 8))
    assert out.dtype == torch.float32
    assert purifier.settings()["backbone"] == {"precision": "bf16", "mode": "autocast"}
    assert "backbone" not in DiffPure(UNetEpsilon(**TINY), t_star=0.002, dt=1e-3).settings()


# ------------------------------------------------------------------------------ resize


def test_resized_purifier_works_at_its_size_and_returns_the_input_size():
    seen = []
    inner_backbone = conv_backbone(3)

    def backbone(x, t):
        seen.append(tuple(x.shape[-2:]))
        return inner_backbone(x, t)

    purifier = ResizedPurifier(DiffPure(backbone, t_star=0.003, dt=1e-3, seed=1), 16)
    x = torch.rand(2, 3, 12, 12, requires_grad=True)
    out = purifier(x)
    assert out.shape == x.shape and out.min() >= 0.0 and out.max() <= 1.0
    assert set(seen) == {(16, 16)}
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    copies = purifier.purify_copies(x.detach(), 3)
    assert copies.shape == (3, 2, 3, 12, 12)
    settings = purifier.settings()
    assert settings["name"] == "diffpure" and settings["t_star"] == 0.003 and settings["image_size"] == 16
    assert settings["resize"]["mode"] == "bilinear" and settings["resize"]["resized_from"] == [[12, 12]]


def test_resize_is_differentiable_and_matches_bilinear_up_and_down():
    """With an identity-like inner purifier the result is the composition of the two bilinear resizes."""

    class Identity(torch.nn.Module):
        grad_mode = GradMode.full
        name = "identity"

        def forward(self, x, noise=None):
            return x

        def settings(self):
            return {"name": self.name}

    x = torch.rand(1, 3, 7, 9, dtype=torch.float64, requires_grad=True)
    purifier = ResizedPurifier(Identity(), 13)
    up = torch.nn.functional.interpolate(x, size=(13, 13), mode="bilinear", align_corners=False)
    expected = torch.nn.functional.interpolate(up, size=(7, 9), mode="bilinear", align_corners=False)
    assert torch.equal(purifier(x), expected)
    assert torch.autograd.gradcheck(lambda v: purifier(v), (x,))


def test_same_size_is_no_resize_bit_for_bit():
    inner = DiffPure(conv_backbone(3), t_star=0.003, dt=1e-3, seed=7)
    purifier = ResizedPurifier(inner, 16)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(purifier(x), inner(x))
    assert purifier.settings()["resize"]["resized_from"] == []
    assert resized(inner, None) is inner


def test_resized_purifier_keeps_the_inner_grad_mode():
    inner = DiffPure(conv_backbone(3), t_star=0.003, dt=1e-3, grad_mode=GradMode.blind)
    purifier = ResizedPurifier(inner, 16)
    assert purifier.grad_mode == GradMode.blind and gradient_rule(purifier).attacks_classifier_only
    assert purifier.settings()["grad_mode"] == "blind"


def test_build_purifier_applies_image_size_and_precision_from_the_diffusion_group(compose_cfg):
    cfg = compose_cfg("purifier=diffpure", "purifier.t_star=0.003", "purifier.dt=0.001")
    validate_config(cfg)
    plain = build_purifier(cfg.purifier, cfg.diffusion)
    assert isinstance(plain, DiffPure) and not isinstance(plain.backbone, LowPrecisionBackbone)
    cfg = compose_cfg(
        "purifier=diffpure",
        "purifier.t_star=0.003",
        "purifier.dt=0.001",
        "diffusion.image_size=8",
        "diffusion.precision=bf16",
    )
    validate_config(cfg)
    purifier = build_purifier(cfg.purifier, cfg.diffusion)
    assert isinstance(purifier, ResizedPurifier) and isinstance(purifier.purifier.backbone, LowPrecisionBackbone)
    assert purifier(torch.rand(2, 1, 6, 6)).shape == (2, 1, 6, 6)
    with pytest.raises(Exception, match="image_size"):
        validate_config(compose_cfg("diffusion.image_size=0"))


def test_cpu_precision_warnings_follow_the_cpus_bf16_instructions():
    from advpure.config.enums import Precision
    from advpure.diffusion.precision import slow_on_this_cpu

    avx2_only = {"fpu", "avx2", "fma"}
    assert "36x slower" in slow_on_this_cpu(Precision.bf16, avx2_only)
    assert slow_on_this_cpu(Precision.bf16, avx2_only | {"avx512_bf16"}) is None
    assert slow_on_this_cpu(Precision.bf16, avx2_only | {"amx_bf16"}) is None
    assert "float16 convolutions" in slow_on_this_cpu(Precision.fp16, avx2_only | {"amx_bf16"})
    assert slow_on_this_cpu(Precision.fp32, avx2_only) is None
