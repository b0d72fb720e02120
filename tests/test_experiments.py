"""Named presets (conf/experiment) and sweep presets (conf/sweep).

Every preset composes with ``+experiment=<name>``, validates, pins the recipe its header states,
and its header names the paper, what it needs and a command that composes; the digits presets run
end to end (slow). The sweep presets carry their sweeper params, and the jobs Hydra's basic
sweeper makes from them (alone and with command-line overrides) compose and validate.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from advpure.checkpoints import checkpoint_paths
from advpure.cli import run_task
from advpure.config.validate import validate_config
from advpure.tasks.context import RunContext
from tests.conftest import CONF, group_options

EXPERIMENTS = group_options("experiment")
SWEEPS = group_options("sweep")
# Sweep presets run by Hydra's basic sweeper (a grid); the others are searches (tests/test_launchers.py).
SEARCHES = ("optuna_guidance",)
GRID_SWEEPS = [name for name in SWEEPS if name not in SEARCHES]
EIGHT_OVER_255 = 8 / 255

# What each preset selects: dataset, classifier, diffusion, purifier, attack, budget.
CHOICES = {
    "diffpure_cifar10_linf": ("cifar10", "wrn28_10", "score_sde_cifar10", "diffpure", "autoattack", "published"),
    "diffpure_cifar10_l2": ("cifar10", "wrn28_10", "score_sde_cifar10", "diffpure", "autoattack", "published"),
    "leekim_pgd200": ("cifar10", "wrn28_10", "score_sde_cifar10", "diffpure", "pgd_eot_leekim", "published"),
    "gdmp_cifar10": ("cifar10", "wrn28_10", "ddpm_cifar10", "gdmp", "pgd_eot", "published"),
    "mimicdiffusion_cifar10": ("cifar10", "wrn28_10", "score_sde_cifar10", "mimicdiffusion", "pgd_eot", "published"),
    "agdm_cifar10": ("cifar10", "wrn28_10", "ddpm_cifar10", "agdm", "pgd_eot", "published"),
    "diffpure_imagenet": ("imagenet", "resnet50", "guided_imagenet256", "diffpure", "autoattack", "published"),
    "digits_diffpure": ("digits", "digits_cnn", "digits_unet", "diffpure", "pgd_eot", "cpu_quick"),
    "digits_diffpure_ddpm": ("digits", "digits_cnn", "digits_unet", "diffpure_ddpm", "pgd_eot", "cpu_quick"),
    "digits_diffpure_ode": ("digits", "digits_cnn", "digits_unet", "diffpure_ode", "pgd_eot", "cpu_quick"),
    "digits_gdmp": ("digits", "digits_cnn", "digits_unet", "gdmp", "pgd_eot", "cpu_quick"),
    "digits_mimicdiffusion": ("digits", "digits_cnn", "digits_unet", "mimicdiffusion", "pgd_eot", "cpu_quick"),
    "digits_agdm": ("digits", "digits_cnn", "digits_unet", "agdm", "pgd_eot", "cpu_quick"),
    "certify_digits": ("digits", "digits_cnn", "digits_unet", "diffpure_ddpm", "none", "cpu_quick"),
    "certify_cifar10_dds": ("cifar10", "wrn28_10", "ddpm_cifar10", "diffpure_ddpm", "none", "published"),
}
# The task each preset selects (evaluate unless listed).
TASKS = {"certify_digits": "certify", "certify_cifar10_dds": "certify"}
GROUPS = ("dataset", "classifier", "diffusion", "purifier", "attack", "budget")

# The values each preset's header claims (dotted key -> value; floats within 1e-6).
CIFAR_PGD = {"attack.norm": "Linf", "attack.eps": EIGHT_OVER_255, "attack.n_iter": 200, "attack.n_eot": 20}
CIFAR_TASK = {"task.n_images": 512, "task.batch_size": 64, "purifier.grad_mode": "full"}
DIGITS = {
    "attack.norm": "Linf",
    "attack.eps": 0.15,
    "attack.n_iter": 30,  # cpu_quick's PGD-EOT budget
    "attack.n_eot": 8,
    "task.n_images": 64,
    "task.batch_size": 32,
    "purifier.grad_mode": "full",
}
PINNED: dict[str, dict[str, Any]] = {
    "certify_digits": {
        "purifier.stride": 25,
        "task.sigma": 0.25,
        "task.denoiser": "one_shot",
        "task.n0": 100,
        "task.n": 1000,
        "task.alpha": 0.001,
        "task.n_images": 32,
    },
    "certify_cifar10_dds": {
        "task.sigma": 0.5,
        "task.n": 100000,
        "task.n0": 100,
        "task.alpha": 0.001,
        "task.batch": 200,
        "task.n_images": 10000,
        "task.image_stride": 1,
    },
    "diffpure_cifar10_linf": {
        "purifier.t_star": 0.1,
        "purifier.dt": 1e-3,
        "attack.version": "rand",
        "attack.norm": "Linf",
        "attack.eps": EIGHT_OVER_255,
        "attack.n_iter": None,  # AutoAttack's own 100 and EOT 20
        "attack.n_eot": None,
        **CIFAR_TASK,
    },
    "diffpure_cifar10_l2": {
        "purifier.t_star": 0.075,
        "purifier.dt": 1e-3,
        "attack.version": "rand",
        "attack.norm": "L2",
        "attack.eps": 0.5,
        "attack.n_iter": None,
        "attack.n_eot": None,
        **CIFAR_TASK,
    },
    "leekim_pgd200": {
        "purifier.t_star": 0.1,
        "purifier.dt": 1e-3,
        **CIFAR_PGD,
        "attack.step_size": 0.007,
        "task.n_vote": 10,
        "task.n_worst": 10,
        **CIFAR_TASK,
    },
    "gdmp_cifar10": {
        "purifier.t_star": 0.036,
        "purifier.n_repeats": 4,
        "purifier.distance": "mse",
        "purifier.guide_scale": 60000,
        "purifier.guide_eps": None,
        "purifier.stride": 1,
        "purifier.variance": "beta",
        **CIFAR_PGD,
        "attack.step_size": None,
        **CIFAR_TASK,
    },
    "mimicdiffusion_cifar10": {
        "purifier.start": "noise",
        "purifier.stride": 10,
        "purifier.rho": 3000,
        "purifier.guidance_window": [0.2, 0.9],
        "purifier.operator": "nearest",
        "purifier.operator_factor": 4,
        "purifier.loss_batch_size": 16,
        **CIFAR_PGD,
        **CIFAR_TASK,
    },
    "agdm_cifar10": {
        "purifier.t_star": 0.07,
        "purifier.stride": 1,
        "purifier.distance_scale": 1.0,
        "purifier.class_scale": 1.0,
        "purifier.distance": "mse",
        "purifier.embedding": "logits",
        "purifier.auxiliary.checkpoint": None,  # the shipped c_phi is the digits one
        **CIFAR_PGD,
        **CIFAR_TASK,
    },
    "diffpure_imagenet": {
        "purifier.t_star": 0.15,
        "purifier.dt": 1e-3,
        "diffusion.image_size": 256,
        "diffusion.precision": "fp16",
        "dataset.resize": 256,
        "dataset.crop": 224,
        "attack.version": "rand",
        "attack.norm": "Linf",
        "attack.eps": 4 / 255,
        "attack.n_iter": None,
        "attack.n_eot": None,
        "task.n_images": 512,
        "task.batch_size": 16,
        "purifier.grad_mode": "full",
    },
    "digits_diffpure": {"purifier.t_star": 0.1, "purifier.dt": 0.01, **DIGITS},
    "digits_diffpure_ddpm": {"purifier.t_star": 0.1, "purifier.stride": 10, "purifier.variance": "posterior", **DIGITS},
    "digits_diffpure_ode": {"purifier.t_star": 0.1, "purifier.dt": 0.01, "purifier.method": "euler", **DIGITS},
    "digits_gdmp": {"purifier.t_star": 0.036, "purifier.n_repeats": 4, "purifier.guide_scale": 60000, **DIGITS},
    "digits_mimicdiffusion": {"purifier.start": "noise", "purifier.rho": 3000, "purifier.stride": 100, **DIGITS},
    "digits_agdm": {"purifier.t_star": 0.07, "purifier.stride": 10, **DIGITS},
}

SWEEP_PARAMS = {
    "tstar": {"purifier.t_star": "0.02,0.05,0.1,0.2"},
    "guidance_scale": {"purifier.guide_scale": "0,15000,30000,60000,120000"},
}

FIELD = re.compile(r"^# ([a-z][a-z ]*): (.*)$")
KEY_ASSIGNMENT = re.compile(r"(?<![\w.$])([a-z_]+(?:\.[a-z_]+)+)=")


def compose_with_hydra(*overrides: str) -> DictConfig:
    """The composed config with its ``hydra`` node (group choices, sweeper params)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def plain(value: Any) -> Any:
    """Enums by name and OmegaConf containers as Python ones, to compare with literals."""
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def header_fields(path: Path) -> dict[str, str]:
    """The leading comment block of a preset as ``{field: text}``: a field is ``# name: text``,
    continued on lines that start with ``#   ``; anything else in the block fails."""
    lines = path.read_text().splitlines()
    assert lines[0] == "# @package _global_", f"{path.name} must start with '# @package _global_'"
    fields: dict[str, str] = {}
    current = None
    for line in lines[1:]:
        if not line.startswith("#"):
            break
        match = FIELD.match(line)
        if match:
            current = match.group(1)
            assert current not in fields, f"{path.name}: field {current!r} twice"
            fields[current] = match.group(2).strip()
        else:
            assert current is not None and line.startswith("#   "), f"{path.name}: stray header line {line!r}"
            fields[current] += " " + line[4:].strip()
    return fields


