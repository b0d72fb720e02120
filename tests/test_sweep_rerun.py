"""Re-running a job or an interrupted sweep: finished jobs are skipped, the rest run, numbers agree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from advpure.cli import run_task
from advpure.tasks.context import RunContext
from tests.conftest import ROOT

TINY = ("attack=pgd_eot", "attack.n_iter=2", "attack.n_eot=1", "task.n_images=4", "task.batch_size=4")
TINY += ("task.n_vote=2", "task.n_worst=2", "logger=none")


def test_a_finished_job_is_skipped_on_rerun_and_resume_false_recomputes(compose_cfg, tmp_path):
    common = (*TINY, f"paths.evaluations={tmp_path / 'store'}")
    first = run_task(compose_cfg(*common), RunContext(tmp_path / "first", "first"))
    assert "skipped" not in first and first["batches"]["computed_now"] == 1

    started = time.perf_counter()
    again = run_task(compose_cfg(*common), RunContext(tmp_path / "again", "again"))
    skip_seconds = time.perf_counter() - started
    assert again["skipped"]["results_from"] == str(tmp_path / "first")
    assert again["skipped"]["result_key"] == first["result_key"]
    assert again["command"] == "again" and again["run_dir"] == str(tmp_path / "again")
    written = json.loads((tmp_path / "again" / "results.json").read_text())
    first_written = json.loads((tmp_path / "first" / "results.json").read_text())
    assert written["metrics"] == first["metrics"] and written["records"] == first_written["records"]
    assert (tmp_path / "again" / "records.csv").read_text() == (tmp_path / "first" / "records.csv").read_text()
    assert (tmp_path / "again" / "panel.png").read_bytes() == (tmp_path / "first" / "panel.png").read_bytes()
    assert skip_seconds < 5, "a skipped job builds no model and runs no attack"

    # another image count is another result (its batches are still reused), and resume=false recomputes
    more = run_task(compose_cfg(*common, "task.n_images=8"), RunContext(tmp_path / "more", "more"))
    assert "skipped" not in more and more["result_key"] != first["result_key"]
    assert more["batches"] == {**more["batches"], "computed_now": 1, "reused": 1}
    fresh = run_task(compose_cfg(*common, "task.resume=false"), RunContext(tmp_path / "fresh", "fresh"))
    assert "skipped" not in fresh and fresh["batches"]["computed_now"] == 1
    fresh_written = json.loads((tmp_path / "fresh" / "results.json").read_text())
    assert fresh_written["records"] == first_written["records"]


def _sweep(sweep_dir, store) -> list[str]:
    command = [sys.executable, "run.py", "-m", *TINY, "purifier.t_star=0.03,0.06,0.09"]
    command += [f"paths.evaluations={store}", f"hydra.sweep.dir={sweep_dir}"]
    return command


@pytest.mark.slow
def test_sigkilled_sweep_rerun_skips_finished_jobs_and_equals_an_uninterrupted_sweep(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    store, killed_dir = tmp_path / "store", tmp_path / "killed"
    process = subprocess.Popen(
        _sweep(killed_dir, store), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not list(killed_dir.glob("0_*/results.json")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = sorted(p.parent.name for p in killed_dir.glob("*/results.json"))
    assert 1 <= len(done_before) < 3, "the kill should land after the first of 3 jobs and before the last"

    rerun_dir = tmp_path / "rerun"
    subprocess.run(_sweep(rerun_dir, store), cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    rerun = {p.parent.name: json.loads(p.read_text()) for p in rerun_dir.glob("*/results.json")}
    assert len(rerun) == 3
    skipped = sorted(name for name, r in rerun.items() if "skipped" in r)
    assert skipped == done_before  # every finished job skipped, no other
    for name in skipped:
        assert rerun[name]["skipped"]["results_from"] == str(killed_dir / name)

    clean_dir = tmp_path / "uninterrupted"
    subprocess.run(
        _sweep(clean_dir, tmp_path / "other_store"), cwd=ROOT, env=env, check=True, capture_output=True, timeout=600
    )
    clean = [json.loads(p.read_text()) for p in clean_dir.glob("*/results.json")]
    assert all("skipped" not in r and r["batches"]["reused"] == 0 for r in clean)

    def by_t_star(results, field):
        return {r["purifier"]["t_star"]: r[field] for r in results}

    assert by_t_star(rerun.values(), "metrics") == by_t_star(clean, "metrics")
    assert by_t_star(rerun.values(), "records") == by_t_star(clean, "records")
    assert "missing results.json" not in (rerun_dir / "sweep.md").read_text()


@pytest.mark.parametrize("key", ["classifier.weights", "diffusion.weights", "purifier.auxiliary.checkpoint"])
def test_rewriting_a_weights_file_the_config_names_starts_a_new_store(tmp_path, key):
    """A re-run after replacing a published weights file never reuses results of the old file."""
    import os

    from advpure.evaluation.store import evaluation_key, fingerprint

    weights = tmp_path / "model.pt"
    weights.write_bytes(b"first")
    parent, leaf = key.rsplit(".", 1)
    config: dict = {}
    node = config
    for part in parent.split("."):
        node = node.setdefault(part, {})
    node[leaf] = str(weights)
    before = fingerprint(evaluation_key(config))
    weights.write_bytes(b"second, longer")
    os.utime(weights, ns=(1, 1))
    assert fingerprint(evaluation_key(config)) != before
