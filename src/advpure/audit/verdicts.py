"""Run the audit's indicators and write ``audit.md`` / ``audit.json``.

:func:`run_audit` runs every registered indicator (or ``options.indicators``) on one
:class:`AuditContext`, timing each and counting the purifications it made (a shared piece, such as
the probed re-run of the evaluated attack, is counted in the first indicator that uses it).
:meth:`AuditReport.summary` is what results carry: the verdict line ("audit: 8 pass", or the
failed and warned names) and the names by verdict.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from advpure.audit.base import AuditContext, IndicatorResult, Verdict
from advpure.audit.names import INDICATOR_NAMES
from advpure.audit.registry import INDICATORS
from advpure.evaluation.compute import BACKWARD_COST, count_purifications, forward_equivalents
from advpure.io import write_json_atomic, write_text_atomic


@dataclass
class AuditReport:
    """The rows of one audit, in report order, with the audited image count, the audit's wall
    time and purifier forwards (a differentiated purification counts ``BACKWARD_COST``), and
    ``cost``: the same against the evaluation's (:func:`compare_cost`), when known."""

    rows: list[IndicatorResult]
    images: int
    seconds: float
    purifier_forwards: float
    options: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)

    def names(self, verdict: Verdict) -> list[str]:
        return [row.name for row in self.rows if row.verdict == verdict]

    def summary(self) -> dict[str, Any]:
        """``{"verdict": line, "failed": [...], "warned": [...], "passed": [...], "not_applicable": [...]}``."""
        return {
            "verdict": verdict_line(self.rows),
            "failed": self.names(Verdict.failed),
            "warned": self.names(Verdict.warned),
            "passed": self.names(Verdict.passed),
            "not_applicable": self.names(Verdict.not_applicable),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "images": self.images,
            "seconds": self.seconds,
            "purifier_forwards": self.purifier_forwards,
            "cost": self.cost,
            "options": self.options,
            "indicators": [row.as_dict() for row in self.rows],
        }


def verdict_line(rows: list[IndicatorResult]) -> str:
    """``audit: 8 pass``; else ``audit: FAIL a, b; WARN c; 4 pass`` (and ``; 1 n/a``)."""
    failed = [r.name for r in rows if r.verdict == Verdict.failed]
    warned = [r.name for r in rows if r.verdict == Verdict.warned]
    passed = sum(r.verdict == Verdict.passed for r in rows)
    absent = sum(r.verdict == Verdict.not_applicable for r in rows)
    parts = []
    if failed:
        parts.append("FAIL " + ", ".join(failed))
    if warned:
        parts.append("WARN " + ", ".join(warned))
    parts.append(f"{passed} pass")
    if absent:
        parts.append(f"{absent} n/a")
    return "audit: " + "; ".join(parts)


def run_audit(context: AuditContext, names: list[str] | None = None) -> AuditReport:
    """Run the indicators ``names`` (default: ``context.options.indicators``, else all) in report order."""
    wanted = names or context.options.indicators or list(INDICATORS)
    rows, started = [], time.perf_counter()
    total = {"with_graph": 0, "forward_only": 0}
    for name in (n for n in INDICATORS if n in wanted):
        begin = time.perf_counter()
        with count_purifications(context.purifier) as counts:
            row = INDICATORS[name](context)
        row.seconds = time.perf_counter() - begin
        row.purifier_forwards = forward_equivalents(counts)
        for key in total:
            total[key] += counts[key]
        rows.append(row)
    return AuditReport(
        rows,
        images=int(context.x.shape[0]),
        seconds=time.perf_counter() - started,
        purifier_forwards=forward_equivalents(total),
        options=asdict(context.options),
    )


def compare_cost(
    report: AuditReport, evaluation_seconds: float | None, evaluation_forwards: float | None, n_images: int
) -> dict[str, Any]:
    """The audit's cost against the evaluation's: wall time (``None`` when the evaluation was not
    computed in this run, e.g. reused from the batch store) and purifier forwards (machine
    independent: the evaluation's attack cost plus its scoring draws)."""
    cost: dict[str, Any] = {
        "audit_seconds": report.seconds,
        "audit_purifier_forwards": report.purifier_forwards,
        "evaluation_seconds": evaluation_seconds,
        "evaluation_purifier_forwards": evaluation_forwards,
        "evaluated_images": n_images,
        "audited_images": report.images,
        "unit": f"one purifier forward; a forward+backward counts {BACKWARD_COST:g}",
    }
    if evaluation_seconds:
        cost["time_ratio"] = report.seconds / evaluation_seconds
    if evaluation_forwards:
        cost["forward_ratio"] = report.purifier_forwards / evaluation_forwards
    report.cost = cost
    return cost


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def format_audit(report: AuditReport, heading: str = "") -> str:
    """``audit.md``: the verdict line, one table row per indicator (value, threshold, verdict, fix)
    and the audit's cost."""
    lines = [f"### Attack-failure audit{': ' + heading if heading else ''}", "", f"**{verdict_line(report.rows)}**", ""]
    lines += [
        f"- audited images: {report.images} (the first evaluated ones); scoring: majority vote of fresh "
        "purifications, robust = clean and adversarial majority correct",
        "",
        "| # | indicator | value | threshold | verdict | fix |",
        "|---|---|---|---|---|---|",
    ]
    for number, row in enumerate(report.rows, start=1):
        title = INDICATOR_NAMES.get(row.name, row.name)
        budget = f" ({row.budget})" if row.budget else ""
        cells = [str(number), f"{title} (`{row.name}`)", row.value_text + budget, row.threshold_text]
        cells += [row.verdict.value.upper() if row.verdict != Verdict.passed else "pass", row.fix or "-"]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += ["", *cost_lines(report)]
    return "\n".join(lines) + "\n"


def cost_lines(report: AuditReport) -> list[str]:
    """The audit's cost, per indicator and against the evaluation's when known."""
    per = ", ".join(f"{row.name} {row.seconds:.1f} s" for row in report.rows)
    lines = [f"- audit cost: {report.seconds:.1f} s, {report.purifier_forwards:.0f} purifier forwards ({per})"]
    cost = report.cost
    if cost.get("evaluation_seconds"):
        lines.append(
            f"- evaluation: {cost['evaluation_seconds']:.1f} s for {cost['evaluated_images']} images; audit / "
            f"evaluation time: {cost['time_ratio']:.2f}x"
        )
    if cost.get("forward_ratio") is not None:
        lines.append(
            f"- audit / evaluation purifier forwards: {cost['forward_ratio']:.2f}x "
            f"({report.purifier_forwards:.0f} / {cost['evaluation_purifier_forwards']:.0f})"
        )
    return lines


def write_audit(folder: Path, report: AuditReport, heading: str = "") -> dict[str, Path]:
    """Write ``audit.md`` and ``audit.json`` into ``folder``; their paths."""
    paths = {"audit.md": folder / "audit.md", "audit.json": folder / "audit.json"}
    write_text_atomic(paths["audit.md"], format_audit(report, heading))
    write_json_atomic(paths["audit.json"], report.as_dict())
    return paths
