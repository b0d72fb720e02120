"""What ``run.py`` does with a composed config: validate, then run the selected task."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from advpure.config import validate_config
from advpure.errors import AdvpureError
from advpure.tasks.context import RunContext, command_line


def context_from_hydra() -> RunContext:
    """The run folder, command line and group choices of the current Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    choices = {k: str(v) for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra")}
    return RunContext(
        run_dir=Path(hydra_cfg.runtime.output_dir),
        command=command_line(list(hydra_cfg.overrides.task)),
        choices=choices,
    )


def run_task(cfg: DictConfig, context: RunContext) -> dict[str, Any]:
    """Validate ``cfg`` (every range check, before any work) and run ``cfg.task.name``."""
    from advpure.tasks.registry import TASKS

    validate_config(cfg)
    return TASKS[cfg.task.name](cfg, context)


def main(cfg: DictConfig) -> dict[str, Any]:
    """Hydra entry: user-facing errors print one clear line (no traceback) and exit with status 2."""
    try:
        return run_task(cfg, context_from_hydra())
    except AdvpureError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
