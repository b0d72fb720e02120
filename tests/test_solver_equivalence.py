"""On the digits default, the fast path and the reference path give the same accuracies.

Reference: ``purifier.solver=torchsde`` (torchsde.sdeint, fp32). The two paths draw different
random numbers, so the check is statistical: every defended accuracy of one path lies inside the
other's 95% Wilson interval. A fast CPU version runs in ``make test`` (PGD-EOT, small budget); the
``slow`` version runs the default job (AutoAttack, 64 images) per path; the ``gpu`` version adds
bf16, channels_last and torch.compile with CUDA graphs to the fast path.
"""

from __future__ import annotations

import pytest

from advpure.cli import run_task
from advpure.tasks.context import RunContext

DEFENDED = (
    "defended_clean",
    "defended_robust",
    "defended_clean_majority",
    "defended_robust_majority",
    "defended_clean_worst",
    "defended_robust_worst",
)
# 64 images (the intervals' width), PGD-EOT 3 x 2 and 4 scoring draws (majority vote and worst of
# 4): each evaluation ~12 s on one busy CPU thread. The slow version below runs the default job.
QUICK = (
    "task.n_images=64",
    "task.batch_size=64",
    "attack=pgd_eot",
    "attack.n_iter=3",
    "attack.n_eot=2",
    "task.n_vote=4",
    "task.n_worst=4",
    "logger=none",
    "task.resume=false",
)


def _metrics(compose_cfg, tmp_path, name: str, *overrides: str) -> dict:
    cfg = compose_cfg(*overrides, f"paths.evaluations={tmp_path}/store_{name}")
    return run_task(cfg, RunContext(tmp_path / name))["metrics"]


def _assert_within_each_others_intervals(fast: dict, reference: dict) -> None:
    for key in DEFENDED:
        a, b = fast[key], reference[key]
        assert b["ci_low"] <= a["value"] <= b["ci_high"], (key, a, b)
        assert a["ci_low"] <= b["value"] <= a["ci_high"], (key, a, b)


@pytest.fixture(scope="module")
def quick_loop(tmp_path_factory) -> dict:
    """The fast path (advpure's loop) on the quick digits evaluation, shared by the tests below."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.conftest import CONF

    folder = tmp_path_factory.mktemp("quick_loop")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*QUICK, f"paths.evaluations={folder}/store"])
    GlobalHydra.instance().clear()
    return run_task(cfg, RunContext(folder / "run"))["metrics"]


def test_loop_and_torchsde_reference_agree_on_digits(compose_cfg, tmp_path, quick_loop):
    fast = quick_loop
    reference = _metrics(compose_cfg, tmp_path, "torchsde", *QUICK, "purifier.solver=torchsde")
    _assert_within_each_others_intervals(fast, reference)
    # The attack does something and the defense defends: the comparison is not between two trivia.
    assert fast["undefended_robust"]["value"] < fast["defended_robust"]["value"]
    assert reference["undefended_robust"]["value"] < reference["defended_robust"]["value"]


def test_the_interval_check_fails_for_a_different_purification(compose_cfg, tmp_path, quick_loop):
    """The same check tells DiffPure at t* = 0.1 from t* = 1 (pure noise: chance accuracy)."""
    fast = quick_loop
    other = _metrics(compose_cfg, tmp_path, "far", *QUICK, "purifier.t_star=1.0", "purifier.dt=0.1")
    with pytest.raises(AssertionError):
        _assert_within_each_others_intervals(fast, other)


@pytest.mark.slow
def test_default_job_loop_and_torchsde_reference_agree_on_digits(compose_cfg, tmp_path):
    """``make run``'s evaluation (the default attack, DiffHammer, on 64 images) once per path."""
    fast = _metrics(compose_cfg, tmp_path, "loop", "logger=none", "task.resume=false")
    reference = _metrics(
        compose_cfg, tmp_path, "torchsde", "logger=none", "task.resume=false", "purifier.solver=torchsde"
    )
    _assert_within_each_others_intervals(fast, reference)


@pytest.mark.gpu
def test_gpu_fast_path_and_reference_agree_on_digits(compose_cfg, tmp_path):
    gpu = ("hardware=gpu", "task.n_images=256", "task.batch_size=128")
    fast = _metrics(
        compose_cfg,
        tmp_path,
        "fast",
        *QUICK,
        *gpu,
        "diffusion.precision=bf16",
        "diffusion.channels_last=true",
        "diffusion.compile=reduce-overhead",
    )
    reference = _metrics(compose_cfg, tmp_path, "reference", *QUICK, *gpu, "purifier.solver=torchsde")
    _assert_within_each_others_intervals(fast, reference)