def command_overrides(command: str) -> list[str]:
    """The overrides of a ``python run.py ...`` command (one command, no prose)."""
    words = shlex.split(command)
    assert words[:2] == ["python", "run.py"], command
    return words[2:]


def needed_keys(cfg: DictConfig) -> list[str]:
    """The keys a user must set before the preset can run: data folders and weights that the
    repository does not ship (null checkpoints, CIFAR's folder)."""
    keys = []
    if not cfg.dataset._target_.endswith("DigitsDataModule"):
        keys.append("dataset.root")
    if cfg.classifier.checkpoint is None and cfg.classifier.weights is None:
        keys.append("classifier.weights")
    diffusion = cfg.diffusion
    if diffusion.checkpoint is None and diffusion.pretrained is None and diffusion.weights is None:
        diffusers = diffusion.net._target_.endswith("UNetEpsilon")  # the others load a published file
        keys.append("diffusion.pretrained" if diffusers else "diffusion.weights")
    if OmegaConf.select(cfg, "purifier.auxiliary") is not None and cfg.purifier.auxiliary.checkpoint is None:
        keys.append("purifier.auxiliary.checkpoint")
    return keys


def shipped_checkpoints(cfg: DictConfig) -> list[str]:
    """Every checkpoint stem the config loads from the repository."""
    stems = [cfg.classifier.checkpoint, cfg.diffusion.checkpoint]
    if OmegaConf.select(cfg, "purifier.auxiliary") is not None:
        stems.append(cfg.purifier.auxiliary.checkpoint)
    return [stem for stem in stems if stem is not None]


