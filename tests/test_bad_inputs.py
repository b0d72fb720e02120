"""Malformed inputs fail before any long work, with one message that names the key or path and the fix.

Each case goes through what ``run.py`` does: Hydra composes the config (a composition error is
what Hydra prints, followed by :func:`advpure.cli.override_hints`), then :func:`advpure.cli.run_task`
validates it and builds the task's objects. Lightning's ``fit``/``test`` are replaced by a tripwire,
so a case that slipped through would fail the test instead of starting work. A few cases run
through a real ``run.py`` subprocess (slow): exit status non-zero, message on stderr, no traceback.
"""

from __future__ import annotations

import errno
import json
import logging
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from safetensors.torch import load_file, save_file

from advpure.checkpoints import checkpoint_paths, file_sha256, save_checkpoint
from advpure.cli import check_output_folder, override_hints, run_task
from advpure.errors import AdvpureError, DataError, OutputError
from advpure.evaluation.store import BatchStore
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
    # checkpoint pairs whose JSON is valid JSON of the wrong type, or nested past Python's parser
    for name, text in (("json_list", "[1, 2]"), ("json_nested", "[" * 100_000 + "]" * 100_000)):
        _copy_shipped(folder / name)
        checkpoint_paths(folder / name)[1].write_text(text)
        files[name] = str(folder / name)
    # integers where the network holds floats, hashed and recorded as the JSON expects
    weights, config = _copy_shipped(folder / "int_weights")
    save_file({k: t.round().to(torch.int64) for k, t in load_file(str(weights)).items()}, str(weights))
    config.write_text(json.dumps({**json.loads(config.read_text()), "sha256": file_sha256(weights)}))
    files["int_weights"] = str(folder / "int_weights")
    # loadable weights of the right shapes and dtypes, but not the ones the JSON's SHA-256 records
    weights, _ = _copy_shipped(folder / "swapped")
    save_file({k: torch.zeros_like(t) for k, t in load_file(str(weights)).items()}, str(weights))
    files["swapped"] = str(folder / "swapped")
    files["png"] = str(SHIPPED / "diffusion_samples.png")  # an image given as classifier.weights
    return files


def _copy_shipped(stem: Path) -> tuple[Path, Path]:
    """A copy of the shipped digits classifier's checkpoint pair at ``stem``: ``(weights, config)``."""
    targets = checkpoint_paths(stem)
    for source, target in zip(checkpoint_paths(SHIPPED / "classifier"), targets, strict=True):
        shutil.copyfile(source, target)
    return targets


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
    # seeds numpy cannot take (Lightning would silently draw another), empty paths, t* below one step
    ("seed_negative", ["seed=-1"], ["'seed'", "[0, 4294967295]"]),
    ("seed_above_uint32", ["seed=4294967296"], ["'seed'", "[0, 4294967295]"]),
    ("checkpoint_empty", ["classifier.checkpoint=''"], ["'classifier.checkpoint'", "empty path", "null"]),
    ("diffusion_checkpoint_empty", ["diffusion.checkpoint=''"], ["'diffusion.checkpoint'", "empty path"]),
    ("t_star_below_dt", ["purifier.t_star=1e-12"], ["'purifier.t_star'", "one solver step", "t_star >= 0.01"]),
    # a key of another group or node, values Hydra cannot read unquoted
    ("key_in_other_group", ["purifier.eps=0.1"], ["purifier.eps", "did you mean attack.eps"]),
    ("key_in_other_node", ["classifier.width=3"], ["classifier.width", "did you mean classifier.net.width"]),
    (
        "unquoted_unicode_path",
        [*CIFAR, "dataset.root=/données/cifar"],
        ["quote it", """'dataset.root="/données/cifar"'"""],
    ),
    ("path_split_at_space", [*CIFAR, "dataset.root=/my", "data"], ["quote the whole", """'dataset.root="/my data"'"""]),
    # checkpoint files that would load and give a "100% robust" model, or crash the reader
    ("checkpoint_json_list", ["classifier.checkpoint={json_list}"], ["{json_list}.json", "JSON list"]),
    ("checkpoint_json_nested", ["classifier.checkpoint={json_nested}"], ["{json_nested}.json", "nested too deeply"]),
    (
        "checkpoint_int_weights",
        ["classifier.checkpoint={int_weights}"],
        ["{int_weights}.safetensors", "floating point"],
    ),
    ("checkpoint_sha256", ["classifier.checkpoint={swapped}"], ["{swapped}.safetensors", "SHA-256"]),
    (
        "weights_png",
        ["classifier.checkpoint=null", "classifier.weights={png}"],
        ["{png}", "a PNG image", "classifier.weights"],
    ),
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
    "seed_negative",
    "checkpoint_empty",
    "t_star_below_dt",
    "key_in_other_group",
    "unquoted_unicode_path",
    "checkpoint_json_nested",
    "checkpoint_int_weights",
    "checkpoint_sha256",
    "weights_png",
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
    ("other_group", ["purifier.eps=0.1"], ["purifier.eps", "did you mean attack.eps"]),
    ("unquoted", ["dataset=cifar10", "dataset.root=/données"], ["""'dataset.root="/données"'"""]),
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


