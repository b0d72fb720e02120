"""diffusion=ddpm_cifar10: the diffusers-format DDPM CIFAR-10 UNet (google/ddpm-cifar10-32) behind every purifier."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DModel

from advpure.config.validate import validate_config
from advpure.diffusion.backbone import UNetEpsilon
from advpure.instantiate import build
from advpure.tasks.components import build_backbone, build_purifier

# The published config.json of google/ddpm-cifar10-32 (diffusers 0.0.4 layout), less _class_name
# and _diffusers_version.
PUBLISHED_CONFIG = {
    "act_fn": "silu",
    "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 32,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
PUBLISHED_PARAMETERS = 35_746_307  # "35.7M"

# The published architecture's block types and flags, with few channels (32x32 input, 3 channels).
TINY = {
    **PUBLISHED_CONFIG,
    "block_out_channels": [8, 16, 16, 16],
    "layers_per_block": 1,
    "norm_num_groups": 4,
}

# Overrides that make each purifier run a handful of steps (the published ones run 36 to 400).
SHORT = {
    "diffpure": ["purifier.t_star=0.004", "purifier.dt=0.001"],
    "diffpure_ddpm": ["purifier.t_star=0.004"],
    "gdmp": ["purifier.t_star=0.004", "purifier.n_repeats=2"],
    "mimicdiffusion": ["purifier.stride=250"],
}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A diffusers-format folder (config.json + safetensors) of a random tiny DDPM UNet, and the module."""
    torch.manual_seed(0)
    unet = UNet2DModel(**TINY).eval()
    with torch.no_grad():
        for parameter in unet.parameters():  # non-zero everywhere (diffusers zero-inits no layer, but be sure)
            parameter.add_(0.02 * torch.randn_like(parameter))
    folder = tmp_path_factory.mktemp("ddpm") / "unet"
    unet.save_pretrained(folder, safe_serialization=True)
    return folder, unet


def test_option_is_the_published_architecture(compose_cfg):
    cfg = compose_cfg("diffusion=ddpm_cifar10")
    validate_config(cfg)
    with torch.device("meta"):
        backbone = build(cfg.diffusion.net, key="diffusion.net")
        published = UNet2DModel(**PUBLISHED_CONFIG)
    assert isinstance(backbone, UNetEpsilon)
    assert sum(p.numel() for p in backbone.parameters()) == PUBLISHED_PARAMETERS
    for key, value in PUBLISHED_CONFIG.items():
        actual = backbone.unet.config[key]
        assert (list(actual) if isinstance(actual, tuple) else actual) == value, key
    expected = {name: tuple(t.shape) for name, t in published.state_dict().items()}
    assert {name: tuple(t.shape) for name, t in backbone.unet.state_dict().items()} == expected


def test_diffusers_folder_loads_through_pretrained_and_matches_the_saved_module(compose_cfg, tiny_folder):
    folder, unet = tiny_folder
    cfg = compose_cfg("diffusion=ddpm_cifar10", f"diffusion.pretrained={folder}")
    validate_config(cfg)
    backbone = build_backbone(cfg.diffusion, require_weights=True).eval()
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([0.05, 0.7])
    with torch.no_grad():
        assert torch.equal(backbone(x, t), unet(x, t * 999).sample)


@pytest.mark.parametrize("purifier", sorted(SHORT))
def test_every_ddpm_purifier_builds_and_differentiates_on_it(compose_cfg, tiny_folder, purifier):
    folder, _ = tiny_folder
    cfg = compose_cfg(
        "diffusion=ddpm_cifar10", f"diffusion.pretrained={folder}", f"purifier={purifier}", *SHORT[purifier]
    )
    validate_config(cfg)
    model = build_purifier(cfg.purifier, cfg.diffusion, threat_eps=8 / 255).requires_grad_(False)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    out = model(x)
    assert out.shape == x.shape and out.min() >= 0.0 and out.max() <= 1.0
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(grad).all()
    if purifier != "mimicdiffusion":  # from noise, it sees the input only through the derivative of an
        assert grad.abs().sum() > 0  # L1 distance (a sign), so its exact input gradient is zero a.e.
