"""score_sde's NCSN++ (DDPM++ deep continuous, DiffPure's CIFAR-10 model) against the golden data in tests/golden."""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.flop_counter import FlopCounterMode

from advpure.config.validate import validate_config
from advpure.diffusion.schedule import VPSchedule
from advpure.diffusion.score_sde import PUBLISHED_CIFAR10_NET, NCSNpp, ScoreSdeEpsilon, net_kwargs_from_score_sde_config
from advpure.diffusion.score_sde_weights import SCORE_SDE_EPSILON_TARGET, load_score_sde_weights
from advpure.errors import CheckpointError, ConfigError
from advpure.tasks.components import build_backbone, net_config
from tests.conftest import ROOT, CreatesFileWhenUnpickled

# Reference data from the original code (see its README.md); outside the repository, beside it.
# A copy of shared/golden (its README says where each file comes from), shipped so CI runs these tests.
GOLDEN = pathlib.Path(os.environ.get("ADVPURE_GOLDEN", ROOT / "tests" / "golden"))
MANIFEST = json.loads((GOLDEN / "score_sde_cifar10_ddpmpp_deep_continuous_manifest.json").read_text())
TINY_CONFIG_PATH = GOLDEN / "score_sde_tiny_config.json"
TINY_NET = net_kwargs_from_score_sde_config(json.loads(TINY_CONFIG_PATH.read_text()))
# The tiny network as overrides of the published option (the keys where the two configs differ).
TINY_OVERRIDES = [
    f"diffusion.net.{key}={value}" for key, value in TINY_NET.items() if value != PUBLISHED_CIFAR10_NET[key]
]


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tiny_weights() -> dict[str, torch.Tensor]:
    """The golden tiny network's state dict (original key layout, parameters ~ N(0, 0.05^2))."""
    return load_file(str(GOLDEN / "score_sde_tiny_weights.safetensors"))


@pytest.fixture(scope="module")
def golden_io() -> dict[str, torch.Tensor]:
    """x (4, 3, 16, 16), t (4,), the original network's output at labels 999 t, and the VP-SDE score."""
    return load_file(str(GOLDEN / "score_sde_tiny_io.safetensors"))


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).norm() / expected.norm()).item()


def assert_reproduces_golden(backbone: torch.nn.Module, golden_io: dict[str, torch.Tensor]) -> None:
    backbone.eval()
    with torch.no_grad():
        eps = backbone(golden_io["x"], golden_io["t"])
    assert relative_error(eps, golden_io["model_output_at_labels_999t"]) < 1e-5


def tiny_parameter_names() -> list[str]:
    with torch.device("meta"):
        return [name for name, _ in NCSNpp(**TINY_NET).named_parameters()]


def write_published_layout(path: pathlib.Path, tiny_weights: dict[str, torch.Tensor]) -> None:
    """score_sde's checkpoint layout: raw weights under ``model`` (``module.`` keys) set to ZERO
    (only the buffer ``sigmas`` is real), the golden weights only in ``ema.shadow_params``."""
    names = tiny_parameter_names()
    raw = {
        f"module.{key}": (value if key == "sigmas" else torch.zeros_like(value)) for key, value in tiny_weights.items()
    }
    optimizer = {
        "state": {index: {"step": torch.tensor(7.0)} for index in range(3)},
        "param_groups": [
            {"lr": 2e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "params": list(range(len(names)))}
        ],
    }
    ema = {"decay": 0.9999, "num_updates": 7, "shadow_params": [tiny_weights[name].clone() for name in names]}
    torch.save({"model": raw, "ema": ema, "optimizer": optimizer, "step": 950001}, path)


# ------------------------------------------------------------------------ architecture


def test_published_config_has_the_original_keys_shapes_order_and_count():
    assert net_kwargs_from_score_sde_config(MANIFEST["config"]) == PUBLISHED_CIFAR10_NET
    with torch.device("meta"):
        network = ScoreSdeEpsilon(**PUBLISHED_CIFAR10_NET)
    shapes = {key: list(value.shape) for key, value in network.state_dict().items()}
    assert list(shapes.items()) == list(MANIFEST["state_dict_shapes"].items())  # keys, shapes and order
    assert len(shapes) == 957
    assert [name for name, _ in network.named_parameters()] == MANIFEST["parameter_order"]
    assert [name for name, _ in network.named_buffers()] == MANIFEST["buffers"] == ["sigmas"]
    assert sum(p.numel() for p in network.parameters()) == MANIFEST["n_params"] == 106_632_579