# ------------------------------------------------------------------- inputs outside a composed config


@pytest.mark.parametrize("where", ["under_a_file", "proc", "read_only"])
def test_output_folder_that_cannot_be_created_names_hydra_run_dir(tmp_path, monkeypatch, where):
    """Hydra creates hydra.run.dir before advpure runs (a traceback there): run.py checks it first."""
    (tmp_path / "a_file").write_text("")
    folder = {"under_a_file": tmp_path / "a_file" / "run", "proc": Path("/proc/advpure-run"), "read_only": tmp_path}[
        where
    ]
    if where == "proc" and not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    if where == "read_only":  # chmod does not stop root: the file system's answer, simulated
        monkeypatch.setattr(Path, "mkdir", lambda *_a, **_k: (_ for _ in ()).throw(OSError(errno.EROFS, "read-only")))
    with pytest.raises(OutputError) as error:
        check_output_folder([f"hydra.run.dir={folder}", "logger=none"])
    assert str(folder) in str(error.value) and "hydra.run.dir" in str(error.value)
    assert FIX.search(str(error.value)), str(error.value)


def test_output_folder_check_uses_the_sweep_folder_and_skips_info_flags(tmp_path):
    (tmp_path / "a_file").write_text("")
    blocked = tmp_path / "a_file" / "sweep"
    with pytest.raises(OutputError, match=r"hydra\.sweep\.dir"):
        check_output_folder(["-m", f"hydra.sweep.dir={blocked}"])
    assert check_output_folder(["--cfg", "job", f"hydra.run.dir={blocked}"]) is None
    assert check_output_folder([f"hydra.run.dir={tmp_path / 'ok'}"]) == tmp_path / "ok"
    assert check_output_folder([f"hydra.run.dir={tmp_path}/runs/${{now:%H}}"]) == tmp_path / "runs"


