"""The shell commands the documentation prints, as a user would type them.

Read from README.md, experiments/README.md and docs/*.md: every line of a fenced ``bash``/``sh``
block and of an indented code block, and every inline code span that starts with
``python run.py``, ``python -m advpure``, ``python experiments/`` or ``make `` (a ``\\`` at a
line's end continues it; ``#`` starts a comment).
A command holding a ``<placeholder>`` is a template (``python run.py attack=<name>``): it is listed
as such, never run. tests/test_doc_commands.py runs them.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "experiments/README.md", "docs/*.md")
SHELL_FENCES = ("bash", "sh", "shell", "console")
STARTS = ("python run.py", "python -m advpure", "make ", "python experiments/")
# Hydra flags followed by a value (``--cfg job``).
FLAGS_WITH_VALUE = ("--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-path", "-cp")
# make targets whose recipe is a multirun (Makefile).
MULTIRUN_TARGETS = (["make", "grad-modes"],)
# A run that cannot happen on a CPU-only machine without the published files: the test composes it.
NEEDS = {
    "hardware=gpu": "a GPU",
    "hardware=ddp": "several GPUs",
    "hardware=slurm": "a SLURM cluster",
    "/data/": "the published dataset files",
    "/ckpt/": "the published weights",
    "checkpoint_8.pth": "the published score_sde weights",
}


@dataclass(frozen=True)
class DocCommand:
    """One documented command: where it is printed and its words (``argv[0]`` is ``python``/``make``)."""

    source: str
    line: int
    text: str

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text, comments=True)

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}:{self.text[:70]}"

    @property
    def is_template(self) -> bool:
        return "<" in self.text and ">" in self.text

    @property
    def multirun(self) -> bool:
        return "-m" in self.argv or "--multirun" in self.argv or self.argv[:2] in MULTIRUN_TARGETS

    @property
    def needs(self) -> str | None:
        """What this machine lacks to run it (a GPU, SLURM, published files), or ``None``."""
        found = [what for marker, what in NEEDS.items() if marker in self.text]
        return ", ".join(dict.fromkeys(found)) or None

    @property
    def overrides(self) -> list[str]:
        """The Hydra overrides of a ``python run.py`` command (flags dropped)."""
        argv = self.argv
        if argv[:2] != ["python", "run.py"]:
            return []
        words, skip = [], False
        for word in argv[2:]:
            if skip:
                skip = False
            elif word in FLAGS_WITH_VALUE:
                skip = True
            elif not word.startswith("-"):
                words.append(word)
        return words


def _logical_lines(lines: list[str]) -> list[tuple[int, str]]:
    """Join ``\\``-continued lines; ``(first line number, text)`` per command, comments dropped."""
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, raw in lines:
        text = raw.strip()
        if pending is not None:
            text = pending[1] + " " + text
            number = pending[0]
        if text.endswith("\\"):
            pending = (number, text[:-1].rstrip())
            continue
        pending = None
        if text and not text.startswith("#"):
            joined.append((number, text))
    return joined


def _commands_in(path: Path) -> list[DocCommand]:
    source = str(path.relative_to(ROOT))
    text = path.read_text()
    lines = text.splitlines()
    found: list[DocCommand] = []
    in_fence, fence_lang, block = False, "", []
    previous_blank = True
    indented: list[tuple[int, str]] = []

    def flush_indented() -> None:
        if indented and any(line.strip().startswith(STARTS) for _, line in indented):
            found.extend(DocCommand(source, n, t) for n, t in _logical_lines(indented) if t.startswith(STARTS))
        indented.clear()

    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith("```"):
            if not in_fence:
                flush_indented()
                in_fence, fence_lang, block = True, stripped[3:].strip().lower(), []
            else:
                if fence_lang in SHELL_FENCES:
                    found.extend(DocCommand(source, n, t) for n, t in _logical_lines(block))
                in_fence = False
            continue
        if in_fence:
            block.append((number, line))
            continue
        if line.startswith("    ") and (indented or previous_blank) and stripped:
            indented.append((number, line))
        elif stripped:
            flush_indented()
            for span in re.findall(r"`([^`]+)`", line):
                if span.startswith(STARTS):
                    found.append(DocCommand(source, number, span.strip()))
        previous_blank = not stripped
    flush_indented()
    return found


def documented_commands() -> list[DocCommand]:
    """Every command of the documentation, in document order, each once (comments aside)."""
    paths = [p for pattern in DOCUMENTS for p in sorted(ROOT.glob(pattern))]
    seen: set[str] = set()
    commands = []
    for path in paths:
        for command in _commands_in(path):
            words = " ".join(command.argv)
            if words not in seen:
                seen.add(words)
                commands.append(command)
    return commands


def every_job_overrides(overrides: list[str]) -> list[list[str]]:
    """The overrides of each job of a sweep (the product of its swept values; one job if none)."""
    import itertools

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override() else [o.input_line]
        for o in parsed
    ]
    return [list(job) for job in itertools.product(*choices)]


def first_job_overrides(overrides: list[str]) -> list[str]:
    """A sweep's overrides with each swept value replaced by its first (``a=1,2`` -> ``a=1``)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    single = []
    for override in parsed:
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            single.append(f"{override.get_key_element()}={first}")
        else:
            single.append(override.input_line)
    return single
