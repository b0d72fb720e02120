"""What a task needs to know about its run besides the config."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunContext:
    """``run_dir``: where every artifact goes; ``command``: the exact command line;
    ``choices``: the selected option of each config group; ``multirun``: a job of a sweep;
    ``sweep``: that sweep's folder name (its jobs' W&B group), None outside a sweep."""

    run_dir: Path
    command: str = "python run.py"
    choices: dict[str, str] = field(default_factory=dict)
    multirun: bool = False
    sweep: str | None = None


def command_line(overrides: list[str]) -> str:
    """``python run.py`` with the given overrides, shell-quoted where needed."""
    import shlex

    return " ".join(["python", "run.py", *(shlex.quote(o) for o in overrides)]) if overrides else "python run.py"


def argv_command() -> str:
    """The command line of this process (fallback when Hydra is not running)."""
    return " ".join(["python", *sys.argv])