# ------------------------------------------------------------------- (a) compose and pin


def test_every_preset_is_listed_here():
    assert sorted(PINNED) == sorted(CHOICES) == EXPERIMENTS
    assert sorted(SWEEP_PARAMS) == GRID_SWEEPS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_preset_composes_validates_and_selects_its_options(compose_cfg, name):
    typed = validate_config(compose_cfg(f"+experiment={name}"))
    choices = compose_with_hydra(f"+experiment={name}").hydra.runtime.choices
    assert tuple(choices[group] for group in GROUPS) == CHOICES[name]
    assert choices["task"] == TASKS.get(name, "evaluate")
    assert typed.budget == CHOICES[name][-1]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_preset_pins_what_its_header_claims(compose_cfg, name):
    cfg = compose_cfg(f"+experiment={name}")
    for key, expected in PINNED[name].items():
        value = plain(OmegaConf.select(cfg, key, throw_on_missing=True))
        if isinstance(expected, float):
            assert value == pytest.approx(expected, abs=1e-6), key
        else:
            assert value == expected, key


def test_cifar_presets_use_the_published_budget_and_digits_presets_the_quick_one(compose_cfg):
    linf = compose_cfg("+experiment=diffpure_cifar10_linf")
    # budget=published: the cpu_quick files (dt 0.01, surrogate stride 50, no checkpointing) stay out
    assert (linf.purifier.dt, linf.purifier.surrogate.stride, linf.purifier.checkpoint_steps) == (1e-3, 10, True)
    gdmp = compose_cfg("+experiment=gdmp_cifar10")
    assert (gdmp.purifier.stride, gdmp.purifier.surrogate.stride) == (1, 6)
    # a command-line budget beats the preset's; a command-line value beats both
    published = compose_cfg("+experiment=digits_diffpure", "budget=published")
    assert (published.budget, published.purifier.dt, published.attack.n_iter) == ("published", 1e-3, None)
    assert published.task.n_images == 64
    override = compose_cfg("+experiment=diffpure_cifar10_linf", "purifier.t_star=0.05")
    assert (override.purifier.t_star, override.purifier.dt) == (0.05, 1e-3)


