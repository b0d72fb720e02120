"""Backbones: the one signature, and diffusers-format folders loaded without pickles."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DModel

from advpure.diffusion.backbone import UNetEpsilon
from advpure.errors import CheckpointError
from advpure.tasks.components import build_backbone

TINY = dict(
    sample_size=8,
    in_channels=1,
    out_channels=1,
    block_out_channels=(8, 16),
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D"),
    layers_per_block=1,
    norm_num_groups=4,
)


def test_backbone_calls_the_unet_with_label_999_t():
    backbone = UNetEpsilon(**TINY).eval()
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor([0.1, 0.5, 1.0])
    with torch.no_grad():
        direct = backbone.unet(x, t * 999).sample
        assert torch.allclose(backbone(x, t), direct)
        # a scalar t is broadcast over the batch
        assert torch.allclose(backbone(x, torch.tensor(0.5)), backbone(x, torch.full((3,), 0.5)))


def test_diffusers_folder_loads_through_the_diffusion_group(compose_cfg, tmp_path):
    unet = UNet2DModel(**TINY).eval()
    unet.save_pretrained(tmp_path / "unet", safe_serialization=True)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    cfg = compose_cfg("diffusion.checkpoint=null", f"diffusion.pretrained={tmp_path / 'unet'}")
    backbone = build_backbone(cfg.diffusion, require_weights=True).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(backbone(x, torch.tensor([0.2, 0.3])), unet(x, torch.tensor([0.2, 0.3]) * 999).sample)


def test_folder_without_config_or_safetensors_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"config\.json"):
        UNetEpsilon.from_pretrained(str(tmp_path / "empty"))
    unet = UNet2DModel(**TINY)
    unet.save_pretrained(tmp_path / "pickled", safe_serialization=False)  # a .bin pickle only
    with pytest.raises(CheckpointError):
        UNetEpsilon.from_pretrained(str(tmp_path / "pickled"))
