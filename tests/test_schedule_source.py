"""The noise schedule has one source, ``diffusion.schedule``: every purifier, the score_sde network
and the training tasks follow it, and a disagreement is a named error at start-up."""

from __future__ import annotations

import json
import shutil

import pytest
from omegaconf import OmegaConf

from advpure.config.validate import check_combinations, validate_config
from advpure.errors import ConfigError
from tests.conftest import ROOT, group_options

SHIPPED = ROOT / "checkpoints" / "digits" / "diffusion"
DISCRETE = ("beta_start", "beta_end", "num_timesteps")


@pytest.mark.parametrize("purifier", [p for p in group_options("purifier") if p != "none"])
def test_every_purifier_follows_the_diffusion_groups_schedule(compose_cfg, purifier):
    cfg = compose_cfg(
        f"purifier={purifier}", "diffusion.schedule.beta_end=0.03", "diffusion.schedule.num_timesteps=500"
    )
    node = OmegaConf.to_container(cfg.purifier, resolve=True)
    if "beta_max" in node:  # continuous VP-SDE: beta_min = beta_start T, beta_max = beta_end T
        assert node["beta_min"] == pytest.approx(1e-4 * 500) and node["beta_max"] == pytest.approx(0.03 * 500)
    else:
        assert (node["beta_start"], node["beta_end"], node["num_timesteps"]) == (1e-4, 0.03, 500)
    surrogate = node.get("surrogate") or {}
    for key in set(DISCRETE) & set(surrogate):
        assert surrogate[key] == node.get(key, {"beta_start": 1e-4, "beta_end": 0.03, "num_timesteps": 500}[key])


def test_training_tasks_and_score_sde_follow_it(compose_cfg):
    train = compose_cfg("task=train_diffusion", "diffusion.schedule.beta_end=0.03")
    assert train.task.beta_end == 0.03 and train.task.num_train_timesteps == 1000
    aux = compose_cfg("task=train_agdm_aux", "diffusion.schedule.beta_start=0.0002")
    assert aux.task.noise.beta_start == 0.0002
    score = compose_cfg("diffusion=score_sde_cifar10", "dataset=cifar10", "classifier=wrn28_10")
    assert (score.diffusion.net.beta_min, score.diffusion.net.beta_max) == pytest.approx((0.1, 20.0))


def test_a_purifier_beta_set_apart_from_the_schedule_is_refused(compose_cfg):
    cfg = compose_cfg("purifier.beta_max=25.0")
    validate_config(cfg)
    with pytest.raises(ConfigError, match=r"purifier\.beta_max.*diffusion\.schedule"):
        check_combinations(cfg)


def test_a_checkpoint_trained_on_another_schedule_is_refused(compose_cfg, tmp_path):
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(SHIPPED.with_suffix(suffix), (tmp_path / "diffusion").with_suffix(suffix))
    cfg = compose_cfg(f"diffusion.checkpoint={tmp_path / 'diffusion'}")
    check_combinations(cfg)  # the shipped model records the default schedule: accepted
    cfg = compose_cfg(f"diffusion.checkpoint={tmp_path / 'diffusion'}", "diffusion.schedule.beta_end=0.03")
    with pytest.raises(ConfigError, match=r"diffusion\.schedule.*trained with"):
        check_combinations(cfg)
    recorded = json.loads((tmp_path / "diffusion.json").read_text())
    assert recorded["metadata"]["schedule"] == {"beta_start": 0.0001, "beta_end": 0.02, "T": 1000}