def test_cli_unwritable_output_folder_without_traceback(tmp_path):
    """Through run.py: the folder check runs before Hydra, so this is quick."""
    (tmp_path / "a_file").write_text("")
    result = subprocess.run(
        [sys.executable, "run.py", f"hydra.run.dir={tmp_path / 'a_file' / 'run'}", "logger=none"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "hydra.run.dir" in result.stderr and "is a file" in result.stderr and "Fix:" in result.stderr


def _cifar_folder(root: Path, data: np.ndarray, labels: list) -> Path:
    """A cifar-10-batches-py folder whose every batch file holds ``data`` and ``labels``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    payload = pickle.dumps({"data": data, "labels": labels}, protocol=4)
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        (folder / name).write_bytes(payload)
    return root


GOOD_IMAGES = np.zeros((4, 3072), dtype=np.uint8)
CIFAR_DATA_CASES = [
    ("labels_outside_classes", GOOD_IMAGES, [0, 1, 9, 10], "labels outside the 10 classes"),
    ("labels_negative", GOOD_IMAGES, [0, -1, 2, 3], "labels outside the 10 classes"),
    ("labels_not_integers", GOOD_IMAGES, [0.0, 1.5, 2.0, 3.0], "must be 4 integers"),
    ("labels_too_few", GOOD_IMAGES, [0, 1], "must be 4 integers"),
    ("images_float", GOOD_IMAGES.astype(np.float32), [0, 1, 2, 3], "not uint8"),
    ("images_wrong_shape", np.zeros((4, 1024), dtype=np.uint8), [0, 1, 2, 3], "has shape (4, 1024)"),
]


@pytest.mark.parametrize(
    ("data", "labels", "needle"), [c[1:] for c in CIFAR_DATA_CASES], ids=[c[0] for c in CIFAR_DATA_CASES]
)
def test_cifar_batches_are_checked_even_without_md5(tmp_path, data, labels, needle):
    """``dataset.verify=false`` skips only the MD5 check: labels and image bytes are always checked."""
    from advpure.data.cifar import CifarDataModule

    datamodule = CifarDataModule(root=str(_cifar_folder(tmp_path, data, labels)), verify=False)
    with pytest.raises(DataError) as error:
        datamodule.setup("test")
    assert needle in str(error.value) and "test_batch" in str(error.value) and "Fix:" in str(error.value)


def test_cifar_batches_within_range_are_read(tmp_path):
    from advpure.data.cifar import CifarDataModule

    datamodule = CifarDataModule(root=str(_cifar_folder(tmp_path, GOOD_IMAGES, [0, 1, 9, 3])), verify=False)
    datamodule.setup("test")
    assert datamodule.test_set.targets == [0, 1, 9, 3] and datamodule.test_set.images.shape == (4, 3, 32, 32)


# -------------------------------------------------- the evaluation store: damaged files are recomputed

RECORD = {
    "index": 0,
    "label": 1,
    "undefended_clean_pred": 1,
    "undefended_adv_pred": 1,
    "defended_clean_pred": 1,
    "defended_adv_pred": 2,
    "defended_clean_draws": "1 1",
    "defended_adv_draws": "2 1",
}
PANEL = {
    "clean": torch.zeros(2, 1, 8, 8),
    "adversarial": torch.zeros(2, 1, 8, 8),
    "purified": torch.zeros(2, 1, 8, 8),
    "label": torch.tensor([1, 2]),
    "prediction": torch.tensor([1, 2]),
}


def _batch(*records: dict) -> dict:
    return {"indices": [r["index"] for r in records], "records": list(records), "attack_checks": {}}


# (case id, the file's name in the store, its damaged content (bytes, or a JSON value))
DAMAGED_STORE_FILES = [
    ("batch_wrong_type", "batch_00001.json", [0, 1]),
    ("batch_nested", "batch_00001.json", b"[" * 100_000 + b"]" * 100_000),
    ("batch_truncated", "batch_00001.json", json.dumps(_batch(RECORD, {**RECORD, "index": 1})).encode()[:60]),
    ("records_not_objects", "batch_00001.json", {"indices": [0, 1], "records": [1, 2]}),
    ("records_too_few", "batch_00001.json", _batch(RECORD) | {"indices": [0, 1]}),
    ("records_other_images", "batch_00001.json", _batch(RECORD, RECORD) | {"indices": [0, 1]}),
    ("record_text_prediction", "batch_00001.json", _batch(RECORD, {**RECORD, "index": 1, "label": "one"})),
    ("record_bad_draws", "batch_00001.json", _batch(RECORD, {**RECORD, "index": 1, "defended_adv_draws": "x"})),
    ("panel_truncated", "panel.safetensors", None),
    ("panel_wrong_tensors", "panel.safetensors", {"clean": torch.zeros(2, 1, 8, 8)}),
]


@pytest.mark.parametrize(
    ("name", "content"), [c[1:] for c in DAMAGED_STORE_FILES], ids=[c[0] for c in DAMAGED_STORE_FILES]
)
def test_damaged_store_file_is_ignored_with_a_warning(tmp_path, caplog, name, content):
    store = BatchStore(tmp_path, {"a": 1})
    store.save(0, _batch(RECORD, {**RECORD, "index": 1}))
    store.save(1, _batch(RECORD, {**RECORD, "index": 1}))
    store.save_panel(PANEL)
    assert store.load(1, [0, 1]) is not None and store.load(0, [0, 1]) is not None  # intact files are reused
    path = store.folder / name
    if name == "panel.safetensors":
        if content is None:
            path.write_bytes(path.read_bytes()[:100])
        else:
            save_file(content, str(path))
    else:
        path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    with caplog.at_level(logging.WARNING, logger="advpure.evaluation.store"):
        reused = store.load(0 if name == "panel.safetensors" else 1, [0, 1])
    assert reused is None, "a damaged file was reused"
    assert str(path) in caplog.text and "recomputed" in caplog.text
    assert not path.exists(), "the damaged file stays and would be reported on every run"
    assert store.load(0 if name != "panel.safetensors" else 1, [0, 1]) is not None  # the others still are


@pytest.mark.parametrize("content", [[1, 2], {"result_key": "other"}, {"result_key": "KEY", "metrics": []}, None])
def test_damaged_finished_results_are_ignored_with_a_warning(tmp_path, caplog, content):
    store = BatchStore(tmp_path, {"a": 1})
    path = store.finished_folder("KEY") / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text("{" * 50_000 if content is None else json.dumps(content))
    with caplog.at_level(logging.WARNING, logger="advpure.evaluation.store"):
        assert store.load_finished("KEY") is None
    assert str(path) in caplog.text


def test_damaged_store_is_recomputed_by_the_same_command(compose, tmp_path, caplog):
    """Every kind of stored file damaged between two runs of one command: the second run warns,
    recomputes what was damaged, reuses the rest, and gives the same numbers."""
    overrides = [
        "attack=none",
        "purifier=none",
        "logger=none",
        "task.n_images=6",
        "task.batch_size=2",
        "task.n_vote=1",
        "task.n_worst=1",
        "task.n_panel=2",
        f"paths.evaluations={tmp_path / 'store'}",
    ]
    first = run_task(compose(overrides), RunContext(tmp_path / "first"))
    store = Path(first["batches"]["store"])
    damaged = {
        "finished": store / "finished" / first["result_key"] / "results.json",
        "panel": store / "panel.safetensors",
        "batch": store / "batch_00001.json",
    }
    damaged["finished"].write_text("[" * 100_000)
    damaged["panel"].write_bytes(damaged["panel"].read_bytes()[:50])
    damaged["batch"].write_text(json.dumps({"indices": json.loads(damaged["batch"].read_text())["indices"]}))
    with caplog.at_level(logging.WARNING, logger="advpure.evaluation.store"):
        second = run_task(compose(overrides), RunContext(tmp_path / "second"))
    for path in damaged.values():
        assert str(path) in caplog.text, f"no warning names {path}"
    # batch 0 (it draws the panel) and batch 1 recomputed, batch 2 reused
    assert (second["batches"]["computed_now"], second["batches"]["reused"]) == (2, 1)
    assert second["metrics"] == first["metrics"]
    assert (tmp_path / "second" / "panel.png").is_file()
    assert json.loads(damaged["finished"].read_text())["result_key"] == first["result_key"]
