"""Sweep report: one row per finished job of a multirun folder, as Markdown, CSV, JSON and a PNG plot.

The plot draws accuracy against the swept value when a swept key is numeric (t*, a guidance
scale): one line per attack / grad mode / scoring with 95% interval bands; otherwise (e.g. a
sweep over purifiers) a bar chart of robust accuracy per job.
A sweep of ``task=certify`` jobs gets certified accuracy at each radius per job and one
certified-accuracy curve per job instead (:func:`advpure.certify.results.write_certify_sweep_report`).

A job's row is labelled by the overrides that differ between jobs (e.g. ``purifier.grad_mode=bpda``).
Jobs that have no ``results.json`` (failed or still running) are listed as missing, never dropped
silently. Run by the Hydra callback at the end of a multirun, or by hand on any sweep folder:
``python -m advpure.sweeps.summary outputs/multirun/<date>/<time>_evaluate``.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from advpure.io import save_figure, write_json_atomic, write_text_atomic


@dataclass(frozen=True)
class SweepRow:
    """One job: its folder, the overrides that label it (``label``; ``swept``: key -> value), and
    its results (None if it has none)."""

    job_dir: Path
    label: str
    results: dict[str, Any] | None
    swept: dict[str, str]


def _overrides(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    return list(yaml.safe_load(path.read_text()) or []) if path.is_file() else []


def collect(sweep_dir: Path) -> list[SweepRow]:
    """The sweep's jobs in job-number order, labelled by their differing overrides."""
    job_dirs = sorted(
        (p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()),
        key=lambda p: (int(p.name.split("_", 1)[0]) if p.name.split("_", 1)[0].isdigit() else 1 << 30, p.name),
    )
    overrides = {job: _overrides(job) for job in job_dirs}
    shared = set.intersection(*(set(o) for o in overrides.values())) if overrides else set()
    rows = []
    for job in job_dirs:
        varying = [o for o in overrides[job] if o not in shared]
        results_path = job / "results.json"
        results = json.loads(results_path.read_text()) if results_path.is_file() else None
        if results is not None:
            results.pop("records", None)
        swept = dict(o.lstrip("+~").split("=", 1) for o in varying if "=" in o)
        rows.append(SweepRow(job, ", ".join(varying) or job.name, results, swept))
    return rows


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def numeric_axis(rows: list[SweepRow]) -> str | None:
    """The swept key to plot against: numeric in every finished job, with the most distinct values
    (at least 2); ``None`` when no swept key is numeric (e.g. a sweep over purifiers)."""
    done = [row for row in rows if row.results is not None]
    keys = {key for row in done for key in row.swept}
    numeric = {
        key: {row.swept[key] for row in done if key in row.swept}
        for key in keys
        if all(key in row.swept and _number(row.swept[key]) is not None for row in done)
    }
    numeric = {key: values for key, values in numeric.items() if len(values) >= 2}
    return max(sorted(numeric), key=lambda key: len(numeric[key])) if numeric else None


def _pct(metric: dict[str, Any]) -> str:
    return f"{100 * metric['value']:.2f}% [{100 * metric['ci_low']:.1f}, {100 * metric['ci_high']:.1f}]"


def _scored(metrics: dict[str, Any], rule: str) -> str:
    """``robust [CI] (k)`` of a multi-draw scoring, or ``-`` for results without it."""
    metric = metrics.get(f"defended_robust_{rule}")
    return "-" if metric is None else f"{_pct(metric)} (k={metric['k']})"


def attack_text(attack: dict[str, Any]) -> str:
    """``autoattack version=rand, n_iter=30, n_eot=8, n_restarts=1 (REDUCED budget)``: the settings
    that tell attacks apart (torchattacks: its class, ``steps``, ``eot_iter``)."""
    keys = ("attack", "version", "n_iter", "steps", "n_eot", "eot_iter", "n_restarts", "n_defense_reps", "loss")
    text = f"{attack['name']} " + ", ".join(f"{k}={attack[k]}" for k in keys if k in attack)
    return text + (" (REDUCED budget)" if attack.get("reduced_budget") else "")