def test_published_network_costs_37_1_gflop_per_image():
    with torch.device("meta"):
        network = ScoreSdeEpsilon(**PUBLISHED_CIFAR10_NET).eval()
        x, t = torch.empty(1, 3, 32, 32), torch.empty(1)
    with FlopCounterMode(display=False) as counter:
        network(x, t)
    assert counter.get_total_flops() / 1e9 == pytest.approx(37.1, abs=0.05)


def test_config_option_holds_the_published_configuration(compose_cfg):
    cfg = compose_cfg("diffusion=score_sde_cifar10", "diffusion.weights=/some/checkpoint_8.pth")
    typed = validate_config(cfg)
    assert typed.diffusion.weights == "/some/checkpoint_8.pth"
    assert net_config(cfg.diffusion.net) == {"_target_": SCORE_SDE_EPSILON_TARGET, **PUBLISHED_CIFAR10_NET}


def test_tiny_network_reproduces_the_golden_output_and_score(tiny_weights, golden_io):
    network = ScoreSdeEpsilon(**TINY_NET).eval()
    network.load_state_dict(tiny_weights, strict=True)
    assert sum(p.numel() for p in network.parameters()) == 613_491
    x, t = golden_io["x"], golden_io["t"]
    with torch.no_grad():
        eps = network(x, t)
        score = network.score(x, t)
        assert torch.equal(eps, network.network_output(x, t * 999))
        assert torch.equal(network(x[:1], t[1]), network(x[:1], t[1:2]))  # a scalar t is broadcast
    assert relative_error(eps, golden_io["model_output_at_labels_999t"]) < 1e-5
    assert relative_error(score, golden_io["score"]) < 1e-5
    # The golden score is -output / std(t) of the VP-SDE with beta_min 0.1, beta_max 20.
    std = VPSchedule(0.1, 20.0).sigma(t)[:, None, None, None]
    assert relative_error(-golden_io["model_output_at_labels_999t"] / std, golden_io["score"]) < 1e-5


def test_options_outside_ddpmpp_name_their_key():
    with pytest.raises(ConfigError) as error:
        NCSNpp(**{**TINY_NET, "fir": True})
    assert error.value.key == "diffusion.net.fir"
    with pytest.raises(ConfigError) as error:
        NCSNpp(**{**TINY_NET, "image_size": 12})
    assert error.value.key == "diffusion.net.image_size"


# ----------------------------------------------------------------------------- weights


def test_published_checkpoint_loads_its_ema_weights_through_the_diffusion_group(
    compose_cfg, tmp_path, tiny_weights, golden_io
):
    published = tmp_path / "checkpoint_8.pth"
    write_published_layout(published, tiny_weights)
    read = load_score_sde_weights(ScoreSdeEpsilon(**TINY_NET), published)
    assert read == {
        "source": str(published),
        "weights": "ema",
        "step": 950001,
        "ema_decay": 0.9999,
        "ema_num_updates": 7,
    }
    cfg = compose_cfg("diffusion=score_sde_cifar10", *TINY_OVERRIDES, f"diffusion.weights={published}")
    validate_config(cfg)
    backbone = build_backbone(cfg.diffusion, require_weights=True)
    assert isinstance(backbone, ScoreSdeEpsilon)
    # The raw ``model`` weights are zeros: only the EMA shadow params reproduce the golden output.
    assert_reproduces_golden(backbone, golden_io)


