"""Malformed inputs fail before any long work, with one message that names the key or path and the fix.

Each case goes through what ``run.py`` does: Hydra composes the config (a composition error is
what Hydra prints, followed by :func:`advpure.cli.override_hints`), then :func:`advpure.cli.run_task`
validates it and builds the task's objects. Lightning's ``fit``/``test`` are replaced by a tripwire,
so a case that slipped through would fail the test instead of starting work. A few cases run
through a real ``run.py`` subprocess (slow): exit status non-zero, message on stderr, no traceback.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pytorch_lightning as pl
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from advpure.checkpoints import checkpoint_paths, save_checkpoint
from advpure.cli import override_hints, run_task
from advpure.errors import AdvpureError
from advpure.models.digits_cnn import DigitsCNN
from advpure.tasks.context import RunContext
from tests.conftest import ROOT

SHIPPED = ROOT / "checkpoints" / "digits"
DIGITS_NET = {
    "_target_": "advpure.models.digits_cnn.DigitsCNN",
    "in_channels": 1,
    "num_classes": 10,
    "width": 32,
    "image_size": 8,
}
# A user-facing fix: advpure's "Fix:"/"fix:", Hydra's list of options, or a concrete instruction.
FIX = re.compile(r"fix:|available options|did you mean|\bset\b|\buse\b|point .* at", re.IGNORECASE)


class LongWorkStartedError(AssertionError):
    """A bad input reached Lightning's fit/test: it was not rejected up front."""