def _protocol(metrics: dict[str, Any]) -> str:
    """The attack's own verdict (e.g. bpda_eot's defense-reps check), or ``-`` without one."""
    metric = metrics.get("defended_robust_protocol")
    return "-" if metric is None else _pct(metric)


def table_rows(rows: list[SweepRow]) -> list[dict[str, Any]]:
    """Flat per-job records (what sweep.csv holds)."""
    flat = []
    for row in rows:
        r = row.results
        if r is None:
            flat.append({"job": row.label, "status": "missing results.json", "folder": row.job_dir.name})
            continue
        m = r["metrics"]
        flat.append(
            {
                "job": row.label,
                **row.swept,
                "status": "done",
                "purifier": r["purifier"]["name"],
                "attack": attack_text(r["attack"]),
                "grad_mode": r.get("grad_mode", "full"),
                "gradient_is_approximation": r.get("gradient_is_approximation", False),
                "n_images": m["defended_clean"]["n"],
                "defended_clean": m["defended_clean"]["value"],
                "defended_clean_ci_low": m["defended_clean"]["ci_low"],
                "defended_clean_ci_high": m["defended_clean"]["ci_high"],
                "defended_robust": m["defended_robust"]["value"],
                "defended_robust_ci_low": m["defended_robust"]["ci_low"],
                "defended_robust_ci_high": m["defended_robust"]["ci_high"],
                **{
                    f"defended_robust_{rule}{suffix}": m.get(f"defended_robust_{rule}", {}).get(field)
                    for rule in ("majority", "worst")
                    for suffix, field in (("", "value"), ("_ci_low", "ci_low"), ("_ci_high", "ci_high"))
                },
                "defended_robust_protocol": m.get("defended_robust_protocol", {}).get("value"),
                "undefended_robust": m["undefended_robust"]["value"],
                "reduced_budget": bool(r["attack"].get("reduced_budget")),
                **({"audit": r["audit"]["verdict"]} if r.get("audit") else {}),  # task.audit=true
                "folder": row.job_dir.name,
            }
        )
    return flat


def format_markdown(rows: list[SweepRow], sweep_dir: Path) -> str:
    """The sweep table with the settings all jobs share above it.

    The attack goes into the header when every job ran the same one and into an ``attack`` column
    otherwise; an ``attack's own verdict`` column appears when some job's attack has one.
    """
    done = [row.results for row in rows if row.results is not None]
    attacks = {attack_text(r["attack"]) for r in done}
    attack_column = len(attacks) > 1
    verdict_column = any("defended_robust_protocol" in r["metrics"] for r in done)
    audit_column = any(r.get("audit") for r in done)  # jobs run with task.audit=true
    lines = [f"### Sweep {sweep_dir.name}", ""]
    if done:
        first = done[0]
        attack = first["attack"]
        lines += [
            f"- {first['dataset']}, {first['classifier']}; threat model {attack['norm']}, eps = {attack['eps']:.4g}",
            "- attack: varies by job (column `attack`)" if attack_column else f"- attack: {attack_text(attack)}",
            f"- images: {first['metrics']['defended_clean']['n']}, seed {first['seed']}; defended clean is single "
            "draw; majority vote: the label strictly out-votes the others; worst of N: all N draws correct; "
            "95% Wilson intervals",
            "- rows whose gradient is an APPROXIMATION may overstate robustness; `full` is the exact gradient; "
            "a REDUCED budget is not a publishable number",
            "",
        ]
    header = ["job"] + (["attack"] if attack_column else []) + ["grad mode", "defended clean"]
    header += ["defended robust, single draw", "majority vote", "worst of N"]
    header += (["attack's own verdict"] if verdict_column else []) + ["undefended robust"]
    header += ["audit"] if audit_column else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        r = row.results
        if r is None:
            cells = [row.label, f"missing results.json ({row.job_dir.name})"]
            lines.append("| " + " | ".join(cells + ["-"] * (len(header) - 2)) + " |")
            continue
        m = r["metrics"]
        mode = r.get("grad_mode", "full")
        mode_cell = f"{mode} (approximation)" if r.get("gradient_is_approximation") else f"{mode} (exact)"
        cells = [row.label] + ([attack_text(r["attack"])] if attack_column else []) + [mode_cell]
        cells += [_pct(m["defended_clean"]), _pct(m["defended_robust"]), _scored(m, "majority")]
        cells += [_scored(m, "worst")] + ([_protocol(m)] if verdict_column else []) + [_pct(m["undefended_robust"])]
        cells += [(r.get("audit") or {}).get("verdict", "-")] if audit_column else []
        lines.append("| " + " | ".join(cells) + " |")
    axis = numeric_axis(rows)
    plot = f"accuracy against {axis}, 95% interval bands" if axis else "robust accuracy per job"
    lines += ["", f"![{plot}](sweep.png)"]
    return "\n".join(lines) + "\n"


