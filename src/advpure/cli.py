"""What ``run.py`` does with a composed config: validate, then run the selected task."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from advpure.config import validate_config
from advpure.errors import AdvpureError, ConfigError
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
    """Validate ``cfg`` (every range check, before any work) and run ``cfg.task.name``."""
    from advpure.tasks.registry import TASKS

    validate_config(cfg)
    check_placement(cfg, context)
    try:
        return TASKS[cfg.task.name](cfg, context)
    finally:
        finish_wandb()


def finish_wandb() -> None:
    """Close the W&B run a task's logger opened (flushes its files; the next run starts fresh)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def check_placement(cfg: DictConfig, context: RunContext) -> None:
    """Refuse several processes inside a Hydra multirun: Lightning's DDP launcher re-runs the
    command in every rank, and each rank would re-launch the whole sweep."""
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


def main(cfg: DictConfig) -> dict[str, Any]:
    """Hydra entry: user-facing errors print one clear line (no traceback) and exit with status 2."""
    try:
        return run_task(cfg, context_from_hydra())
    except AdvpureError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