def _make_files(folder: Path) -> dict[str, str]:
    """Broken checkpoints and dataset folders the cases point at (``{name: path}``)."""
    files = {"absent": str(folder / "absent")}
    truncated = folder / "truncated"
    for source, target in zip(checkpoint_paths(SHIPPED / "classifier"), checkpoint_paths(truncated), strict=True):
        shutil.copyfile(source, target)
    weights = checkpoint_paths(truncated)[0]
    weights.write_bytes(weights.read_bytes()[:2000])
    files["truncated"] = str(truncated)
    narrow = {**DIGITS_NET, "width": 8}
    files["other_architecture"] = str(save_checkpoint(DigitsCNN(width=8), folder / "width8", net=narrow))
    # the JSON claims the configured net, the tensors are a narrower net's: a shape mismatch
    mismatched = save_checkpoint(DigitsCNN(width=8), folder / "mismatch", net=DIGITS_NET)
    files["shape_mismatch"] = str(mismatched)
    cifar_net = {**DIGITS_NET, "in_channels": 3, "image_size": 32}
    cifar = save_checkpoint(DigitsCNN(in_channels=3, image_size=32), folder / "cifar_cnn", net=cifar_net)
    files["other_dataset"] = str(cifar)
    (folder / "cifar_empty" / "cifar-10-batches-py").mkdir(parents=True)
    (folder / "cifar_empty" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    files["cifar_wrong_layout"] = str(folder / "cifar_empty")
    files["cifar_missing"] = str(folder / "no_cifar_here")
    return files


CIFAR = ["dataset=cifar10", "classifier=wrn28_10", "classifier.checkpoint=null", "diffusion=ddpm_cifar10"]
# (case id, overrides ({name} fills in a file of _make_files), what the message must name)
CASES = [
    # typo'd keys at every level: root, group, nested node, nested schema, paths
    ("typo_root", ["sed=1"], ["sed", "seed"]),
    ("typo_group_key", ["purifier.t_strar=0.1"], ["t_strar", "purifier.t_star"]),
    ("typo_attack_key", ["attack.epss=0.1"], ["epss", "attack.eps"]),
    ("typo_nested_net", ["classifier.net.widht=3"], ["widht", "classifier.net.width"]),
    ("typo_nested_schema", ["task=train_classifier", "task.adversarial.stepz=3"], ["stepz", "adversarial.steps"]),
    ("typo_paths", ["paths.evaluation=/tmp/x"], ["evaluation", "paths.evaluations"]),
    # unknown options, one per group
    ("unknown_purifier", ["purifier=diffpurr"], ["diffpurr", "diffpure"]),
    ("unknown_attack", ["attack=autoatack"], ["autoatack", "autoattack"]),
    ("unknown_dataset", ["dataset=mnist"], ["mnist", "digits"]),
    ("unknown_classifier", ["classifier=resnet18"], ["resnet18", "digits_cnn"]),
    ("unknown_diffusion", ["diffusion=ddpm"], ["diffusion/ddpm", "digits_unet"]),
    ("unknown_task", ["task=train"], ["task/train", "train_classifier"]),
    ("unknown_hardware", ["hardware=tpu"], ["tpu", "cpu"]),
    ("unknown_logger", ["logger=tensorboard"], ["tensorboard", "csv"]),
    ("unknown_budget", ["budget=fast"], ["fast", "cpu_quick"]),
    # wrong types
    ("type_float", ["purifier.t_star=abc"], ["purifier.t_star", "a number"]),
    ("type_int", ["task.n_images=many"], ["task.n_images", "a number"]),
    ("type_enum_norm", ["attack.norm=L3"], ["attack.norm", "Linf, L2"]),
    ("type_enum_grad_mode", ["purifier.grad_mode=bpdaa"], ["purifier.grad_mode", "full, adjoint"]),
    ("type_bool", ["task.resume=maybe"], ["task.resume", "true or false"]),
    # ranges
    ("eps_negative", ["attack.eps=-0.1"], ["attack.eps", "(0, 1]"]),
    ("eps_linf_above_range", ["attack.eps=1.5"], ["attack.eps", "(0, 1]"]),
    ("eps_l2_above_range", ["attack.norm=L2", "attack.eps=9"], ["attack.eps", "data range", "<= 8"]),
    ("t_star_zero", ["purifier.t_star=0"], ["purifier.t_star", "(0, 1]"]),
    ("t_star_above_one", ["purifier.t_star=1.5"], ["purifier.t_star", "(0, 1]"]),
    ("attack_steps", ["attack.n_iter=0"], ["attack.n_iter", ">= 1"]),
    ("purifier_steps", ["purifier=diffpure_ddpm", "purifier.stride=0"], ["purifier.stride", ">= 1"]),
    ("training_steps", ["task=train_classifier", "task.adversarial.steps=0"], ["task.adversarial.steps", ">= 1"]),
    ("n_eot", ["attack.n_eot=0"], ["attack.n_eot", ">= 1"]),
    ("vote_k", ["task.n_vote=0"], ["task.n_vote", ">= 1"]),
    ("worst_n", ["task.n_worst=0"], ["task.n_worst", ">= 1"]),
    ("batch_size", ["task.batch_size=0"], ["task.batch_size", ">= 1"]),
    ("loader_batch_size", ["dataset.batch_size=0"], ["dataset.batch_size", ">= 1"]),
    ("devices", ["hardware.devices=0"], ["hardware.devices", ">= 1"]),
    # datasets on disk
    ("dataset_missing", [*CIFAR, "dataset.root={cifar_missing}"], ["{cifar_missing}", "dataset.root="]),
    ("dataset_layout", [*CIFAR, "dataset.root={cifar_wrong_layout}"], ["wrong layout", "test_batch"]),
    # checkpoints
    ("checkpoint_missing", ["classifier.checkpoint={absent}"], ["{absent}.safetensors"]),
    ("checkpoint_truncated", ["classifier.checkpoint={truncated}"], ["{truncated}.safetensors", "truncated"]),
    ("checkpoint_architecture", ["classifier.checkpoint={other_architecture}"], ["{other_architecture}.json"]),
    ("checkpoint_shapes", ["classifier.checkpoint={shape_mismatch}"], ["{shape_mismatch}", "shape mismatch"]),
    ("checkpoint_other_dataset", ["classifier.checkpoint={other_dataset}"], ["classifier.checkpoint", "3 channels"]),
    ("diffusion_checkpoint_missing", ["diffusion.checkpoint={absent}"], ["{absent}.safetensors"]),
    ("aux_checkpoint_missing", ["purifier=agdm", "purifier.auxiliary.checkpoint={absent}"], ["{absent}"]),
    ("net_other_dataset", ["classifier=wrn28_10", "classifier.checkpoint=null"], ["classifier.net", "3 channels"]),
    ("diffusion_other_dataset", ["diffusion=ddpm_cifar10"], ["diffusion.net", "3 channels", "32x32"]),
    # incompatible combinations
    ("adjoint_discrete", ["purifier=diffpure_ddpm", "purifier.grad_mode=adjoint"], ["purifier.grad_mode", "adjoint"]),
    ("adjoint_guided", ["purifier=gdmp", "purifier.grad_mode=adjoint"], ["purifier.grad_mode", "purifier=diffpure"]),
    ("l2_to_linf_torchattacks", ["attack=torchattacks", "attack.norm=L2"], ["attack.norm", "only in Linf"]),
    ("l2_to_linf_bpda", ["attack=bpda_eot", "attack.norm=L2"], ["attack.norm", "Linf"]),
    ("guidance_blind_unguided", ["purifier.grad_mode=guidance_blind"], ["purifier.grad_mode", "guidance"]),
    ("surrogate_missing", ["purifier.grad_mode=surrogate", "purifier.surrogate=null"], ["purifier.surrogate"]),
]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, str]:
    return _make_files(tmp_path_factory.mktemp("bad_files"))


