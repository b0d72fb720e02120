"""diffusion=guided_imagenet256: guided-diffusion's 256x256 unconditional model against the original code.

The architecture comes from the original package (guided-diffusion-sdk, the ``published`` extra);
these tests check that advpure builds it with the published flags (full size, on the meta
device), loads weights saved in the original layout (a small network of the same class, random
weights), calls it as the original is called, keeps eps = the first 3 of its 6 output channels,
reproduces its float16 mode, refuses unsafe or mismatched files, and fails at start-up without
the package.
"""

from __future__ import annotations

import pickle
import sys

import pytest
import torch

from advpure.config.validate import validate_config
from advpure.diffusion.guided import PUBLISHED_IMAGENET256_NET, PUBLISHED_IMAGENET256_PARAMETERS, GuidedEpsilon
from advpure.diffusion.precision import LowPrecisionBackbone
from advpure.errors import CheckpointError, ConfigError
from advpure.instantiate import build
from advpure.purifiers.resize import ResizedPurifier
from advpure.tasks.components import build_backbone, build_purifier
from tests.conftest import CreatesFileWhenUnpickled

script_util = pytest.importorskip("guided_diffusion.script_util")

# The flags DiffPure (and guided-diffusion's README) give for 256x256_diffusion_uncond.pt.
DIFFPURE_FLAGS = {
    "attention_resolutions": "32,16,8",
    "class_cond": False,
    "diffusion_steps": 1000,
    "image_size": 256,
    "learn_sigma": True,
    "noise_schedule": "linear",
    "num_channels": 256,
    "num_head_channels": 64,
    "num_res_blocks": 2,
    "resblock_updown": True,
    "use_fp16": True,
    "use_scale_shift_norm": True,
}
# The same architecture class and flags, small: 32x32, 32 channels, two levels.
TINY = {"image_size": 32, "num_channels": 32, "channel_mult": "1,2", "attention_resolutions": "16,8"}
TINY |= {"num_head_channels": 16, "num_res_blocks": 1}
TINY_OVERRIDES = [
    f"diffusion.net.{key}={value!r}" if isinstance(value, str) else f"diffusion.net.{key}={value}"
    for key, value in TINY.items()
]


@pytest.fixture(autouse=True)
def _one_thread(request):
    """Tiny kernels gain nothing from threads on a shared 2-core machine (the full-size test keeps them)."""
    if "slow" in request.keywords:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def original_model(flags: dict, *, use_fp16: bool = False) -> torch.nn.Module:
    """guided-diffusion's own model, built as DiffPure builds it (``create_model_and_diffusion``)."""
    settings = {**script_util.model_and_diffusion_defaults(), **DIFFPURE_FLAGS, **flags, "use_fp16": use_fp16}
    model, _ = script_util.create_model_and_diffusion(**settings)
    return model


@pytest.fixture(scope="module")
def tiny_original(tmp_path_factory):
    """A tiny original model with random weights (its output layer is zero-initialized, so every
    parameter is redrawn), saved with torch.save in the original layout: (model, path)."""
    torch.manual_seed(0)
    model = original_model(TINY).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.05 * torch.randn_like(parameter))
    path = tmp_path_factory.mktemp("guided") / "256x256_diffusion_uncond.pt"
    torch.save(model.state_dict(), path)
    return model, path


def tiny_cfg(compose_cfg, *overrides: str):
    cfg = compose_cfg("diffusion=guided_imagenet256", *TINY_OVERRIDES, *overrides)
    validate_config(cfg)
    return cfg


def test_option_builds_the_published_network(compose_cfg):
    cfg = compose_cfg("diffusion=guided_imagenet256")
    typed = validate_config(cfg)
    assert typed.diffusion.precision.value == "fp16" and typed.diffusion.image_size == 256
    with torch.device("meta"):
        backbone = build(cfg.diffusion.net, key="diffusion.net")
        original = original_model({}, use_fp16=True)
    assert isinstance(backbone, GuidedEpsilon)
    net = {key: value for key, value in cfg.diffusion.net.items() if key != "_target_"}
    assert net == PUBLISHED_IMAGENET256_NET
    expected = {name: tuple(t.shape) for name, t in original.state_dict().items()}
    assert {name: tuple(t.shape) for name, t in backbone.unet.state_dict().items()} == expected
    assert len(expected) == 566
    assert sum(p.numel() for p in backbone.parameters()) == PUBLISHED_IMAGENET256_PARAMETERS == 552_814_086
    assert backbone.unet.out_channels == 6 and backbone.unet.in_channels == 3


def test_original_layout_weights_load_and_give_the_original_eps(compose_cfg, tiny_original):
    original, path = tiny_original
    cfg = tiny_cfg(compose_cfg, f"diffusion.weights={path}")
    backbone = build_backbone(cfg.diffusion, require_weights=True).eval()
    assert isinstance(backbone, GuidedEpsilon)
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([0.1, 0.731])
    with torch.no_grad():
        full = original(x, t * 999)
        eps = backbone(x, t)
        assert full.shape == (2, 6, 32, 32) and eps.shape == (2, 3, 32, 32)
        assert torch.equal(eps, full[:, :3])
        assert torch.equal(backbone(x, torch.tensor(0.5)), original(x, torch.full((2,), 499.5))[:, :3])


