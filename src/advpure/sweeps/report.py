"""Sweep report: one row per finished job of a multirun folder, as Markdown, CSV, JSON and a PNG chart.

A job's row is labelled by the overrides that differ between jobs (e.g. ``purifier.grad_mode=bpda``).
Jobs that have no ``results.json`` (failed or still running) are listed as missing, never dropped
silently. Run by the Hydra callback at the end of a multirun, or by hand on any sweep folder:
``python -m advpure.sweeps.report outputs/multirun/<date>/<time>_evaluate``.
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

from advpure.io import write_atomic, write_json_atomic, write_text_atomic


@dataclass(frozen=True)
class SweepRow:
    """One job: its folder, the overrides that label it, and its results (None if it has none)."""

    job_dir: Path
    label: str
    results: dict[str, Any] | None


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
        rows.append(SweepRow(job, ", ".join(varying) or job.name, results))
    return rows


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
                "status": "done",
                "purifier": r["purifier"]["name"],
                "attack": attack_text(r["attack"]),
                "grad_mode": r.get("grad_mode", "full"),
                "gradient_is_approximation": r.get("gradient_is_approximation", False),
                "n_images": m["defended_clean"]["n"],
                "defended_clean": m["defended_clean"]["value"],
                "defended_robust": m["defended_robust"]["value"],
                "defended_robust_ci_low": m["defended_robust"]["ci_low"],
                "defended_robust_ci_high": m["defended_robust"]["ci_high"],
                "defended_robust_majority": m.get("defended_robust_majority", {}).get("value"),
                "defended_robust_worst": m.get("defended_robust_worst", {}).get("value"),
                "defended_robust_protocol": m.get("defended_robust_protocol", {}).get("value"),
                "undefended_robust": m["undefended_robust"]["value"],
                "reduced_budget": bool(r["attack"].get("reduced_budget")),
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
        lines.append("| " + " | ".join(cells) + " |")
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
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def write_sweep_report(sweep_dir: Path) -> dict[str, Path]:
    """Write sweep.md, sweep.csv, sweep.json and sweep.png into ``sweep_dir``; returns their paths."""
    rows = collect(sweep_dir)
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
    write_chart(paths["png"], rows)
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m advpure.report SWEEP_DIR`` (or ``advpure.sweeps.report``): (re)write a sweep folder's report."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python -m advpure.report <multirun sweep folder>", file=sys.stderr)
        return 2
    paths = write_sweep_report(Path(args[0]))
    print(Path(paths["md"]).read_text())
    print(f"sweep report: {paths['md']} {paths['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
