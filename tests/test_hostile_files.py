"""Loading weights never unpickles: a planted pickle whose unpickling would create a file is refused
on every path that reads a file the user (or a previous run) points at, and the file never appears.
Every JSON reader refuses hostile JSON (wrong type, nested past the parser's limit) with a message
naming the file, and a file that is no weights file at all (an image, an archive, a text page) is
named as what it looks like.

``LOADERS`` lists every loading path; a new loader is one more entry (config overrides that point
at the planted file, through what ``run.py`` does, or a direct call where building the network
would take too long for a test).
"""

from __future__ import annotations

import gzip
import json
import pickle
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from advpure.cli import run_task
from advpure.errors import AdvpureError
from advpure.tasks.context import RunContext
from tests.conftest import ROOT, CreatesFileWhenUnpickled

NET = {"_target_": "advpure.models.digits_cnn.DigitsCNN", "in_channels": 1, "num_classes": 10, "width": 32}


def plant(folder: Path, marker: Path) -> dict[str, Path]:
    """Hostile files in every format advpure reads, each unpickling ``CreatesFileWhenUnpickled(marker)``."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"state_dict": {"weight": CreatesFileWhenUnpickled(marker)}}
    files = {"pth": folder / "evil.pth", "pt": folder / "evil.pt", "raw": folder / "evil.pkl"}
    torch.save(payload, files["pth"])  # a zip torch.save file, as published checkpoints are
    torch.save(payload, files["pt"])
    files["raw"].write_bytes(pickle.dumps(payload))
    # an advpure checkpoint pair whose weights file is a pickle
    (folder / "evil_ckpt.safetensors").write_bytes(pickle.dumps(payload))
    (folder / "evil_ckpt.json").write_text(json.dumps({"format": "advpure-checkpoint-v1", "net": NET}))
    files["advpure"] = folder / "evil_ckpt"
    # a .safetensors name on a pickle (published-weights loaders pick the reader by suffix)
    (folder / "evil_named.safetensors").write_bytes(pickle.dumps(payload))
    files["named_safetensors"] = folder / "evil_named.safetensors"
    # a diffusers folder with only pickled (.bin) weights
    pretrained = folder / "diffusers"
    pretrained.mkdir(exist_ok=True)
    (pretrained / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "sample_size": 8}))
    torch.save(payload, pretrained / "diffusion_pytorch_model.bin")
    files["diffusers"] = pretrained
    return files


SMALL_SCORE_SDE = (
    "diffusion=score_sde_cifar10",
    "diffusion.net.num_channels=1",
    "diffusion.net.image_size=8",
    "diffusion.net.nf=16",
    "diffusion.net.ch_mult=[1]",
    "diffusion.net.num_res_blocks=1",
    "diffusion.net.attn_resolutions=[]",
)

# (id, overrides pointing at a planted file ({name} fills in a path from plant()))
CONFIG_LOADERS = [
    ("classifier.checkpoint", ["classifier.checkpoint={advpure}"]),
    ("diffusion.checkpoint", ["diffusion.checkpoint={advpure}"]),
    ("purifier.auxiliary.checkpoint", ["purifier=agdm", "purifier.auxiliary.checkpoint={advpure}"]),
    ("classifier.weights .pth", ["classifier.checkpoint=null", "classifier.weights={pth}"]),
    ("classifier.weights raw pickle", ["classifier.checkpoint=null", "classifier.weights={raw}"]),
    ("classifier.weights .safetensors", ["classifier.checkpoint=null", "classifier.weights={named_safetensors}"]),
    ("diffusion.weights score_sde .pth", [*SMALL_SCORE_SDE, "diffusion.weights={pth}"]),
    ("diffusion.weights score_sde .pt", [*SMALL_SCORE_SDE, "diffusion.weights={pt}"]),
    ("diffusion.pretrained folder", ["diffusion.checkpoint=null", "diffusion.pretrained={diffusers}"]),
]


@pytest.fixture
def hostile(tmp_path) -> tuple[dict[str, Path], Path]:
    marker = tmp_path / "pwned"
    return plant(tmp_path / "files", marker), marker


@pytest.fixture
def tripwire(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("a hostile file was accepted: the task reached Trainer.test")

    monkeypatch.setattr(pl.Trainer, "test", refuse)


@pytest.mark.parametrize("overrides", [c[1] for c in CONFIG_LOADERS], ids=[c[0] for c in CONFIG_LOADERS])
def test_config_loading_paths_refuse_pickles(compose_cfg, hostile, tripwire, tmp_path, overrides):
    files, marker = hostile
    cfg = compose_cfg(*(o.format(**files) for o in overrides), "logger=none", "attack=none")
    with pytest.raises(AdvpureError) as error:
        run_task(cfg, RunContext(tmp_path / "run"))
    assert str(tmp_path / "files") in str(error.value), f"refused for another reason: {error.value}"
    assert not marker.exists(), "the pickle was unpickled"


def _guided(path: Path) -> None:
    from advpure.diffusion.guided import GuidedEpsilon

    GuidedEpsilon.load_published_weights(object.__new__(GuidedEpsilon), path)


def _score_sde_conversion(path: Path) -> None:
    from advpure.diffusion.score_sde_weights import read_score_sde_file

    read_score_sde_file(path)


def _advpure_reader(path: Path) -> None:
    from advpure.checkpoints import read_checkpoint

    read_checkpoint(path)


def _cifar_batch(path: Path) -> None:
    """A CIFAR-10 folder whose test batch is the planted pickle (``dataset.verify=false``: the MD5
    check would refuse it first; the reader must refuse it on its own)."""
    import shutil

    from advpure.data.cifar import CifarDataModule

    folder = path.parent / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        shutil.copyfile(path, folder / name)
    data = CifarDataModule(root=str(folder.parent), verify=False)
    data.setup("test")


# Loaders whose network is too large to build in a test: the reader they call, on the planted file.
DIRECT_LOADERS: list[tuple[str, Callable[[Path], None], str]] = [
    ("diffusion.weights guided_imagenet256", _guided, "pth"),
    ("score_sde conversion command", _score_sde_conversion, "pth"),
    ("advpure checkpoint reader, .pt path", _advpure_reader, "pt"),
    ("dataset=cifar10 batch files (a pickle format; verify=false)", _cifar_batch, "raw"),
]


@pytest.mark.parametrize(("load", "name"), [c[1:] for c in DIRECT_LOADERS], ids=[c[0] for c in DIRECT_LOADERS])
def test_direct_loaders_refuse_pickles(hostile, load, name):
    files, marker = hostile
    with pytest.raises(AdvpureError, match=re.escape(str(files[name].parent))):  # names the file
        load(files[name])
    assert not marker.exists()


def test_training_resume_checkpoint_is_never_unpickled(compose_cfg, hostile, tmp_path, monkeypatch):
    """A planted ``last.ckpt`` in the training state folder of the very config being run is refused."""
    from advpure.training.resume import prepare_resume

    files, marker = hostile
    overrides = ("task=train_classifier", "task.max_epochs=1", "logger=none", f"paths.training={tmp_path / 'state'}")
    cfg = compose_cfg(*overrides)
    resume = prepare_resume(cfg)
    (resume.folder / "last.ckpt").write_bytes(files["pth"].read_bytes())
    (resume.folder / "last.json").write_text(json.dumps({"epoch": 1, "global_step": 12}))
    with pytest.raises(AdvpureError, match="cannot resume from"):
        run_task(cfg, RunContext(tmp_path / "run"))
    assert not marker.exists()


def test_every_loader_is_listed():
    """Each config key that names a weights file has a hostile-file case."""
    listed = " ".join(c[0] for c in CONFIG_LOADERS + [(d[0], None) for d in DIRECT_LOADERS])
    for key in ("classifier.checkpoint", "classifier.weights", "diffusion.checkpoint", "diffusion.weights"):
        assert key in listed
    for key in ("diffusion.pretrained", "purifier.auxiliary.checkpoint", "guided_imagenet256"):
        assert key in listed
    assert (ROOT / "conf" / "diffusion" / "guided_imagenet256.yaml").is_file()


# ------------------------------------------------------------------ JSON files and non-weights files

# Valid JSON of the wrong type, JSON nested past Python's parser (a RecursionError), and not JSON.
HOSTILE_JSON = {"list": "[1, 2]", "nested": "[" * 100_000 + "]" * 100_000, "not_json": "{'net': 1"}


def _checkpoint_config(path: Path, _capsys) -> str:
    """An advpure checkpoint (classifier/diffusion/purifier.auxiliary.checkpoint) whose JSON is ``path``."""
    from safetensors.torch import save_file

    from advpure.checkpoints import read_checkpoint

    save_file({"weight": torch.zeros(1)}, str(path.with_suffix(".safetensors")))
    with pytest.raises(AdvpureError) as error:
        read_checkpoint(path.with_suffix(""))
    return str(error.value)


def _diffusers_config(path: Path, _capsys) -> str:
    """A ``diffusion.pretrained`` folder whose config.json is ``path``."""
    from advpure.diffusion.backbone import UNetEpsilon

    path.rename(path.parent / "config.json")
    with pytest.raises(AdvpureError) as error:
        UNetEpsilon.from_pretrained(str(path.parent))
    return str(error.value)


def _score_sde_config(path: Path, capsys) -> str:
    """The score_sde conversion command's ``--score-sde-config``."""
    from advpure.diffusion.score_sde_weights import main

    assert main([str(path.parent / "absent.pth"), str(path.parent / "out"), "--score-sde-config", str(path)]) == 2
    return capsys.readouterr().err