def _short_label(label: str) -> str:
    """``purifier.grad_mode=bpda, purifier.t_star=0.1`` -> ``grad_mode=bpda\nt_star=0.1``."""
    return "\n".join(
        part.split("=", 1)[0].rsplit(".", 1)[-1] + "=" + part.split("=", 1)[-1] for part in label.split(", ")
    )


def write_chart(path: Path, rows: list[SweepRow]) -> None:
    """Bar chart of defended robust accuracy per job with 95% intervals; approximations hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [row for row in rows if row.results is not None]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(done) + 1.5), 3.6))
    for i, row in enumerate(done):
        robust = row.results["metrics"]["defended_robust"]
        value = 100 * robust["value"]
        err = [[value - 100 * robust["ci_low"]], [100 * robust["ci_high"] - value]]
        approximate = row.results.get("gradient_is_approximation", False)
        ax.bar(i, value, color="#d9822b" if approximate else "#2b6cb0", hatch="//" if approximate else None)
        ax.errorbar(i, value, yerr=err, color="black", capsize=4)
        ax.text(i + 0.08, value + 1, f"{value:.1f}", ha="left", va="bottom", fontsize=8)
    ax.set_xticks(range(len(done)))
    ax.set_xticklabels([_short_label(row.label) for row in done], fontsize=7)
    ax.set_ylim(0, 105)
    ax.set_ylabel("defended robust accuracy (%)")
    ax.set_title("blue: exact gradient; orange hatched: approximation", fontsize=8)
    save_figure(fig, path)


# Each scoring's metric and how its line is drawn (clean accuracy is the single-draw prediction).
SCORINGS = (
    ("clean", "defended_clean", "#7f7f7f"),
    ("robust, single draw", "defended_robust", "#2b6cb0"),
    ("robust, majority vote", "defended_robust_majority", "#2f855a"),
    ("robust, worst of N", "defended_robust_worst", "#c53030"),
)
GROUP_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))


def curve_groups(rows: list[SweepRow], axis: str) -> dict[str, list[SweepRow]]:
    """Finished jobs grouped into curves: same attack, grad mode and other swept values; each
    group's jobs sorted by the axis value. The group label says what its curves share."""
    groups: dict[str, list[SweepRow]] = {}
    for row in (r for r in rows if r.results is not None):
        r = row.results
        mode = r.get("grad_mode", "full")
        kind = "approximation" if r.get("gradient_is_approximation") else "exact"
        shown = {axis, "attack", "purifier.grad_mode"}  # the axis, and what the label already says
        others = [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in row.swept.items() if key not in shown]
        label = ", ".join([attack_text(r["attack"]).split(" ", 1)[0], f"{mode} ({kind})", *others])
        groups.setdefault(label, []).append(row)
    for members in groups.values():
        members.sort(key=lambda row: float(row.swept[axis]))
    return groups


