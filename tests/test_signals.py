"""A run stopped by SIGTERM or SIGINT exits non-zero (143, 130) after its finished batches are
stored, says how to resume, and the same command then resumes to the uninterrupted result.

SLURM preemption sends SIGTERM: a scheduler must never read a stopped run as a success.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advpure import cli
from advpure.cli import EXIT_SIGINT, EXIT_SIGTERM, stop_signals
from advpure.evaluation.module import EvaluationModule
from advpure.tasks.context import RunContext
from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("single_thread")

# Four batches of one image under a tiny PGD: the stop lands between batches.
SMALL = (
    "attack=pgd_eot",
    "attack.n_iter=2",
    "attack.n_eot=1",
    "task.n_images=4",
    "task.batch_size=1",
    "task.n_vote=2",
    "task.n_worst=2",
    "logger=none",
)


def _run(compose_cfg, monkeypatch, run_dir: Path, store: Path) -> dict:
    cfg = compose_cfg(*SMALL, f"paths.evaluations={store}")
    monkeypatch.setattr(cli, "context_from_hydra", lambda: RunContext(run_dir))
    return cli.main(cfg)


def _signal_after_first_batch(monkeypatch, signum: int) -> None:
    original = EvaluationModule.evaluate_batch

    def evaluate_then_signal(self, x, y, index, batch_id):
        result = original(self, x, y, index, batch_id)
        if batch_id == 0:
            os.kill(os.getpid(), signum)  # arrives while Lightning's test loop runs
        return result

    monkeypatch.setattr(EvaluationModule, "evaluate_batch", evaluate_then_signal)


def test_sigterm_mid_evaluation_exits_143_then_resumes_to_the_same_records(compose_cfg, monkeypatch, tmp_path, capsys):
    reference = _run(compose_cfg, monkeypatch, tmp_path / "uninterrupted", tmp_path / "store_a")

    with monkeypatch.context() as patch:
        _signal_after_first_batch(patch, signal.SIGTERM)
        with pytest.raises(SystemExit) as stop:
            _run(compose_cfg, patch, tmp_path / "stopped", tmp_path / "store_b")
    assert stop.value.code == EXIT_SIGTERM  # Lightning's own SIGTERMException would exit 0
    err = capsys.readouterr().err
    assert "stopped by SIGTERM" in err and "re-run the same command" in err
    assert not (tmp_path / "stopped" / "results.json").exists()
    stored = sorted(p.name for p in (tmp_path / "store_b").rglob("batch_*.json"))
    assert stored and len(stored) < 4  # the finished batch is kept, the rest was never started

    resumed = _run(compose_cfg, monkeypatch, tmp_path / "resumed", tmp_path / "store_b")
    assert resumed["batches"]["reused"] == len(stored)
    assert resumed["batches"]["computed_now"] == 4 - len(stored)
    assert resumed["metrics"] == reference["metrics"]
    records = [(tmp_path / run / "records.csv").read_text() for run in ("resumed", "uninterrupted")]
    assert records[0] == records[1]


def test_sigint_inside_lightning_gives_130_not_lightnings_1(compose_cfg, monkeypatch, tmp_path, capsys):
    with monkeypatch.context() as patch:
        _signal_after_first_batch(patch, signal.SIGINT)
        with pytest.raises(SystemExit) as stop:
            _run(compose_cfg, patch, tmp_path / "stopped", tmp_path / "store")
    assert stop.value.code == EXIT_SIGINT
    assert "stopped by SIGINT" in capsys.readouterr().err
    assert not (tmp_path / "stopped" / "results.json").exists()


def test_sigterm_outside_a_lightning_loop_stops_at_once_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(cli.Terminated), stop_signals() as received:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert received["SIGTERM"]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_sigterm_to_run_py_subprocess_exits_143(tmp_path):
    """The real command line: SIGTERM once the first batch is stored -> 143 and the resume hint."""
    store = tmp_path / "store"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ADVPURE_EVALUATIONS": str(store)}
    command = [sys.executable, "run.py", *SMALL, f"hydra.run.dir={tmp_path / 'run'}"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(store.rglob("batch_00000.json")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=240)
    assert process.returncode == EXIT_SIGTERM, err[-2000:]
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "results.json").exists()


def test_multirun_with_cfg_is_a_clean_error_not_hydras_traceback():
    result = subprocess.run(
        [sys.executable, "run.py", "-m", "purifier.t_star=0.05,0.1", "--cfg", "job"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "cannot be combined" in result.stderr and "Traceback" not in result.stderr