@pytest.fixture(scope="module")
def compose() -> Iterator[Callable[..., DictConfig]]:
    """``compose(overrides)`` -> the root config as run.py composes it (Hydra initialized once)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        yield lambda overrides: hydra_compose("config", overrides=list(overrides))
    GlobalHydra.instance().clear()


@pytest.fixture
def tripwire(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise LongWorkStartedError("a bad input reached Trainer.fit/test")

    monkeypatch.setattr(pl.Trainer, "fit", refuse)
    monkeypatch.setattr(pl.Trainer, "test", refuse)


def user_message(compose: Callable[..., DictConfig], overrides: list[str], run_dir: Path) -> str:
    """What the user reads: Hydra's composition error plus advpure's hints, or advpure's error."""
    try:
        cfg = compose(overrides)
    except (HydraException, OmegaConfBaseException) as error:
        return "\n".join([str(error), *override_hints(overrides)])
    try:
        run_task(cfg, RunContext(run_dir))
    except AdvpureError as error:
        return str(error)
    raise AssertionError(f"{overrides} was accepted")


# One case per kind runs in the default test run; the whole list with ``make test-full``.
FAST = {
    "typo_group_key",
    "unknown_purifier",
    "type_float",
    "eps_l2_above_range",
    "t_star_zero",
    "vote_k",
    "dataset_layout",
    "checkpoint_truncated",
    "checkpoint_other_dataset",
    "adjoint_discrete",
    "l2_to_linf_torchattacks",
}


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [pytest.param(*c[1:], id=c[0], marks=() if c[0] in FAST else pytest.mark.slow) for c in CASES],
)
def test_bad_input_is_rejected_naming_key_and_fix(compose, bad_files, tripwire, tmp_path, overrides, needles):
    overrides = [o.format(**bad_files) for o in overrides]
    if not any(o.startswith("logger=") for o in overrides):
        overrides.append("logger=none")
    message = user_message(compose, overrides, tmp_path / "run")
    for needle in needles:
        assert needle.format(**bad_files) in message, f"{needle!r} not in: {message}"
    assert FIX.search(message), f"no fix in: {message}"
    assert not (tmp_path / "run" / "results.json").exists()


def test_at_least_thirty_cases():
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES) and {c[0] for c in CASES} >= FAST


def test_hints_leave_good_overrides_alone():
    assert override_hints(["purifier.t_star=0.05", "attack=pgd_eot", "+foo=1", "task.resume=false"]) == []


CLI_CASES = [
    ("typo", ["purifier.t_strar=0.1"], ["t_strar", "did you mean purifier.t_star"]),
    ("unknown_option", ["attack=autoatack"], ["autoatack", "Available options"]),
    ("wrong_type", ["task.n_images=many"], ["task.n_images", "a number (int)"]),
    ("range", ["purifier.t_star=0"], ["purifier.t_star", "Fix:"]),
    ("missing_checkpoint", ["classifier.checkpoint={absent}"], ["{absent}.safetensors"]),
    ("incompatible", ["purifier=diffpure_ddpm", "purifier.grad_mode=adjoint"], ["purifier.grad_mode", "Fix:"]),
    ("other_dataset", ["classifier.checkpoint={other_dataset}"], ["{other_dataset}.json", "Fix:"]),
]


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "needles"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_rejects_bad_input_without_traceback(bad_files, tmp_path, overrides, needles):
    overrides = [o.format(**bad_files) for o in overrides]
    result = subprocess.run(
        [sys.executable, "run.py", *overrides, "logger=none", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle.format(**bad_files) in result.stderr, result.stderr
    assert not (tmp_path / "results.json").exists()


def test_checkpoint_json_names_its_dataset(bad_files):
    recorded = json.loads(checkpoint_paths(bad_files["other_dataset"])[1].read_text())["net"]
    assert recorded["in_channels"] == 3