@pytest.mark.parametrize("form", ["pth", "pth_dataparallel", "safetensors"])
def test_plain_state_dicts_load(tmp_path, tiny_weights, golden_io, form):
    if form == "safetensors":
        path = tmp_path / "tiny.safetensors"
        save_file(tiny_weights, str(path))
    else:
        path = tmp_path / "tiny.pth"
        prefix = "module." if form == "pth_dataparallel" else ""
        torch.save({prefix + key: value for key, value in tiny_weights.items()}, path)
    backbone = ScoreSdeEpsilon(**TINY_NET)
    assert load_score_sde_weights(backbone, path)["weights"] == "state_dict"
    assert_reproduces_golden(backbone, golden_io)


def test_conversion_command_writes_an_advpure_checkpoint(compose_cfg, tmp_path, tiny_weights, golden_io):
    published = tmp_path / "checkpoint_8.pth"
    write_published_layout(published, tiny_weights)
    stem = tmp_path / "converted" / "score_sde_tiny"
    command = [sys.executable, "-m", "advpure.diffusion.score_sde_weights", str(published), str(stem)]
    done = subprocess.run(
        [*command, "--score-sde-config", str(TINY_CONFIG_PATH)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(stem.with_suffix(".json").read_text())
    assert record["metadata"]["weights"] == "ema"
    assert record["net"] == {"_target_": SCORE_SDE_EPSILON_TARGET, **TINY_NET}
    cfg = compose_cfg("diffusion=score_sde_cifar10", *TINY_OVERRIDES, f"diffusion.checkpoint={stem}")
    assert_reproduces_golden(build_backbone(cfg.diffusion, require_weights=True), golden_io)


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path, tiny_weights, writer):
    marker = tmp_path / "created_by_unpickling"
    path = tmp_path / "checkpoint_8.pth"
    payload = {"model": {"module.sigmas": tiny_weights["sigmas"]}, "ema": CreatesFileWhenUnpickled(marker), "step": 1}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match="weights_only") as error:
        load_score_sde_weights(ScoreSdeEpsilon(**TINY_NET), path)
    assert str(path) in str(error.value)
    assert not marker.exists()


def test_wrong_shape_missing_key_and_wrong_shadow_count_name_the_problem(tmp_path, tiny_weights):
    network = ScoreSdeEpsilon(**TINY_NET)
    wrong_key = "all_modules.3.Conv_0.weight"
    path = tmp_path / "wrong_shape.pth"
    torch.save({**tiny_weights, wrong_key: torch.zeros(3, 3)}, path)
    with pytest.raises(CheckpointError, match=rf"{wrong_key}: file \(3, 3\)") as error:
        load_score_sde_weights(network, path)
    assert str(path) in str(error.value)

    missing = {key: value for key, value in tiny_weights.items() if key != "all_modules.0.bias"}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match=r"1 missing keys \['all_modules\.0\.bias'\]"):
        load_score_sde_weights(network, tmp_path / "missing.safetensors")

    published = tmp_path / "checkpoint_8.pth"
    write_published_layout(published, tiny_weights)
    checkpoint = torch.load(published, weights_only=True)
    checkpoint["ema"]["shadow_params"] = checkpoint["ema"]["shadow_params"][:-1]
    torch.save(checkpoint, published)
    count = len(checkpoint["ema"]["shadow_params"])
    with pytest.raises(CheckpointError, match=rf"shadow_params holds {count} tensors, but the network has {count + 1}"):
        load_score_sde_weights(network, published)


def test_missing_damaged_or_misplaced_files_are_refused(compose_cfg, tmp_path, tiny_weights):
    network = ScoreSdeEpsilon(**TINY_NET)
    with pytest.raises(CheckpointError, match=r"not found: .*nowhere\.pth"):
        load_score_sde_weights(network, tmp_path / "nowhere.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pth"):
        load_score_sde_weights(network, tmp_path / "garbage.pth")
    save_file(tiny_weights, str(tmp_path / "tiny.safetensors"))
    with pytest.raises(ConfigError) as error:
        load_score_sde_weights(torch.nn.Conv2d(3, 3, 1), tmp_path / "tiny.safetensors")
    assert error.value.key == "diffusion.weights"
    cfg = compose_cfg("diffusion=score_sde_cifar10", "diffusion.weights=a.pth", "diffusion.checkpoint=b")
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    assert error.value.key == "diffusion.weights"
