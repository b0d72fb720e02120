"""Same seed, same command: identical results.json on CPU; another seed: other noise draws; every
random stream's seed is recorded. An evaluation interrupted after a batch resumes redoing at most
the batch in flight; a full disk or read-only folder is a clear error that leaves earlier results intact."""

from __future__ import annotations

import errno
import json
import tempfile
from pathlib import Path

import pytest
from safetensors.torch import load_file

from advpure.cli import run_task
from advpure.errors import OutputError
from advpure.evaluation.store import BatchStore
from advpure.evaluation.tables import write_results
from advpure.tasks.context import RunContext

TINY = (
    "attack=pgd_eot",
    "attack.n_iter=2",
    "attack.n_eot=2",
    "purifier.dt=0.05",
    "task.n_images=4",
    "task.batch_size=2",
    "task.n_vote=2",
    "task.n_worst=2",
    "task.n_panel=2",
    "task.resume=false",
    "logger=none",
)
# What legitimately differs between two runs of one command: where they ran and stored.
RUN_FIELDS = ("command", "run_dir")


def comparable(results: dict) -> dict:
    """``results`` less the fields that name the run's folders."""
    kept = {k: v for k, v in results.items() if k not in RUN_FIELDS}
    kept["batches"] = {k: v for k, v in kept["batches"].items() if k not in ("store", "reused_from")}
    kept["config"] = {k: v for k, v in kept["config"].items() if k != "paths"}
    return kept


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def evaluate(tmp_path_factory):
    """``evaluate(name, *overrides)`` -> (run folder, results.json as written), in process."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.conftest import CONF

    root = tmp_path_factory.mktemp("determinism")

    def run(name: str, *overrides: str, store: str | None = None) -> tuple[Path, dict]:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[*TINY, f"paths.evaluations={root / (store or name)}", *overrides])
        GlobalHydra.instance().clear()
        run_dir = root / name
        run_task(cfg, RunContext(run_dir, command="python run.py " + " ".join(overrides)))
        return run_dir, json.loads((run_dir / "results.json").read_text())

    cache: dict[str, tuple[Path, dict]] = {}

    def cached(name: str, *overrides: str, **kwargs) -> tuple[Path, dict]:
        if name not in cache:
            cache[name] = run(name, *overrides, **kwargs)
        return cache[name]

    return cached


def test_same_seed_gives_identical_results_json(evaluate):
    _, first = evaluate("seed0")
    _, second = evaluate("seed0_again")
    assert first["batches"]["computed_now"] == second["batches"]["computed_now"] == 2
    assert comparable(first) == comparable(second)


def test_other_seed_draws_other_noise_and_every_seed_is_recorded(evaluate):
    _, first = evaluate("seed0")
    _, other = evaluate("seed1", "seed=1")
    assert other["seeds"]["seed"] == 1 and first["seeds"]["seed"] == 0
    for results in (first, other):
        seeds = results["seeds"]
        assert {"subset_seed", "attack_seed", "purifier_seed", "batch_streams"} <= set(seeds)
        for check in results["attack_checks"]:
            assert set(check["stream_seeds"]) == {"attack", "scoring"}
    streams = [c["stream_seeds"] for c in first["attack_checks"]]
    assert streams != [c["stream_seeds"] for c in other["attack_checks"]]
    assert len({s["attack"] for s in streams} | {s["scoring"] for s in streams}) == 4  # all distinct
    # purification noise: the purified panel images differ; attack restarts: the perturbations differ
    purified = [load_file(str(Path(r["batches"]["store"]) / "panel.safetensors"))["purified"] for r in (first, other)]
    assert not purified[0].equal(purified[1])
    assert [r["defended_l2"] for r in first["records"]] != [r["defended_l2"] for r in other["records"]]


def test_interrupted_evaluation_redoes_at_most_the_batch_in_flight(evaluate, monkeypatch):
    _, uninterrupted = evaluate("seed0")
    saved: list[int] = []
    original = BatchStore.save

    def save_then_crash(self, batch_id, payload):
        if saved:  # the process dies while the second batch is being written: only its temp file remains
            (self.folder / f".{self.batch_path(batch_id).name}.crashed.tmp").write_text('{"indices": [')
            raise KeyboardInterrupt
        saved.append(batch_id)
        return original(self, batch_id, payload)

    monkeypatch.setattr(BatchStore, "save", save_then_crash)
    with pytest.raises(BaseException):  # noqa: B017 (Lightning may wrap the interrupt)
        evaluate("crashed", "task.resume=true", store="crash_store")
    monkeypatch.setattr(BatchStore, "save", original)
    _, resumed = evaluate("resumed", "task.resume=true", store="crash_store")
    assert resumed["batches"]["reused"] == 1 and resumed["batches"]["computed_now"] == 1
    assert resumed["records"] == uninterrupted["records"]
    assert resumed["metrics"] == uninterrupted["metrics"]


def _full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_is_a_clear_error_and_earlier_results_stay(evaluate, monkeypatch):
    run_dir, results = evaluate("seed0")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    monkeypatch.setattr(Path, "write_text", _full_disk)
    with pytest.raises(OutputError, match="No space left on device") as error:
        write_results(run_dir, results, results["records"], None)
    assert f"cannot write {run_dir / 'records.csv'}" in str(error.value)  # the first file it writes
    assert "Fix:" in str(error.value)
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert after == before  # nothing overwritten, no temporary file left behind


def test_full_disk_before_work_fails_at_start(compose_cfg, monkeypatch, tmp_path):
    cfg = compose_cfg(*TINY)
    monkeypatch.setattr(Path, "write_text", _full_disk)
    with pytest.raises(OutputError, match=r"hydra\.run\.dir.*No space left"):
        run_task(cfg, RunContext(tmp_path / "run"))


def test_read_only_output_folder_is_a_clear_error(compose_cfg, monkeypatch, tmp_path):
    import os

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text('{"earlier": true}')
    if os.geteuid() == 0:  # root writes through chmod: simulate the read-only file system instead

        def read_only(*_args, **_kwargs):
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(tempfile, "mkstemp", read_only)
    else:
        run_dir.chmod(0o555)
    try:
        with pytest.raises(OutputError) as error:
            run_task(compose_cfg(*TINY, f"paths.evaluations={tmp_path / 'store'}"), RunContext(run_dir))
    finally:
        run_dir.chmod(0o755)
    assert str(run_dir) in str(error.value) and "Fix:" in str(error.value)
    assert (run_dir / "results.json").read_text() == '{"earlier": true}'
