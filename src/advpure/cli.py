"""What ``run.py`` does with a composed config: validate, then run the selected task."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from advpure.config import validate_config
from advpure.config.validate import check_combinations
from advpure.errors import AdvpureError, ConfigError
from advpure.io import require_writable
from advpure.tasks.context import RunContext, command_line


def context_from_hydra() -> RunContext:
    """The run folder, command line and group choices of the current Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    choices = {k: str(v) for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra")}
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return RunContext(
        run_dir=Path(hydra_cfg.runtime.output_dir),
        command=command_line(list(hydra_cfg.overrides.task)),
        choices=choices,
        multirun=multirun,
        sweep=Path(hydra_cfg.sweep.dir).name if multirun else None,
    )


def run_task(cfg: DictConfig, context: RunContext) -> dict[str, Any]:
    """Validate ``cfg`` (every range check and every check across groups, before any work) and
    run ``cfg.task.name``."""
    from advpure.tasks.registry import TASKS

    validate_config(cfg)
    check_combinations(cfg)
    require_writable(context.run_dir, f"the run folder {context.run_dir} (hydra.run.dir)")
    store = "paths.evaluations" if cfg.task.name == "evaluate" else "paths.training"
    if OmegaConf.select(cfg, store) is not None:
        require_writable(OmegaConf.select(cfg, store), store)
    check_placement(cfg, context)
    try:
        return TASKS[cfg.task.name](cfg, context)
    finally:
        finish_wandb()


def finish_wandb() -> None:
    """Close the W&B run a task's logger opened (flushes its files; the next run starts fresh)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        offline = wandb.run.settings.mode == "offline" or bool(getattr(wandb.run, "offline", False))
        run_folder = Path(wandb.run.dir).parent
        wandb.finish()
        if offline:
            print(f"W&B run saved offline; upload it with: wandb sync {run_folder}", flush=True)


def check_placement(cfg: DictConfig, context: RunContext) -> None:
    """Refuse several processes inside a Hydra multirun (Lightning's DDP launcher re-runs the
    command in every rank, and each rank would re-launch the whole sweep), and a GPU placement on
    a machine without CUDA."""
    hardware = cfg.hardware
    devices = hardware.devices
    single_device = devices == 1 or devices == "1" or (OmegaConf.is_list(devices) and len(devices) == 1)
    if context.multirun and not (single_device and hardware.num_nodes == 1 and "ddp" not in str(hardware.strategy)):
        raise ConfigError(
            "hardware",
            f"devices={devices}, num_nodes={hardware.num_nodes}, strategy={hardware.strategy} inside a multirun "
            "(-m): Lightning DDP re-launches the command in every process, so each would re-run the whole sweep",
            "give each sweep job one device (hardware=gpu or hardware=cpu; a launcher such as submitit spreads "
            "jobs over devices), and use hardware=ddp for single runs",
        )
    accelerator = str(getattr(hardware.accelerator, "value", hardware.accelerator))
    if accelerator == "gpu" and not _cuda_available():
        on_slurm = hardware.get("slurm") is not None and not context.multirun
        raise ConfigError(
            "hardware.accelerator",
            "is gpu, but this machine has no CUDA device"
            + (" (hardware=slurm submits jobs only under -m; without it the job runs here)" if on_slurm else ""),
            "use hardware=cpu here, run on a GPU machine, or add -m to submit with hardware=slurm",
        )


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main(cfg: DictConfig) -> dict[str, Any]:
    """Hydra entry: user-facing errors print one clear line (no traceback) and exit with status 2."""
    try:
        return run_task(cfg, context_from_hydra())
    except AdvpureError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)


def override_hints(overrides: list[str]) -> list[str]:
    """A "did you mean" line for each ``key=value`` override whose last key is no config key
    anywhere (a typo), with the closest known keys: Hydra's own message suggests appending it
    (``+key=value``), which is never the fix for a misspelt key."""
    import difflib

    known = known_keys()
    hints = []
    for override in overrides:
        key = override.split("=", 1)[0]
        if "=" not in override or "/" in key or key.startswith(("+", "~", "hydra", "-")):  # not a key: a group or flag
            continue
        *parents, leaf = key.split(".")
        if leaf in known:
            expected = value_problem(leaf, override.split("=", 1)[1])
            if expected:
                hints.append(f"fix: set {key} to {expected} (python run.py --cfg job shows the current value)")
            continue
        close = difflib.get_close_matches(leaf, sorted(known), n=3, cutoff=0.6)
        suggestion = " or ".join(".".join([*parents, c]) for c in close) if close else None
        fix = f"did you mean {suggestion}?" if suggestion else "check its spelling"
        hints.append(
            f"fix: '{key}' is not a config key; {fix} (python run.py --cfg job prints every key of the composed config)"
        )
    return hints


def known_keys() -> set[str]:
    """Every key name of the schemas and of the YAML files in conf/ (group names included)."""
    import dataclasses

    import yaml

    from advpure.config.schema import SCHEMAS, RootSchema

    names: set[str] = set()

    def visit_class(schema: type) -> None:
        for item in dataclasses.fields(schema):
            names.add(item.name)
            if isinstance(item.type, type) and dataclasses.is_dataclass(item.type):
                visit_class(item.type)

    def visit_node(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                names.add(str(key))
                visit_node(value)

    visit_class(RootSchema)
    for options in SCHEMAS.values():
        for schema in options.values():
            visit_class(schema)
            for item in dataclasses.fields(schema):
                default = item.default_factory() if item.default_factory is not dataclasses.MISSING else None
                if dataclasses.is_dataclass(default):
                    visit_class(type(default))
    conf = Path(__file__).resolve().parents[2] / "conf"
    for path in conf.rglob("*.yaml"):
        try:
            visit_node(yaml.safe_load(path.read_text()))
        except yaml.YAMLError:
            continue
    return names


def value_problem(leaf: str, value: str) -> str | None:
    """What a value of schema field ``leaf`` must be, if ``value`` is not one (``None`` if it is,
    or if fields of that name differ in type across schemas)."""
    import dataclasses

    from advpure.config import enums
    from advpure.config.schema import SCHEMAS

    annotations = {
        str(item.type)
        for options in SCHEMAS.values()
        for schema in options.values()
        for item in dataclasses.fields(schema)
        if item.name == leaf
    }
    if len(annotations) != 1 or (value in ("null", "None") and "None" in next(iter(annotations))):
        return None
    base = next(iter(annotations)).split("|")[0].strip()
    checks = {"float": float, "int": int}
    if base in checks:
        try:
            checks[base](value)
        except ValueError:
            return f"a number ({base})"
        return None
    if base == "bool":
        return None if value.lower() in ("true", "false") else "true or false"
    choices = getattr(enums, base, None)
    if isinstance(choices, type) and issubclass(choices, enums.Enum):
        names = [member.value for member in choices]
        return None if value in names else f"one of {', '.join(names)}"
    return None
