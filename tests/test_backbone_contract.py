"""The backbone contract (:class:`advpure.diffusion.backbone.EpsilonBackbone`), checked on every
option of ``conf/diffusion/``: ``backbone(x, t) -> eps`` with x (B, C, H, W) in [-1, 1] and t (B,)
or a scalar in [0, 1], eps of x's shape and dtype, finite, each image's eps independent of the
rest of its batch.

Which network each option is checked on:
- ``digits_unet``: the shipped weights, built as a purifier gets it
  (:func:`advpure.tasks.components.purification_backbone`), also with ``diffusion.precision=bf16``
  and ``diffusion.channels_last=true`` (the wrappers keep the contract); and it must be a noise
  predictor: on a diffused test image its eps is nearer the noise drawn than zero is.
- ``ddpm_cifar10``, ``guided_imagenet256``, ``score_sde_cifar10``: their weights are published files
  this machine does not have, so each is built freshly initialized from its option with the
  overrides in ``TINY`` (same class and code, fewer channels and a smaller image). A fresh network
  predicts nothing, so only the signature is checked (guided-diffusion zero-initializes its output
  layer: its eps is 0 until trained).
"""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from advpure.data.digits import DigitsDataModule
from advpure.diffusion.schedule import DiscreteSchedule
from advpure.diffusion.score_sde import PUBLISHED_CIFAR10_NET, net_kwargs_from_score_sde_config
from advpure.instantiate import build
from advpure.tasks.components import purification_backbone
from tests.compose_cache import make_fast_compose
from tests.conftest import ROOT, group_options

pytestmark = pytest.mark.usefixtures("single_thread")
fast_compose = pytest.fixture(scope="module")(make_fast_compose)

_SCORE_SDE_TINY = net_kwargs_from_score_sde_config(
    json.loads((ROOT / "tests" / "golden" / "score_sde_tiny_config.json").read_text())
)
TINY: dict[str, dict[str, object]] = {
    "ddpm_cifar10": {"block_out_channels": [16, 32, 32, 32], "norm_num_groups": 8, "layers_per_block": 1},
    "guided_imagenet256": {
        "image_size": 32,
        "num_channels": 32,
        "num_res_blocks": 1,
        "channel_mult": "1,2",
        "attention_resolutions": "16",
        "num_head_channels": 16,
    },
    # tests/golden's tiny score_sde configuration (16x16, nf 16), as overrides of the published one
    "score_sde_cifar10": {k: v for k, v in _SCORE_SDE_TINY.items() if v != PUBLISHED_CIFAR10_NET[k]},
}
CASES: dict[str, tuple[str, ...]] = {option: (f"diffusion={option}",) for option in group_options("diffusion")}
CASES["digits_unet+bf16"] = ("diffusion=digits_unet", "diffusion.precision=bf16")
CASES["digits_unet+channels_last"] = ("diffusion=digits_unet", "diffusion.channels_last=true")
FLOAT64_UNSUPPORTED = {
    "guided_imagenet256": "guided-diffusion casts its timestep embedding to the U-Net's own dtype, so it runs on "
    "float32 (or fp16) states only; purifiers keep their state in float32",
}


def option_of(case: str) -> str:
    return CASES[case][0].split("=", 1)[1]


@pytest.fixture(scope="module")
def backbones(fast_compose):
    """``backbones(case)`` -> (backbone in eval mode, (C, H, W) it takes), cached."""
    cache: dict[str, tuple[torch.nn.Module, tuple[int, int, int]]] = {}

    def _get(case: str):
        if case not in cache:
            node = fast_compose(*CASES[case]).diffusion
            option = option_of(case)
            if option in TINY:
                for key, value in TINY[option].items():
                    OmegaConf.update(node, f"net.{key}", value)
                backbone = build(node.net, key="diffusion.net")
            else:
                backbone = purification_backbone(node)
            net = node.net
            side = int(net.get("sample_size") or net.get("image_size"))
            channels = int(net.get("in_channels") or net.get("num_channels") or 3)
            if option == "guided_imagenet256":
                channels = 3  # its num_channels is the width, not the image's channels
            cache[case] = (backbone.eval(), (channels, side, side))
        return cache[case]

    return _get


def _inputs(shape: tuple[int, int, int], dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, *shape, generator=generator).to(dtype) * 2 - 1
    return x, torch.tensor([0.05, 0.5, 1.0], dtype=dtype)


@pytest.mark.parametrize("case", CASES)
def test_eps_has_the_input_shape_and_dtype_and_is_finite(case, backbones):
    backbone, shape = backbones(case)
    x, t = _inputs(shape)
    with torch.no_grad():
        eps = backbone(x, t)
    assert eps.shape == x.shape and eps.dtype == x.dtype
    assert torch.isfinite(eps).all()


@pytest.mark.parametrize("case", CASES)
def test_a_scalar_time_means_that_time_for_every_image(case, backbones):
    backbone, shape = backbones(case)
    x, _ = _inputs(shape)
    with torch.no_grad():
        scalar, batched = backbone(x, torch.tensor(0.3)), backbone(x, torch.full((3,), 0.3))
    assert torch.allclose(scalar, batched, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_each_images_eps_is_independent_of_its_batch(case, backbones):
    backbone, shape = backbones(case)
    x, t = _inputs(shape)
    with torch.no_grad():
        whole, alone = backbone(x, t), backbone(x[1:2], t[1:2])
    assert torch.allclose(whole[1:2], alone, atol=1e-2 if "bf16" in case else 1e-5)


@pytest.mark.parametrize("case", CASES)
def test_float64_states_give_float64_eps(case, backbones):
    if case in FLOAT64_UNSUPPORTED:
        pytest.skip(FLOAT64_UNSUPPORTED[case])
    backbone, shape = backbones(case)
    x, t = _inputs(shape, torch.float64)
    double = backbone.double() if isinstance(backbone, torch.nn.Module) else backbone
    try:
        with torch.no_grad():
            eps = double(x, t)
    finally:
        double.float()
    assert eps.shape == x.shape and eps.dtype == torch.float64 and torch.isfinite(eps).all()


@pytest.mark.parametrize("case", [c for c in CASES if option_of(c) == "digits_unet"])
def test_the_shipped_model_predicts_the_noise_at_every_level(case, backbones):
    """x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) z at steps 50, 300, 900: the predicted eps
    is nearer z than the zero prediction (mean squared error below 1), and depends on t."""
    backbone, _ = backbones(case)
    datamodule = DigitsDataModule()
    datamodule.setup()
    x0 = torch.stack([datamodule.test_set[i][0] for i in range(16)]) * 2 - 1
    alpha_bars = DiscreteSchedule(1e-4, 0.02, 1000).alpha_bars
    generator = torch.Generator().manual_seed(1)
    predictions = []
    for step in (50, 300, 900):
        z = torch.randn(x0.shape, generator=generator)
        ab = float(alpha_bars[step])
        t = torch.full((x0.shape[0],), (step + 1) / 1000)
        with torch.no_grad():
            eps = backbone(ab**0.5 * x0 + (1 - ab) ** 0.5 * z, t)
        assert ((eps - z) ** 2).mean() < 0.8 * (z**2).mean(), step
        predictions.append(eps)
    assert not torch.allclose(predictions[0], predictions[2])
