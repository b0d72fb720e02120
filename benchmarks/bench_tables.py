"""make bench's output: Markdown tables written row by row, so a run stopped early keeps its rows."""

from __future__ import annotations

import time
from pathlib import Path

from advpure.io import write_text_atomic


def table_head(title: str, columns: tuple[str, ...], note: str = "") -> list[str]:
    """A Markdown section heading, an optional note, and a table header."""
    header = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    return ["", title, "", *([note, ""] if note else []), *header]


def megabytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


class Report:
    """The benchmark's Markdown, printed line by line and rewritten to ``path`` after every addition,
    so a run stopped early (a time limit, a crash) keeps every row it measured; until
    :meth:`finish`, the file ends with a line saying it is incomplete.

    ``deadline_s``: seconds after which :meth:`out_of_time` is true (measurements not yet started
    are then listed as skipped rather than run); ``None``: no limit.
    """

    INCOMPLETE = "_Incomplete: the run stopped, or is still running, after the line above._"

    def __init__(self, path: Path, deadline_s: float | None = None) -> None:
        self.path = path
        self.deadline_s = deadline_s
        self.started = time.perf_counter()
        self.lines: list[str] = []
        self.skipped: list[str] = []

    def add(self, *lines: str) -> None:
        self.lines += lines
        print("\n".join(lines), flush=True)
        write_text_atomic(self.path, "\n".join([*self.lines, "", self.INCOMPLETE]) + "\n")

    def out_of_time(self, what: str) -> bool:
        """Whether the deadline has passed; if so, ``what`` is recorded as skipped."""
        late = self.deadline_s is not None and time.perf_counter() - self.started > self.deadline_s
        if late:
            self.skipped.append(what)
        return late

    def finish(self) -> None:
        if self.skipped:
            self.add(
                "",
                f"Skipped after the {self.deadline_s:.0f} s deadline (--deadline-s): " + "; ".join(self.skipped) + ".",
            )
        write_text_atomic(self.path, "\n".join(self.lines) + "\n")
        print(f"\nwritten: {self.path}")
