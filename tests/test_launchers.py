"""Launchers and searches: joblib (parallel local jobs), submitit (SLURM; its local executor runs
here), the Optuna sweeper preset and its constrained objective."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from advpure.cli import check_placement
from advpure.errors import ConfigError
from advpure.sweeps.objective import objective_value
from advpure.tasks.context import RunContext
from tests.conftest import CONF, ROOT

TINY = ("attack=pgd_eot", "attack.n_iter=2", "attack.n_eot=1", "task.n_images=4", "task.batch_size=4")
TINY += ("task.n_vote=2", "task.n_worst=2", "logger=none")


def _compose_with_hydra(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_hardware_slurm_gives_one_gpu_per_job_through_the_submitit_launcher():
    cfg = _compose_with_hydra("hardware=slurm", "hardware.slurm.partition=gpu", "hardware.slurm.time_min=600")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.timeout_min, launcher.gpus_per_node, launcher.tasks_per_node) == (
        "gpu",
        600,
        1,
        1,
    )
    assert cfg.hardware.devices == 1 and cfg.hardware.accelerator.value == "gpu"
    # more than one GPU per sweep job would be DDP inside a multirun: refused before any work
    two = _compose_with_hydra("hardware=slurm", "hardware.slurm.gpus_per_job=2")
    assert two.hydra.launcher.gpus_per_node == 2
    with pytest.raises(ConfigError, match=r"hardware.*inside a multirun"):
        check_placement(two, RunContext(ROOT, multirun=True))


def test_the_trainer_never_sees_the_slurm_settings(tmp_path):
    from advpure.tasks.components import build_trainer

    cfg = _compose_with_hydra("hardware=slurm", "hardware.accelerator=cpu")
    trainer = build_trainer(cfg.hardware, False, tmp_path)
    assert trainer.num_devices == 1


def test_optuna_preset_maximizes_a_persistent_study_over_the_guidance_scale():
    cfg = _compose_with_hydra("+sweep=optuna_guidance")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert str(sweeper.direction) == "maximize" and sweeper.sampler.seed == 0
    assert sweeper.params == {"purifier.guide_scale": "interval(0, 120000)"}
    assert sweeper.storage == f"sqlite:///{ROOT / 'outputs' / 'optuna' / 'optuna.db'}"
    assert cfg.purifier._target_.endswith("GDMP")
    assert cfg.task.objective.clean_floor == 0.9


@pytest.mark.parametrize(
    ("clean", "robust", "floor", "expected", "feasible"),
    [
        (0.95, 0.60, 0.9, 0.60, True),  # feasible: the robust metric itself
        (0.90, 0.70, 0.9, 0.70, True),  # the floor itself is feasible
        (0.85, 0.80, 0.9, -1.05, False),  # infeasible: clean - floor - 1, below every feasible value
        (0.10, 0.10, 0.9, -1.80, False),  # ... and lower the further from the floor
    ],
)
def test_objective_is_robust_accuracy_above_the_clean_floor_and_negative_below(
    clean, robust, floor, expected, feasible
):
    metrics = {"defended_clean": {"value": clean}, "defended_robust_worst": {"value": robust}}
    result = objective_value(metrics, "defended_robust_worst", floor)
    assert result["value"] == pytest.approx(expected) and result["feasible"] is feasible


def _multirun(*overrides: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "run.py", "-m", *TINY, *overrides], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher", [("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), ("hydra/launcher=submitit_local",)]
)
def test_parallel_and_submitit_launchers_run_every_job_and_write_the_report(tmp_path, launcher):
    sweep = tmp_path / "sweep"
    _multirun(*launcher, "purifier.t_star=0.03,0.06", f"hydra.sweep.dir={sweep}")
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert sorted(r["purifier"]["t_star"] for r in results) == [0.03, 0.06]
    assert "missing results.json" not in (sweep / "sweep.md").read_text()
    assert (sweep / "sweep.png").stat().st_size > 10_000
    if "submitit_local" in launcher[0]:
        assert list((sweep / ".submitit").glob("*/*_result.pkl")), "submitit ran the jobs"


@pytest.mark.slow
def test_optuna_study_persists_and_a_rerun_adds_trials(tmp_path):
    storage = tmp_path / "study.db"
    common = ("+sweep=optuna_guidance", "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage=sqlite:///{storage}")
    common += ("purifier.stride=36", "task.objective.clean_floor=0.5")
    _multirun(*common, f"hydra.sweep.dir={tmp_path / 'first'}")
    _multirun(*common, f"hydra.sweep.dir={tmp_path / 'second'}")
    with sqlite3.connect(storage) as db:
        (trials,) = db.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()
        values = [v for (v,) in db.execute("select value from trial_values order by trial_id")]
    assert trials == 2
    objectives = []
    for folder in ("first", "second"):
        (results_path,) = (tmp_path / folder).glob("*/results.json")
        results = json.loads(results_path.read_text())
        metrics, objective = results["metrics"], results["objective"]
        assert objective["feasible"] == (metrics["defended_clean"]["value"] >= 0.5)
        assert objective["value"] == objective_value(metrics, "defended_robust", 0.5)["value"]
        objectives.append(objective["value"])
    assert values == pytest.approx(objectives)  # what Optuna stored is what the jobs returned


def test_a_launcher_selection_gets_no_misspelt_key_hint():
    from advpure.cli import override_hints

    assert override_hints(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hardware=slurm"]) == []
    assert "did you mean purifier.t_star" in override_hints(["purifier.t_strar=0.1"])[0]


def test_a_gpu_placement_without_cuda_is_refused_naming_the_key(monkeypatch):
    import advpure.cli

    monkeypatch.setattr(advpure.cli, "_cuda_available", lambda: False)
    cfg = _compose_with_hydra("hardware=slurm")
    with pytest.raises(ConfigError, match=r"hardware\.accelerator.*no CUDA device.*only under -m"):
        check_placement(cfg, RunContext(ROOT, multirun=False))
    monkeypatch.setattr(advpure.cli, "_cuda_available", lambda: True)
    check_placement(cfg, RunContext(ROOT, multirun=True))  # one GPU per sweep job: accepted
