"""Training tasks start from a random initialization unless ``task.init_from`` names a checkpoint,
and record where they started (results and the exported checkpoint's JSON)."""

from __future__ import annotations

import json

import pytest

from advpure.cli import run_task
from advpure.errors import CheckpointError, ConfigError
from advpure.tasks.context import RunContext
from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("single_thread")

SHIPPED = ROOT / "checkpoints" / "digits" / "classifier"
# One epoch at a learning rate too small to move the weights: the test accuracy is the start's.
FROZEN = ("task=train_classifier", "task.max_epochs=1", "task.lr=1e-12", "logger=none", "task.resume=false")


def test_training_ignores_the_groups_checkpoint_and_starts_at_random(compose_cfg, tmp_path):
    cfg = compose_cfg(*FROZEN, f"paths.training={tmp_path / 'state'}")
    assert cfg.classifier.checkpoint is not None  # the default names the shipped classifier
    summary = run_task(cfg, RunContext(tmp_path / "run"))
    assert summary["started_from"] == "random initialization"
    assert summary["test_accuracy"] < 0.4  # an untrained 10-class network, not the shipped 98%
    stored = json.loads((tmp_path / "run" / "classifier.json").read_text())
    assert "random initialization" in json.dumps(stored)


def test_init_from_fine_tunes_the_named_checkpoint_and_records_it(compose_cfg, tmp_path):
    cfg = compose_cfg(*FROZEN, f"task.init_from={SHIPPED}", f"paths.training={tmp_path / 'state'}")
    summary = run_task(cfg, RunContext(tmp_path / "run"))
    assert summary["started_from"] == str(SHIPPED)
    assert summary["test_accuracy"] > 0.95  # the shipped classifier's 98.06%, unchanged at lr 1e-12
    assert str(SHIPPED) in json.dumps(json.loads((tmp_path / "run" / "classifier.json").read_text()))


def test_init_from_of_another_architecture_is_a_named_error(compose_cfg, tmp_path):
    diffusion = ROOT / "checkpoints" / "digits" / "diffusion"
    cfg = compose_cfg(*FROZEN, f"task.init_from={diffusion}", f"paths.training={tmp_path / 'state'}")
    with pytest.raises(CheckpointError, match="architecture"):
        run_task(cfg, RunContext(tmp_path / "run"))


def test_empty_init_from_is_a_config_error(compose_cfg, tmp_path):
    cfg = compose_cfg(*FROZEN, "task.init_from=''", f"paths.training={tmp_path / 'state'}")
    with pytest.raises(ConfigError, match=r"task\.init_from"):
        run_task(cfg, RunContext(tmp_path / "run"))
