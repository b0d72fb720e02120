"""Where conf/ is (:func:`project_root`) and its user-facing config groups, read from the folders
themselves: one source for ``python run.py --help`` and the README's config-group table
(``python -m advpure.config.catalog`` prints it; tests/test_catalog.py keeps the README's copy current).

A group is a folder of conf/ holding option files; ``schema/``, ``protocol/`` and ``hydra/`` are
advpure's internals, and ``budget/<group>/`` sub-folders are selected by ``budget=...`` for you.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

INTERNAL_GROUPS = ("schema", "protocol", "hydra")
# What choosing an option of each group decides (the options themselves come from the folders).
GROUP_PURPOSE = {
    "dataset": "LightningDataModule; images NCHW in [0, 1], int labels; the threat model's standard eps",
    "classifier": "the classifier network and its weights (advpure checkpoint or a published file)",
    "diffusion": "the noise-prediction backbone `(x in [-1, 1], t) -> eps` and its weights",
    "purifier": "how inputs are purified (DiffPure SDE/DDPM/ODE, GDMP, MimicDiffusion, AGDM, none) and "
    "how attacks differentiate it (`purifier.grad_mode`)",
    "attack": "the adaptive attack on the defended model (gradients through the purifier)",
    "task": "what run.py does: evaluate, audit an evaluation, certify, or train a classifier / diffusion model / "
    "AGDM's c_phi",
    "hardware": "Lightning accelerator, devices and strategy; `slurm` submits sweep jobs",
    "logger": "W&B (offline by default), CSV or none",
    "budget": "`cpu_quick` shrinks the published budgets to minutes on a CPU; `published` keeps them",
    "experiment": "a named recipe: a published setting or a digits preset (`+experiment=<name>`)",
    "sweep": "a sweep preset for `-m` (`+sweep=<name>`)",
}


def project_root() -> Path:
    """The folder holding conf/ and checkpoints/: $ADVPURE_ROOT, else the source checkout, else cwd."""
    if "ADVPURE_ROOT" in os.environ:
        return Path(os.environ["ADVPURE_ROOT"]).resolve()
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "conf" / "config.yaml").is_file():
        return checkout
    return Path.cwd()


@dataclass(frozen=True)
class ConfigGroup:
    """One user-facing group: its options (the default first), default (``None``: not selected
    by default, added with ``+group=option``) and purpose."""

    name: str
    options: tuple[str, ...]
    default: str | None
    purpose: str

    @property
    def selector(self) -> str:
        return self.name if self.default is not None else f"+{self.name}"


def root_defaults(conf: Path) -> dict[str, str]:
    """``{group: option}`` of config.yaml's defaults list (interpolated entries left out)."""
    defaults: dict[str, str] = {}
    for entry in yaml.safe_load((conf / "config.yaml").read_text()).get("defaults", []):
        if isinstance(entry, dict):
            for group, option in entry.items():
                if isinstance(group, str) and isinstance(option, str) and "$" not in option and " " not in group:
                    defaults[group] = option
    return defaults


def config_groups(conf: Path | None = None) -> list[ConfigGroup]:
    """The user-facing groups of ``conf`` (default: the project's conf/), alphabetically."""
    conf = conf or project_root() / "conf"
    defaults = root_defaults(conf)
    groups = []
    for folder in sorted(p for p in conf.iterdir() if p.is_dir() and p.name not in INTERNAL_GROUPS):
        options = sorted(p.stem for p in folder.glob("*.yaml"))
        default = defaults.get(folder.name)
        ordered = (default, *(o for o in options if o != default)) if default in options else tuple(options)
        groups.append(ConfigGroup(folder.name, ordered, default, GROUP_PURPOSE.get(folder.name, "")))
    return groups


def groups_text() -> str:
    """``group: default, option, ...`` per line (``python run.py --help``)."""
    return "\n".join(f"{g.selector}: {', '.join(g.options)}" for g in config_groups())


def groups_table() -> str:
    """The Markdown table of every user-facing group: options (default in bold) and purpose."""
    lines = ["| group | options (**default**) | what it selects |", "|---|---|---|"]
    for group in config_groups():
        options = ", ".join(f"**`{o}`**" if o == group.default else f"`{o}`" for o in group.options)
        lines.append(f"| `{group.selector}` | {options} | {group.purpose} |")
    return "\n".join(lines)


README_START = "<!-- config-groups:start -->"
README_END = "<!-- config-groups:end -->"


def readme_block(text: str) -> str:
    """The table between the README's config-groups markers (``ValueError`` if they are missing)."""
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    return text[start:end].strip()


def write_readme(path: Path) -> None:
    """Replace the table between ``path``'s config-groups markers with :func:`groups_table`."""
    text = path.read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    path.write_text(text[:start] + "\n" + groups_table() + "\n" + text[end:])


def main(argv: list[str] | None = None) -> int:
    """``python -m advpure.config.catalog [--readme README.md]``: print the table, or rewrite the
    README's copy of it."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m advpure.config.catalog", description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", type=Path, help="rewrite the table between this file's config-groups markers")
    args = parser.parse_args(argv)
    if args.readme is None:
        print(groups_table())
        return 0
    try:
        write_readme(args.readme)
    except (OSError, ValueError) as error:
        print(
            f"error: cannot rewrite {args.readme}: {error}. Fix: give a Markdown file holding the lines "
            f"{README_START} and {README_END}",
            file=sys.stderr,
        )
        return 2
    print(f"config-group table written to {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