def write_curves(path: Path, rows: list[SweepRow], axis: str) -> None:
    """Accuracy against the swept value ``axis``: one line per attack / grad mode / scoring (and
    other swept values), each with its 95% Wilson interval as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = curve_groups(rows, axis)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for g, (label, members) in enumerate(groups.items()):
        linestyle, marker = GROUP_STYLES[g % len(GROUP_STYLES)]
        x = [float(row.swept[axis]) for row in members]
        for scoring, metric_name, color in SCORINGS:
            metrics = [row.results["metrics"].get(metric_name) for row in members]
            if any(m is None for m in metrics):
                continue
            y = [100 * m["value"] for m in metrics]
            low, high = [100 * m["ci_low"] for m in metrics], [100 * m["ci_high"] for m in metrics]
            text = f"{scoring}" if len(groups) == 1 else f"{scoring}: {label}"
            ax.plot(x, y, linestyle=linestyle, marker=marker, color=color, label=text, markersize=4)
            ax.fill_between(x, low, high, color=color, alpha=0.12, linewidth=0)
    ax.set_xlabel(axis)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    title = next(iter(groups)) if len(groups) == 1 else "line style: attack / grad mode / other swept values"
    ax.set_title(title + "; bands: 95% Wilson intervals", fontsize=8)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def write_sweep_report(sweep_dir: Path) -> dict[str, Path]:
    """Write sweep.md, sweep.csv, sweep.json and sweep.png into ``sweep_dir``; returns their paths."""
    rows = collect(sweep_dir)
    if any(row.results is not None and row.results.get("task") == "certify" for row in rows):
        from advpure.certify.results import write_certify_sweep_report  # task=certify: its own table and curves

        return write_certify_sweep_report(sweep_dir, rows)
    flat = table_rows(rows)
    paths = {name: sweep_dir / f"sweep.{name}" for name in ("md", "csv", "json", "png")}
    write_text_atomic(paths["md"], format_markdown(rows, sweep_dir))
    buffer = io.StringIO()
    fields = list(dict.fromkeys(k for record in flat for k in record))
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(flat)
    write_text_atomic(paths["csv"], buffer.getvalue())
    write_json_atomic(paths["json"], {"sweep_dir": str(sweep_dir), "jobs": flat})
    axis = numeric_axis(rows)
    if axis is None:
        write_chart(paths["png"], rows)
    else:
        write_curves(paths["png"], rows, axis)
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m advpure.report SWEEP_DIR`` (or ``advpure.sweeps.summary``): (re)write a sweep folder's
    report. Exit 0 when it was written (``--help``: 0), 2 on a bad folder (one ``error:`` line)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m advpure.report",
        description="(Re)write a multirun sweep folder's report: sweep.md, sweep.csv, sweep.json and sweep.png, "
        "one row per job (jobs without results.json are listed as missing).",
    )
    parser.add_argument("sweep_dir", type=Path, help="the sweep folder, e.g. outputs/multirun/<date>/<time>_evaluate")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    folder: Path = args.sweep_dir
    if not folder.is_dir():
        print(
            f"error: {folder} is not a folder. "
            "Fix: give a multirun sweep folder (outputs/multirun/<date>/<time>_<task>)",
            file=sys.stderr,
        )
        return 2
    if not any((p / ".hydra").is_dir() for p in folder.iterdir() if p.is_dir()):
        print(
            f"error: {folder} holds no job folders (sub-folders with .hydra/). Fix: give the sweep folder a "
            "`python run.py -m ...` printed, not a job folder or a single run's folder",
            file=sys.stderr,
        )
        return 2
    paths = write_sweep_report(folder)
    print(Path(paths["md"]).read_text())
    print(f"sweep report: {paths['md']} {paths['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