def test_agdm_cifar10_guides_with_a_wrn_like_the_classifier(compose_cfg):
    cfg = compose_cfg("+experiment=agdm_cifar10")
    auxiliary, classifier = plain(cfg.purifier.auxiliary.net), plain(cfg.classifier.net)
    assert auxiliary == classifier
    assert (auxiliary["_target_"], auxiliary["depth"], auxiliary["widen_factor"]) == (
        "advpure.models.wide_resnet.WideResNet",
        28,
        10,
    )


# ------------------------------------------------------------------ (b) what each needs


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_preset_header_names_paper_needs_and_a_command_that_composes(compose_cfg, name):
    fields = header_fields(CONF / "experiment" / f"{name}.yaml")
    assert {"paper", "recipe", "needs", "run"} <= set(fields), sorted(fields)
    assert re.search(r"\b(19|20)\d\d\b", fields["paper"]), "the paper line names a year"
    cfg = compose_cfg(f"+experiment={name}")
    needed = needed_keys(cfg)
    if needed:
        for key in needed:
            assert f"{key}=" in fields["needs"], f"needs: does not say how to set {key}"
    else:
        assert fields["needs"].startswith("nothing"), fields["needs"]
        for stem in shipped_checkpoints(cfg):
            assert all(path.is_file() for path in checkpoint_paths(stem)), stem
    # every dotted key the header mentions is a key of the preset (or of its prepare: command)
    prepare = compose_cfg(*command_overrides(fields["prepare"])) if "prepare" in fields else None
    for key in KEY_ASSIGNMENT.findall(" ".join(fields.values())):
        known = OmegaConf.select(cfg, key, default="<absent>") != "<absent>"
        known = known or (prepare is not None and OmegaConf.select(prepare, key, default="<absent>") != "<absent>")
        assert known, f"the header names {key}, which is no key of the preset"
    # the run: command composes, validates and sets every needed key
    overrides = command_overrides(fields["run"])
    assert overrides[0] == f"+experiment={name}"
    run_cfg = compose_cfg(*overrides)
    validate_config(run_cfg)
    for key in needed:
        assert OmegaConf.select(run_cfg, key) is not None, key
        assert any(o.startswith(f"{key}=") for o in overrides), f"run: does not set {key}"
    if prepare is not None:
        validate_config(prepare)


def test_agdm_cifar10_prepare_command_writes_the_auxiliary_checkpoint_run_reads(compose_cfg):
    fields = header_fields(CONF / "experiment" / "agdm_cifar10.yaml")
    prepare = compose_cfg(*command_overrides(fields["prepare"]))
    run = compose_cfg(*command_overrides(fields["run"]))
    assert prepare.task.name.name == "train_agdm_aux"
    assert prepare.task.export_to == run.purifier.auxiliary.checkpoint
    assert plain(prepare.task.net) == plain(run.purifier.auxiliary.net)
    assert prepare.task.noise.t_max >= run.purifier.t_star


# ------------------------------------------------------------------------ (c) end to end

DIGITS_PRESETS = [name for name in EXPERIMENTS if name.startswith("digits_")]
TINY = (
    "task.n_images=2",
    "attack.n_iter=1",
    "attack.n_eot=1",
    "task.n_vote=1",
    "task.n_worst=1",
    "task.n_panel=0",
    "logger=none",
)


