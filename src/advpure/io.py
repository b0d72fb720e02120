"""Atomic file writes: a crash or a full disk never leaves a half-written result behind.

Every result, record and checkpoint file advpure writes goes through :func:`write_atomic`: the
content is written to a temporary file beside the target and renamed onto it, so a reader (or a
resumed run) sees either the old file or the complete new one. A write that fails (full disk,
read-only folder, no permission) removes its temporary file, leaves the old file untouched and
raises :class:`~advpure.errors.OutputError` naming the path and the fix.

Every JSON file advpure reads back goes through :func:`read_json`, which checks the type the
reader expects and turns unreadable, malformed or pathologically nested files into one
:class:`JsonFileError` naming the path.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from advpure.errors import AdvpureError, OutputError

_FIXES = {
    errno.ENOSPC: "free disk space, or write elsewhere (hydra.run.dir=<folder>, paths.evaluations=<folder>)",
    errno.EDQUOT: "free space under your quota, or write elsewhere (hydra.run.dir=<folder>)",
    errno.EROFS: "the file system is read-only: write elsewhere (hydra.run.dir=<folder>, paths.evaluations=<folder>)",
    errno.EACCES: "make the folder writable (chmod u+w), or write elsewhere (hydra.run.dir=<folder>)",
    errno.EPERM: "make the folder writable (chmod u+w), or write elsewhere (hydra.run.dir=<folder>)",
}


def output_error(path: Path, error: OSError) -> OutputError:
    """An :class:`OutputError` for a failed write of ``path``, naming it, the cause and the fix."""
    reason = os.strerror(error.errno) if error.errno else str(error)
    fix = _FIXES.get(error.errno or 0, "check that the folder exists and is writable, or write elsewhere")
    return OutputError(
        f"cannot write {path}: {reason} ({type(error).__name__}). Files written earlier are unchanged. Fix: {fix}"
    )


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it onto ``path``.

    Raises :class:`OutputError` (the temporary file removed, ``path`` untouched) if any step fails
    with an ``OSError``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise output_error(path, error) from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise output_error(path, error) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Lay out a matplotlib figure, write it to ``path`` as PNG (atomically, :func:`write_atomic`)
    and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    finally:
        plt.close(fig)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def require_writable(folder: str | Path, key: str) -> Path:
    """Create ``folder`` if needed and prove it writable (a probe file, written and removed), before
    any long work; :class:`OutputError` naming ``key`` (the config key or run folder) otherwise."""
    folder = Path(folder)
    try:
        probe = write_text_atomic(folder / f".advpure-write-probe-{os.getpid()}", "")
    except OutputError as error:
        raise OutputError(f"{key} is not writable: {error}") from None
    probe.unlink(missing_ok=True)
    return folder


class JsonFileError(AdvpureError, ValueError):
    """A JSON file cannot be used: unreadable, not valid JSON, nested too deeply to parse, or valid
    JSON of another type than the reader expects. ``path`` and ``problem`` say which and why."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


_JSON_TYPES = {
    dict: "a JSON object ({...})",
    list: "a JSON list ([...])",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true/false",
    type(None): "null",
}


def read_json(path: str | Path, expected: type | tuple[type, ...] = dict) -> Any:
    """The content of the JSON file ``path``, checked to be of type ``expected`` (an object by default).

    Raises:
        JsonFileError: naming ``path``, if it cannot be read, is not valid UTF-8 JSON, is nested too
            deeply for Python's parser (a hostile file: no RecursionError escapes), or holds another type.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise JsonFileError(path, "is not a text file (not UTF-8), so not JSON") from None
    except OSError as error:
        raise JsonFileError(path, f"cannot be read: {os.strerror(error.errno) if error.errno else error}") from None
    try:
        content = json.loads(text)
    except json.JSONDecodeError as error:
        raise JsonFileError(
            path, f"is not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
        ) from None
    except RecursionError:
        raise JsonFileError(path, "is nested too deeply to read (deeper than Python's recursion limit)") from None
    kinds = expected if isinstance(expected, tuple) else (expected,)
    if not isinstance(content, kinds) or (bool not in kinds and isinstance(content, bool)):
        wanted = " or ".join(dict.fromkeys(_JSON_TYPES.get(kind, kind.__name__) for kind in kinds))
        found = _JSON_TYPES.get(type(content), type(content).__name__)
        raise JsonFileError(path, f"holds {found}, expected {wanted}")
    return content