JSON_READERS: list[tuple[str, Callable[[Path, Any], str]]] = [
    ("advpure checkpoint config", _checkpoint_config),
    ("diffusion.pretrained config.json", _diffusers_config),
    ("score_sde --score-sde-config", _score_sde_config),
]


@pytest.mark.parametrize("kind", sorted(HOSTILE_JSON))
@pytest.mark.parametrize("read", [c[1] for c in JSON_READERS], ids=[c[0] for c in JSON_READERS])
def test_json_readers_refuse_hostile_json_naming_the_file(tmp_path, capsys, read, kind):
    """No RecursionError, AttributeError or JSONDecodeError escapes: one advpure message naming the file.
    (The evaluation store's files are recomputed instead: tests/test_bad_inputs.py.)"""
    folder = tmp_path / "files"
    folder.mkdir()
    path = folder / "config.json"
    path.write_text(HOSTILE_JSON[kind])
    message = read(path, capsys)
    assert str(folder) in message, message
    assert {"list": "JSON list", "nested": "nested too deeply", "not_json": "not valid JSON"}[kind] in message


def test_training_resume_info_that_is_hostile_json_counts_as_no_epochs(tmp_path):
    from advpure.training.resume import LAST_INFO, last_epochs

    for text in HOSTILE_JSON.values():
        (tmp_path / LAST_INFO).write_text(text)
        assert last_epochs(tmp_path) == 0