def test_fp16_is_the_original_use_fp16_and_bf16_is_close(tiny_original):
    original, path = tiny_original
    x = torch.randn(1, 3, 32, 32)
    t = torch.tensor([0.3])
    reference = GuidedEpsilon(**TINY)
    reference.load_published_weights(path)
    with torch.no_grad():
        fp32 = reference(x, t)
        half_original = original_model(TINY, use_fp16=True).eval()
        half_original.load_state_dict(original.state_dict())
        half_original.convert_to_fp16()  # what DiffPure does when use_fp16 is set
        expected = half_original(x, t * 999)[:, :3]
        for precision, tolerance in (("fp16", None), ("bf16", 0.05)):
            backbone = GuidedEpsilon(**TINY)
            backbone.load_published_weights(path)
            low = LowPrecisionBackbone(backbone, precision)
            eps = low(x, t)
            assert eps.dtype == torch.float32 and low.settings() == {"precision": precision, "mode": "native"}
            if tolerance is None:
                assert torch.equal(eps, expected)
            else:
                assert ((eps - fp32).norm() / fp32.norm()).item() < tolerance


def test_resized_diffpure_on_the_guided_backbone(compose_cfg, tiny_original):
    """DiffPure's ImageNet path in small: the data is 28x28, the model works at 32x32."""
    _, path = tiny_original
    cfg = tiny_cfg(
        compose_cfg,
        f"diffusion.weights={path}",
        "diffusion.image_size=32",
        "diffusion.precision=fp32",
        "purifier=diffpure",
        "purifier.t_star=0.003",
        "purifier.dt=0.001",
    )
    purifier = build_purifier(cfg.purifier, cfg.diffusion).requires_grad_(False)
    assert isinstance(purifier, ResizedPurifier)
    x = torch.rand(1, 3, 28, 28, requires_grad=True)
    out = purifier(x)
    assert out.shape == x.shape
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    settings = purifier.settings()
    assert settings["name"] == "diffpure" and settings["image_size"] == 32
    assert settings["resize"]["resized_from"] == [[28, 28]]
    assert "backbone" not in settings  # fp32: the backbone itself


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_pickle_that_runs_code_is_refused_without_running_it(compose_cfg, tmp_path, tiny_original, writer):
    original, _ = tiny_original
    marker = tmp_path / "created_by_unpickling"
    path = tmp_path / "256x256_diffusion_uncond.pt"
    payload = {**original.state_dict(), "payload": CreatesFileWhenUnpickled(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    cfg = tiny_cfg(compose_cfg, f"diffusion.weights={path}")
    with pytest.raises(CheckpointError, match="weights_only") as error:
        build_backbone(cfg.diffusion, require_weights=True)
    assert str(path) in str(error.value)
    assert not marker.exists()


def test_mismatched_state_dicts_name_the_file_and_the_fix(compose_cfg, tmp_path, tiny_original):
    original, _ = tiny_original
    state = original.state_dict()
    missing = tmp_path / "missing.pt"
    torch.save({k: v for k, v in state.items() if k != "out.2.bias"}, missing)
    with pytest.raises(CheckpointError, match=r"1 missing keys \['out\.2\.bias'\].*guided_imagenet256") as error:
        build_backbone(tiny_cfg(compose_cfg, f"diffusion.weights={missing}").diffusion, require_weights=True)
    assert str(missing) in str(error.value)
    network = GuidedEpsilon(**TINY)
    wrong = tmp_path / "wrong_shape.pt"
    torch.save({**state, "out.2.bias": torch.zeros(3)}, wrong)
    with pytest.raises(CheckpointError, match=r"out\.2\.bias: file \(3,\) vs model \(6,\)"):
        network.load_published_weights(wrong)
    listed = tmp_path / "list.pt"
    torch.save(list(state.values()), listed)
    with pytest.raises(CheckpointError, match=r"holds a list, not a state dict"):
        network.load_published_weights(listed)
    # The published format belongs to the network class: one without it refuses diffusion.weights.
    cfg = compose_cfg("diffusion.checkpoint=null", f"diffusion.weights={wrong}")
    with pytest.raises(ConfigError) as config_error:
        build_backbone(cfg.diffusion, require_weights=True)
    assert config_error.value.key == "diffusion.weights"


def test_without_the_package_start_up_fails_naming_the_install(compose_cfg, monkeypatch):
    cfg = compose_cfg("diffusion=guided_imagenet256")
    monkeypatch.setitem(sys.modules, "guided_diffusion", None)
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[published\]'") as error:
        validate_config(cfg)
    assert error.value.key == "diffusion.net._target_"
    with pytest.raises(ConfigError, match="published"):
        GuidedEpsilon(**TINY)
    validate_config(compose_cfg("diffusion=ddpm_cifar10"))  # other options do not need it


@pytest.mark.slow
def test_full_size_published_network_matches_the_original(tmp_path):
    """The 552.8M-parameter network itself: random weights saved in the original layout, loaded
    through advpure, one 256x256 forward pass against the original module (fp32)."""
    torch.manual_seed(0)
    original = original_model({}).eval()
    with torch.no_grad():
        for parameter in original.parameters():
            parameter.copy_(0.02 * torch.randn_like(parameter))
    path = tmp_path / "256x256_diffusion_uncond.pt"
    torch.save(original.state_dict(), path)
    backbone = GuidedEpsilon(**PUBLISHED_IMAGENET256_NET).eval()
    assert backbone.load_published_weights(path)["n_tensors"] == 566
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(backbone(x, torch.tensor([0.15])), original(x, torch.tensor([0.15 * 999]))[:, :3])
