"""Batches as the unit of work and randomness: resume after SIGKILL, 1 vs 2 DDP processes, the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advpure.cli import run_task
from advpure.errors import ConfigError
from advpure.evaluation.batches import BatchPlan, stream_seed
from advpure.evaluation.store import BatchStore, evaluation_key, fingerprint
from advpure.tasks.context import RunContext
from tests.conftest import ROOT

# A few cheap batches, slow enough (a few seconds each) that a kill lands between them.
PGD = ("attack=pgd_eot", "attack.n_iter=8", "attack.n_eot=4", "logger=none", "task.n_vote=3", "task.n_worst=3")


def _command(*overrides: str) -> list[str]:
    return [sys.executable, "run.py", *PGD, *overrides]


def _env() -> dict[str, str]:
    # One thread per process in every run compared, so 1 and 2 processes do identical arithmetic.
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(*overrides: str) -> dict:
    result = subprocess.run(_command(*overrides), cwd=ROOT, capture_output=True, text=True, timeout=600, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next(o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir="))
    return json.loads((Path(run_dir) / "results.json").read_text())


def test_stream_seeds_depend_only_on_seed_batch_and_stream():
    assert stream_seed(0, 3, "attack") == stream_seed(0, 3, "attack")
    seeds = {stream_seed(s, b, k) for s in (0, 1) for b in range(50) for k in ("attack", "scoring")}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_every_batch_runs_on_exactly_one_process(world):
    plan = BatchPlan.cut(list(range(10, 33)), 5)
    assert [len(b) for b in plan.batches] == [5, 5, 5, 5, 3]
    assert [i for b in plan.batches for i in b] == list(range(10, 33))
    ran = sorted(b for rank in range(world) for b in plan.for_rank(rank, world))
    assert ran == list(range(len(plan)))


def test_fingerprint_ignores_number_neutral_keys_and_follows_everything_else(compose_cfg):
    from omegaconf import OmegaConf

    def key(*overrides: str) -> str:
        cfg = OmegaConf.to_container(compose_cfg(*overrides), resolve=True, enum_to_str=True)
        return fingerprint(evaluation_key(cfg))

    base = key()
    for neutral in ("logger=csv", "task.n_images=32", "task.resume=false", "task.n_panel=2", "hardware.devices=2"):
        assert key(neutral) == base, neutral
    for change in ("seed=1", "task.batch_size=16", "purifier.t_star=0.05", "attack.n_eot=2", "hardware=gpu"):
        assert key(change) != base, change


def test_store_reuses_a_batch_only_for_the_same_images(tmp_path):
    store = BatchStore(tmp_path, {"a": 1})
    columns = ("label", "undefended_clean_pred", "undefended_adv_pred", "defended_clean_pred", "defended_adv_pred")
    records = [
        {"index": i, **dict.fromkeys(columns, 1), "defended_clean_draws": "1", "defended_adv_draws": "1"}
        for i in (4, 5)
    ]
    store.save(0, {"indices": [4, 5], "records": records})
    assert store.load(0, [4, 5])["records"][1] == records[1]
    assert store.load(0, [4, 6]) is None and store.load(1, [4, 5]) is None
    store.batch_path(1).write_text('{"indices": [7')  # a foreign, truncated file is recomputed
    assert store.load(1, [7]) is None
    assert BatchStore(tmp_path, {"a": 2}).folder != store.folder
    assert json.loads((store.folder / "key.json").read_text()) == {"a": 1}


def test_more_processes_than_batches_is_refused_before_work(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "hardware=ddp", "hardware.accelerator=cpu", "hardware.devices=2", "task.n_images=2", "task.batch_size=2"
    )
    with pytest.raises(ConfigError, match=r"task\.batch_size.*1 batches for 2 processes"):
        run_task(cfg, RunContext(tmp_path))


@pytest.mark.slow  # ~70 s; the fast suite kills an evaluation in process (tests/test_determinism.py)
def test_sigkill_then_same_command_resumes_and_equals_an_uninterrupted_run(tmp_path):
    store, other_store = tmp_path / "store", tmp_path / "uninterrupted"
    common = ("task.n_images=12", "task.batch_size=3", f"paths.evaluations={store}")
    process = subprocess.Popen(
        _command(*common, f"hydra.run.dir={tmp_path / 'killed'}"),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not list(store.glob("*/batch_00000.json")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(list(store.glob("*/batch_*.json")))
    assert 1 <= finished < 4, "the kill should land after the first of 4 batches and before the last"

    resumed = _run(*common, f"hydra.run.dir={tmp_path / 'resumed'}")
    assert resumed["batches"]["reused"] == finished  # no finished batch is redone
    assert resumed["batches"]["computed_now"] == 4 - finished
    assert resumed["batches"]["reused_from"] == [str(tmp_path / "killed")]

    common_other = (*common[:-1], f"paths.evaluations={other_store}")
    uninterrupted = _run(*common_other, f"hydra.run.dir={tmp_path / 'uninterrupted_run'}")
    assert uninterrupted["batches"]["computed_now"] == 4
    assert resumed["records"] == uninterrupted["records"]
    assert resumed["metrics"] == uninterrupted["metrics"]


@pytest.mark.slow  # ~60 s; the fast suite runs 2 CPU processes through the CLI (tests/test_evaluate.py)
def test_two_ddp_processes_give_the_records_of_one(tmp_path):
    common = ("task.n_images=10", "task.batch_size=2", "task.resume=false")  # 5 batches: 3 on rank 0, 2 on rank 1
    one = _run(*common, f"hydra.run.dir={tmp_path / 'one'}")
    two = _run(
        *common,
        "hardware=ddp",
        "hardware.accelerator=cpu",
        "hardware.devices=2",
        f"hydra.run.dir={tmp_path / 'two'}",
    )
    assert [r["index"] for r in two["records"]] == list(range(10))
    assert two["records"] == one["records"]
    assert two["metrics"] == one["metrics"]
    assert two["batches"]["computed_now"] == 5


def test_ddp_inside_a_multirun_is_refused(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "run.py",
            "-m",
            "hardware=ddp",
            "hardware.accelerator=cpu",
            "purifier.t_star=0.05,0.1",
            f"hydra.sweep.dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "config key 'hardware'" in result.stderr and "inside a multirun" in result.stderr
    assert "Traceback" not in result.stderr
