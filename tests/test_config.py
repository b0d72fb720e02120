"""Every option composes and validates; every bad value fails at start-up naming its key."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hydra.errors import ConfigCompositionException, HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from advpure.config.enums import Norm
from advpure.config.validate import validate_config
from advpure.errors import ConfigError, DataError
from advpure.instantiate import build
from advpure.tasks.components import build_logger, build_trainer, purifier_on
from tests.conftest import ROOT, group_options

GROUPS = (
    "dataset",
    "classifier",
    "diffusion",
    "purifier",
    "attack",
    "hardware",
    "logger",
    "task",
    "budget",
)


# Options with a key the user must supply (``???``), and a value that fills it for these tests.
USER_SUPPLIED = {"torch_module": ("classifier.net.model._target_=advpure.models.digits_cnn.DigitsCNN",)}


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes_and_validates(compose_cfg, group, tmp_path):
    options = group_options(group)
    assert options, f"conf/{group} has no options"
    for option in options:
        cfg = compose_cfg(f"{group}={option}", *USER_SUPPLIED.get(option, ()))
        typed = validate_config(cfg)
        assert OmegaConf.select(cfg, "budget") in {"cpu_quick", "published"}
        if group == "budget":
            assert typed.budget == option


def test_cheap_options_instantiate(compose_cfg, tmp_path):
    cfg = compose_cfg()
    datamodule = build(cfg.dataset, key="dataset")
    assert datamodule.num_classes == 10
    for option in group_options("classifier"):
        node = compose_cfg(f"classifier={option}", *USER_SUPPLIED.get(option, ())).classifier.net
        with torch.device("meta"):  # published architectures at full size (WRN-70-16: 267M parameters)
            net = build(node, key="classifier.net")
        assert isinstance(net, torch.nn.Module)
    backbone = build(cfg.diffusion.net, key="diffusion.net")
    for option in group_options("purifier"):
        purifier = purifier_on(compose_cfg(f"purifier={option}").purifier, backbone, threat_eps=0.15)
        assert purifier.settings()["name"] == option
        assert purifier.settings().get("guide_eps", 0.15) == 0.15  # a null guide_eps takes the threat model's
    for option in group_options("attack"):
        attack = build(compose_cfg(f"attack={option}").attack, key="attack", eps=0.1)
        assert attack.norm == Norm.Linf
    for option in ("csv", "none"):
        logger = build_logger(compose_cfg(f"logger={option}").logger, tmp_path)
        assert (logger is False) == (option == "none")
    trainer = build_trainer(cfg.hardware, False, tmp_path)
    assert trainer.num_devices == 1


def test_default_job_budget_is_reduced_and_published_is_not(compose_cfg):
    quick = compose_cfg()
    assert quick.budget == "cpu_quick"
    budget = (quick.purifier.dt, quick.attack.n_iter, quick.attack.n_eot, quick.task.n_images)
    assert budget == (0.01, 40, 8, 64)  # DiffHammer, the default attack: 40 iterations x 8 draws
    published = compose_cfg("budget=published")
    assert (published.purifier.dt, published.attack.n_iter, published.attack.n_eot) == (
        0.001,
        None,
        None,
    )
    assert published.task.n_images == 512
    assert (quick.purifier.checkpoint_steps, published.purifier.checkpoint_steps) == (False, True)
    assert (quick.purifier.surrogate.stride, published.purifier.surrogate.stride) == (50, 10)
    assert compose_cfg("purifier=diffpure_ddpm").purifier.stride == 10
    assert compose_cfg("purifier=diffpure_ddpm", "budget=published").purifier.stride == 1
    # the budget touches only the options it has files for: training tasks compose unchanged
    train = compose_cfg("task=train_classifier")
    assert train.task.max_epochs == 30


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("purifier.t_star=0", "purifier.t_star"),
        ("purifier.t_star=1.5", "purifier.t_star"),
        ("purifier.t_star=-0.1", "purifier.t_star"),
        ("purifier.dt=0", "purifier.dt"),
        ("purifier.dt=0.5", "purifier.dt"),
        ("purifier.beta_max=0.05", "purifier.beta_max"),
        ("attack.eps=-0.1", "attack.eps"),
        ("attack.eps=1.5", "attack.eps"),
        ("attack.n_iter=0", "attack.n_iter"),
        ("attack.n_eot=0", "attack.n_eot"),
        ("attack.n_restarts=0", "attack.n_restarts"),
        ("task.n_images=0", "task.n_images"),
        ("task.batch_size=0", "task.batch_size"),
        ("dataset.batch_size=0", "dataset.batch_size"),
        ("dataset.test_fraction=1.0", "dataset.test_fraction"),
        ("hardware.num_nodes=0", "hardware.num_nodes"),
        ("hardware.devices=0", "hardware.devices"),
        ("diffusion.pretrained=/some/folder", "diffusion.pretrained"),
    ],
)
def test_out_of_range_values_name_their_key(compose_cfg, override, key):
    cfg = compose_cfg(override)
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    assert error.value.key == key
    assert "Fix:" in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (("task=train_classifier", "task.max_epochs=0"), "task.max_epochs"),
        (("task=train_diffusion", "task.ema_decay=1.0"), "task.ema_decay"),
        (("task=train_diffusion", "task.beta_end=0.00001"), "task.beta_end"),
        (("task=train_classifier", "task.adversarial.steps=0"), "task.adversarial.steps"),
        (("purifier=diffpure_ddpm", "purifier.t_star=0.0004"), "purifier.t_star"),
        (("purifier=diffpure_ddpm", "purifier.stride=0"), "purifier.stride"),
        (("purifier=diffpure_ode", "purifier.dt=0.5"), "purifier.dt"),
        (("purifier.surrogate.stride=0",), "purifier.surrogate.stride"),
        (("purifier.surrogate.t_star=2",), "purifier.surrogate.t_star"),
        (("purifier.surrogate._target_=advpure.purifiers.identity.IdentityPurifier",), "purifier.surrogate._target_"),
        (("+purifier.surrogate.grad_mode=bpda",), "purifier.surrogate"),
        (("+purifier.surrogate.strid=3",), "purifier.surrogate"),
    ],
)
def test_task_and_purifier_ranges(compose_cfg, overrides, key):
    with pytest.raises(ConfigError) as error:
        validate_config(compose_cfg(*overrides))
    assert error.value.key == key


def test_l2_budget_may_exceed_one(compose_cfg):
    validate_config(compose_cfg("attack.norm=L2", "attack.eps=1.5"))


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("purifier.t_strar=0.1", "t_strar"),
        ("attack.epss=0.1", "epss"),
        ("task.n_image=3", "n_image"),
        ("classifier.net.widht=3", "widht"),
        ("purifier=diffpurr", "diffpurr"),
        ("attack=autoatack", "autoatack"),
        ("purifier.t_star=abc", "t_star"),
        ("attack.norm=L3", "L3"),
        ("attack.version=fast", "fast"),
        ("task.n_images=many", "n_images"),
        ("hardware.accelerator=tpu9", "accelerator"),
        ("purifier.grad_mode=bpdaa", "bpdaa"),
        ("purifier.method=milstein", "milstein"),
    ],
)
def test_typos_unknown_options_and_wrong_types_fail_at_compose(compose_cfg, override, needle):
    with pytest.raises((ConfigCompositionException, HydraException, OmegaConfBaseException)) as error:
        compose_cfg(override)
    assert needle in str(error.value)


def test_unknown_option_lists_available_ones(compose_cfg):
    with pytest.raises(ConfigCompositionException) as error:
        compose_cfg("attack=autoatack")
    assert "autoattack" in str(error.value) and "none" in str(error.value)


def test_autoattack_custom_version_needs_known_attacks(compose_cfg):
    with pytest.raises(ConfigError, match=r"attack\.attacks"):
        build(compose_cfg("attack=autoattack", "attack.version=custom").attack, key="attack", eps=0.1)
    with pytest.raises(ConfigError, match="apgd-xx"):
        build(
            compose_cfg("attack=autoattack", "attack.version=custom", "attack.attacks=[apgd-xx]").attack,
            key="attack",
            eps=0.1,
        )
    runner = build(
        compose_cfg("attack=autoattack", "attack.version=custom", "attack.attacks=[apgd-ce]").attack,
        key="attack",
        eps=0.1,
    )
    assert runner.settings()["attacks"] == ["apgd-ce"]


def test_missing_cifar_folder_names_path_and_override(compose_cfg, tmp_path):
    cfg = compose_cfg("dataset=cifar10", f"dataset.root={tmp_path / 'nowhere'}")
    validate_config(cfg)
    with pytest.raises(DataError) as error:
        build(cfg.dataset, key="dataset")
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in message
    assert "dataset.root=" in message and "dataset.download=true" in message


def test_cli_typo_exits_nonzero_naming_the_key():
    result = subprocess.run(
        [sys.executable, "run.py", "purifier.t_strar=0.1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "t_strar" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_range_error_exits_2_before_work(tmp_path):
    result = subprocess.run(
        [sys.executable, "run.py", "purifier.t_star=1.5", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "purifier.t_star" in result.stderr and "(0, 1]" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results.json").exists()


def test_jobs_of_one_sweep_share_a_wandb_group_named_after_it(compose_cfg, tmp_path):
    swept = build_logger(compose_cfg("logger=wandb").logger, tmp_path, sweep="12-00-00.000001_evaluate")
    assert swept._wandb_init["group"] == "12-00-00.000001_evaluate"
    chosen = build_logger(compose_cfg("logger=wandb", "logger.group=mine").logger, tmp_path, sweep="any")
    assert chosen._wandb_init["group"] == "mine"
    assert build_logger(compose_cfg("logger=wandb").logger, tmp_path)._wandb_init.get("group") is None