@pytest.mark.slow
@pytest.mark.parametrize("name", DIGITS_PRESETS)
def test_digits_preset_runs_end_to_end(compose_cfg, tmp_path, name):
    cfg = compose_cfg(f"+experiment={name}", *TINY)
    run_task(cfg, RunContext(tmp_path, f"python run.py +experiment={name}", {"dataset": "digits"}))
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["purifier"]["name"] == CHOICES[name][3]
    assert stored["budget"] == "cpu_quick" and stored["attack"]["eps"] == pytest.approx(0.15)
    assert stored["metrics"]["defended_robust"]["n"] == 2


# ---------------------------------------------------------------------------- (d) sweeps


def sweep_jobs(name: str, *command_line: str) -> list[list[str]]:
    """The jobs of ``python run.py -m +sweep=<name> <command_line>``: Hydra's basic sweeper built
    from the composed ``hydra.sweeper`` node, fed the arguments as its ``sweep()`` feeds them."""
    node = compose_with_hydra(f"+sweep={name}").hydra.sweeper
    module, _, class_name = node._target_.rpartition(".")
    # looked up now: Hydra's plugin scan re-imports its plugin modules
    sweeper_class = getattr(importlib.import_module(module), class_name)
    sweeper = sweeper_class(max_batch_size=node.max_batch_size, params=plain(node.params))
    arguments = [*sweeper._parse_config(), f"+sweep={name}", *command_line]  # params, then the command line
    (jobs,) = sweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)
    return jobs


@pytest.mark.parametrize("name", GRID_SWEEPS)
def test_sweep_preset_composes_and_carries_its_params(compose_cfg, name):
    fields = header_fields(CONF / "sweep" / f"{name}.yaml")
    assert {"sweeps", "run", "combine"} <= set(fields)
    assert f"python run.py -m +sweep={name}" in fields["run"]
    cfg = compose_with_hydra(f"+sweep={name}")
    params = plain(cfg.hydra.sweeper.params)
    assert params == SWEEP_PARAMS[name]
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")
    (key,) = params
    values = [float(v) for v in params[key].split(",")]
    jobs = sweep_jobs(name)
    assert [job[0] for job in jobs] == [f"{key}={v}" for v in params[key].split(",")]
    for job, value in zip(jobs, values, strict=True):
        job_cfg = compose_cfg(*job)
        validate_config(job_cfg)
        assert OmegaConf.select(job_cfg, key) == pytest.approx(value)


@pytest.mark.parametrize("name", SEARCHES)
def test_search_preset_header_says_what_it_searches_how_to_run_it_and_how_it_persists(name):
    fields = header_fields(CONF / "sweep" / f"{name}.yaml")
    assert {"sweeps", "run", "persists", "honest numbers"} <= set(fields)
    assert f"python run.py -m +sweep={name}" in fields["run"]
    assert set(SEARCHES) | set(GRID_SWEEPS) == set(SWEEPS)


def test_guidance_scale_sweep_selects_gdmp(compose_cfg):
    assert compose_with_hydra("+sweep=guidance_scale").hydra.runtime.choices.purifier == "gdmp"
    with_preset = compose_cfg("+experiment=gdmp_cifar10", "+sweep=guidance_scale", "purifier.guide_scale=15000")
    assert (with_preset.purifier.guide_scale, with_preset.dataset.variant.name) == (15000, "cifar10")


def test_command_line_values_replace_a_sweep_presets_values_and_other_lists_multiply(compose_cfg):
    assert len(sweep_jobs("tstar")) == 4
    replaced = sweep_jobs("tstar", "purifier.t_star=0.05,0.3")
    assert [job[0] for job in replaced] == ["purifier.t_star=0.05", "purifier.t_star=0.3"]
    assert len(sweep_jobs("tstar", "purifier=diffpure,diffpure_ddpm")) == 8
    # a preset's own t_star gives way to the sweep's value (a command-line override of each job)
    job = compose_cfg("+experiment=diffpure_cifar10_linf", *sweep_jobs("tstar")[0])
    validate_config(job)
    assert (job.purifier.t_star, job.purifier.dt, job.task.n_images) == (0.02, 1e-3, 512)