def _png(path: Path) -> None:
    shutil.copyfile(ROOT / "checkpoints" / "digits" / "diffusion_samples.png", path)


def _zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weights/model.pth", b"\x80\x02")


def _misnamed_safetensors(path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, str(path))


# (id, file name, how to write it, what the message must call it)
FOREIGN_FILES: list[tuple[str, str, Callable[[Path], None], str]] = [
    ("png", "weights.pth", _png, "a PNG image"),
    ("jpeg", "weights.pt", lambda p: p.write_bytes(b"\xff\xd8\xff\xe0" + bytes(64)), "a JPEG image"),
    ("gzip", "weights.pth", lambda p: p.write_bytes(gzip.compress(b"weights")), "gzip"),
    ("zip, not torch.save", "weights.pth", _zip, "a ZIP archive that is not a torch.save file"),
    ("git-lfs pointer", "weights.pt", lambda p: p.write_text("version https://git-lfs.github.com/spec/v1\n"), "LFS"),
    ("html page", "weights.pth", lambda p: p.write_text("<!DOCTYPE html><html>login</html>"), "an HTML page"),
    ("text", "weights.pt", lambda p: p.write_text("these are not weights\n"), "a text file"),
    ("empty", "weights.pt", lambda p: p.write_bytes(b""), "an empty file"),
    ("png named .safetensors", "weights.safetensors", _png, "a PNG image"),
    ("safetensors named .pth", "weights.pth", _misnamed_safetensors, "rename it to end in .safetensors"),
]


@pytest.mark.parametrize(
    ("name", "write", "looks_like"), [c[1:] for c in FOREIGN_FILES], ids=[c[0] for c in FOREIGN_FILES]
)
@pytest.mark.parametrize("key", ["classifier.weights", "diffusion.weights"])
def test_non_weights_files_are_named_by_what_they_look_like(tmp_path, key, name, write, looks_like):
    """An image, archive or text file given as weights is named as what it is, never called a pickle."""
    from advpure.weights_files import read_weights_file

    path = tmp_path / name
    write(path)
    with pytest.raises(AdvpureError) as error:
        read_weights_file(path, key=key, expected="a state dict")
    message = str(error.value)
    assert str(path) in message and key in message and looks_like in message and "Fix:" in message
    assert "pickle" not in message.lower() and "weights_only" not in message


@pytest.mark.parametrize("kind", ["torch zip", "torch legacy", "safetensors"])
def test_weights_files_are_not_mistaken_for_foreign_files(tmp_path, kind):
    from safetensors.torch import save_file

    from advpure.weights_files import describe_foreign_file, read_weights_file

    state = {"weight": torch.arange(3.0)}
    path = tmp_path / ("w.safetensors" if kind == "safetensors" else "w.pth")
    if kind == "safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=kind == "torch zip")
    assert describe_foreign_file(path) is None
    assert torch.equal(read_weights_file(path, key="classifier.weights", expected="")["weight"], state["weight"])
