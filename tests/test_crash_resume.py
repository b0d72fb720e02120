"""Training resumes from its last finished epoch after a crash or SIGKILL, and ends with the weights
of an uninterrupted run. (Evaluations: tests/test_resume_and_ddp.py kills one by SIGKILL and
tests/test_determinism.py interrupts one in process; sweeps: the lead's sweep tests.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from safetensors.torch import load_file

from advpure.cli import run_task
from advpure.tasks.context import RunContext
from advpure.training.resume import EpochCheckpoint
from tests.conftest import ROOT

TRAIN = ("task=train_classifier", "classifier.checkpoint=null", "classifier.net.width=8", "logger=none")


class CrashError(Exception):
    """Stands for the process dying."""


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "classifier.safetensors"))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_crash_after_an_epoch_resumes_to_the_uninterrupted_weights(compose_cfg, tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        epochs = ("task.max_epochs=3",)
        clean = run_task(
            compose_cfg(*TRAIN, *epochs, f"paths.training={tmp_path / 'state_a'}"), RunContext(tmp_path / "a")
        )
        assert clean["resume"]["resumed_after_epochs"] == 0

        original = EpochCheckpoint.on_train_epoch_end

        def crash_after_epoch_two(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            original(self, trainer, module)
            if trainer.current_epoch == 1:  # epoch 2 is on disk; the process dies before epoch 3
                raise CrashError

        cfg = compose_cfg(*TRAIN, *epochs, f"paths.training={tmp_path / 'state_b'}")
        monkeypatch.setattr(EpochCheckpoint, "on_train_epoch_end", crash_after_epoch_two)
        with pytest.raises(CrashError):
            run_task(cfg, RunContext(tmp_path / "b_killed"))
        monkeypatch.setattr(EpochCheckpoint, "on_train_epoch_end", original)
        resumed = run_task(cfg, RunContext(tmp_path / "b"))
    finally:
        torch.set_num_threads(threads)
    assert resumed["resume"]["resumed_after_epochs"] == 2  # only epoch 3 runs again
    assert _same(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    assert resumed["test_accuracy"] == clean["test_accuracy"]


def _train_command(*overrides: str) -> list[str]:
    return [sys.executable, "run.py", *TRAIN, "task.max_epochs=6", *overrides]


def _env(state: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "ADVPURE_TRAINING": str(state)}


@pytest.mark.slow
def test_sigkill_during_training_then_same_command_resumes(tmp_path):
    state = tmp_path / "state"
    process = subprocess.Popen(
        _train_command(f"hydra.run.dir={tmp_path / 'killed'}"),
        cwd=ROOT,
        env=_env(state),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300

    def epochs_on_disk() -> int:
        infos = list(state.glob("*/last.json"))
        return json.loads(infos[0].read_text())["epoch"] if infos else 0

    while epochs_on_disk() < 1 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = epochs_on_disk()
    assert 1 <= done < 6, "the kill should land after the first of 6 epochs and before the last"

    resumed = subprocess.run(
        _train_command(f"hydra.run.dir={tmp_path / 'resumed'}"),
        cwd=ROOT,
        env=_env(state),
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((tmp_path / "resumed" / "classifier.json").read_text())["metadata"]
    assert summary["resume"]["resumed_after_epochs"] == done  # the epoch in flight is the only work redone

    clean = subprocess.run(
        _train_command(f"hydra.run.dir={tmp_path / 'clean'}"),
        cwd=ROOT,
        env=_env(tmp_path / "other_state"),
        capture_output=True,
        text=True,
    )
    assert clean.returncode == 0, clean.stderr[-3000:]
    assert _same(_weights(tmp_path / "resumed"), _weights(tmp_path / "clean"))
    clean_summary = json.loads((tmp_path / "clean" / "classifier.json").read_text())["metadata"]
    assert summary["test_accuracy"] == clean_summary["test_accuracy"]
