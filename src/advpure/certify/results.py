"""Certification results: certified accuracy at radii with exact intervals, and the files people read.

Certified accuracy at radius r (Cohen et al.'s ``analyze.py``): the fraction of images whose
certified class is their label with certified radius >= r (abstentions count as wrong). Each
value carries its exact two-sided 95% Clopper-Pearson interval over the images
(``scipy.stats.binomtest``). A run writes ``certify.csv`` (one row per image), ``certify.md``,
``certify.png`` (certified accuracy against radius) and ``results.json``; a multirun of certify
jobs gets ``sweep.md`` / ``.csv`` / ``.json`` / ``.png`` with one curve per job
(:func:`write_certify_sweep_report`, called by :mod:`advpure.sweeps.summary`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

from advpure.certify.smoothing import ABSTAIN
from advpure.io import save_figure, write_json_atomic, write_text_atomic

PUBLISHED_N = 100_000  # Cohen et al.'s and Carlini et al.'s estimation samples
PUBLISHED_N0 = 100
CSV_COLUMNS = ("index", "label", "prediction", "p_a_lower", "radius", "correct", "time_s", "count_a", "n", "selected")


def exact_interval(count: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided exact (Clopper-Pearson) interval of ``count`` of ``n``; (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    interval = binomtest(int(count), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(interval.low), float(interval.high)


def proportion(count: int, n: int, name: str = "correct") -> dict[str, float | int]:
    """``{name: count, n, value, ci_low, ci_high}`` with the exact 95% interval."""
    low, high = exact_interval(count, n)
    return {name: int(count), "n": int(n), "value": count / n if n else 0.0, "ci_low": low, "ci_high": high}


def metric_name(radius: float) -> str:
    """``certified_accuracy_r0.25`` for radius 0.25."""
    return f"certified_accuracy_r{radius:g}"


def summarize(records: Sequence[dict[str, Any]], radii: Sequence[float]) -> dict[str, Any]:
    """Certified accuracy at each radius and the abstention rate, each with its 95% interval;
    ``records``: per-image dicts with ``correct`` (bool) and ``radius`` (float), ``prediction``."""
    n = len(records)
    metrics: dict[str, Any] = {}
    for radius in radii:
        certified = sum(bool(r["correct"]) and r["radius"] >= radius for r in records)
        metrics[metric_name(radius)] = {"radius": float(radius), **proportion(certified, n)}
    abstained = sum(r["prediction"] == ABSTAIN for r in records)
    metrics["abstained"] = proportion(abstained, n, name="count")
    return metrics


def correct_radii(records: Sequence[dict[str, Any]]) -> list[float]:
    """Sorted certified radii of the correctly certified images (what a curve needs)."""
    return sorted(float(r["radius"]) for r in records if r["correct"])


def csv_text(records: Sequence[dict[str, Any]]) -> str:
    """One row per image: dataset index, label, prediction (``abstain``), p_A lower bound, radius,
    correct (0/1), seconds, n_A, n, the class the selection samples chose."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for record in records:
        row = dict(record)
        row["prediction"] = "abstain" if record["prediction"] == ABSTAIN else record["prediction"]
        row["correct"] = int(bool(record["correct"]))
        row["p_a_lower"] = f"{record['p_a_lower']:.6f}"
        row["radius"] = f"{record['radius']:.6f}"
        row["time_s"] = f"{record['time_s']:.4f}"
        writer.writerow(row)
    return buffer.getvalue()


def _pct(metric: dict[str, Any]) -> str:
    return f"{100 * metric['value']:.2f}% [{100 * metric['ci_low']:.1f}, {100 * metric['ci_high']:.1f}]"


def setting_label(results: dict[str, Any]) -> str:
    """``sigma=0.25, one_shot`` (``multistep, 3 votes``): what tells certify runs apart."""
    certify = results["certify"]
    votes = f", {certify['n_votes']} votes" if certify["n_votes"] > 1 else ""
    return f"sigma={certify['sigma']:g}, {certify['denoiser']}{votes}"


def budget_note(results: dict[str, Any]) -> str:
    certify = results["certify"]
    if not results.get("reduced_budget"):
        return ""
    return (
        f" (REDUCED budget: n = {certify['n']}, n0 = {certify['n0']} instead of Cohen et al.'s "
        f"{PUBLISHED_N} and {PUBLISHED_N0}: smaller certified radii, not a publishable number)"
    )


def format_markdown(results: dict[str, Any]) -> str:
    """The run's table: certified accuracy at each radius with its interval, abstentions, time."""
    certify, metrics, level = results["certify"], results["metrics"], results["certify"]["level"]
    radii = [m["radius"] for name, m in metrics.items() if name.startswith("certified_accuracy_r")]
    timing = results["timing"]
    lines = [
        f"### Certified robustness: {setting_label(results)}",
        "",
        f"- {results['dataset']}, {results['classifier']}; diffusion {results.get('diffusion')}; "
        f"denoiser {certify['denoiser']} at t = {level['t']:.4g} (alpha_bar = {level['alpha_bar']:.4g}"
        + (f", discrete step {level['step']}" if level.get("step") is not None else "")
        + f"), {certify['denoiser_settings']['network_calls']} network call(s) per denoising, "
        f"{certify['n_votes']} vote(s)",
        f"- randomized smoothing (Cohen et al. 2019): sigma = {certify['sigma']:g} (pixel units), "
        f"n0 = {certify['n0']}, n = {certify['n']}, alpha = {certify['alpha']:g}{budget_note(results)}",
        f"- images: {results['images']['n_images']} ({results['images']['computed_now']} computed now, "
        f"{results['images']['reused']} reused), seed {results['seed']}; 95% Clopper-Pearson intervals over images",
        f"- time: {timing['mean_s_per_image']:.3g} s per image ({timing['device']})",
        "",
        "| radius (L2) | " + " | ".join(f"{r:g}" for r in radii) + " | abstained |",
        "|---|" + "---|" * (len(radii) + 1),
        "| certified accuracy | "
        + " | ".join(_pct(metrics[metric_name(r)]) for r in radii)
        + f" | {_pct(metrics['abstained'])} |",
        "",
        "![certified accuracy against radius](certify.png)",
    ]
    return "\n".join(lines) + "\n"


def accuracy_curve(radii_correct: Sequence[float], n_images: int, max_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Certified accuracy (fraction) on a grid of radii from 0 to ``max_radius`` (500 points)."""
    grid = np.linspace(0.0, max_radius, 500)
    values = np.asarray(sorted(radii_correct), dtype=float)
    counts = len(values) - np.searchsorted(values, grid, side="left")
    return grid, counts / max(n_images, 1)


def write_curves(path: Path, curves: Sequence[dict[str, Any]], title: str) -> Path:
    """Certified accuracy (%) against L2 radius, one line per curve; a curve is
    ``{label, correct_radii, n_images, metrics}``; each reported radius gets its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reported = [m["radius"] for c in curves for name, m in c["metrics"].items() if name.startswith("certified_")]
    max_radius = max([*reported, *(r for c in curves for r in c["correct_radii"]), 0.25]) * 1.05
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, curve in enumerate(curves):
        color = colors[i % len(colors)]
        grid, values = accuracy_curve(curve["correct_radii"], curve["n_images"], max_radius)
        ax.plot(grid, 100 * values, color=color, label=curve["label"], linestyle=("-", "--", ":", "-.")[i // 10 % 4])
        points = [m for name, m in curve["metrics"].items() if name.startswith("certified_accuracy_r")]
        shift = (i - (len(curves) - 1) / 2) * 0.006 * max_radius  # interval bars side by side, not on top
        x = [m["radius"] + shift for m in points]
        y = [100 * m["value"] for m in points]
        err = [[100 * (m["value"] - m["ci_low"]) for m in points], [100 * (m["ci_high"] - m["value"]) for m in points]]
        ax.errorbar(x, y, yerr=err, fmt="o", color=color, markersize=3, capsize=3, linewidth=0.8)
    ax.set_xlabel("L2 radius (pixel units, images in [0, 1])")
    ax.set_ylabel("certified accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_xlim(0, max_radius)
    ax.set_title(title + "; bars: 95% Clopper-Pearson intervals at the reported radii", fontsize=8)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    return path


def curve_of(results: dict[str, Any], label: str | None = None) -> dict[str, Any]:
    """The curve :func:`write_curves` draws for one run's results."""
    return {
        "label": label or setting_label(results),
        "correct_radii": results["correct_radii"],
        "n_images": results["images"]["n_images"],
        "metrics": results["metrics"],
    }


def write_run_files(folder: Path, results: dict[str, Any], records: Sequence[dict[str, Any]]) -> dict[str, Path]:
    """``certify.csv``, ``certify.md``, ``certify.png`` and (last) ``results.json`` in ``folder``."""
    paths = {
        "certify.csv": write_text_atomic(folder / "certify.csv", csv_text(records)),
        "certify.md": write_text_atomic(folder / "certify.md", format_markdown(results)),
        "certify.png": write_curves(
            folder / "certify.png", [curve_of(results)], f"{results['dataset']}, {results['images']['n_images']} images"
        ),
    }
    paths["results.json"] = write_json_atomic(folder / "results.json", results)
    return paths


# ------------------------------------------------------------------------------- sweeps


def is_certify(results: dict[str, Any] | None) -> bool:
    return results is not None and results.get("task") == "certify"


def sweep_records(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """One flat record per job of a sweep (``rows``: :class:`advpure.sweeps.summary.SweepRow`)."""
    flat = []
    for row in rows:
        r = row.results
        if not is_certify(r):
            status = "missing results.json" if r is None else f"not a certify job (task {r.get('task')})"
            flat.append({"job": row.label, "status": status, "folder": row.job_dir.name})
            continue
        certify = r["certify"]
        record = {
            "job": row.label,
            **row.swept,
            "status": "done",
            "sigma": certify["sigma"],
            "denoiser": certify["denoiser"],
            "n_votes": certify["n_votes"],
            "t": certify["level"]["t"],
            "n0": certify["n0"],
            "n": certify["n"],
            "alpha": certify["alpha"],
            "n_images": r["images"]["n_images"],
        }
        for name, metric in r["metrics"].items():
            record[name] = metric["value"]
            record[f"{name}_ci_low"] = metric["ci_low"]
            record[f"{name}_ci_high"] = metric["ci_high"]
        record["s_per_image"] = r["timing"]["mean_s_per_image"]
        record["reduced_budget"] = bool(r.get("reduced_budget"))
        record["folder"] = row.job_dir.name
        flat.append(record)
    return flat


def format_sweep_markdown(rows: Sequence[Any], sweep_dir: Path) -> str:
    """The sweep's table (one row per job) under the settings every job shares."""
    done = [row.results for row in rows if is_certify(row.results)]
    lines = [f"### Certification sweep {sweep_dir.name}", ""]
    radii: list[float] = []
    if done:
        first = done[0]
        radii = [m["radius"] for name, m in first["metrics"].items() if name.startswith("certified_accuracy_r")]
        certify = first["certify"]
        lines += [
            f"- {first['dataset']}, {first['classifier']}; diffusion {first.get('diffusion')}; "
            f"images: {first['images']['n_images']}, seed {first['seed']}",
            f"- randomized smoothing (Cohen et al. 2019): n0 = {certify['n0']}, n = {certify['n']}, "
            f"alpha = {certify['alpha']:g}{budget_note(first)}",
            "- certified accuracy at each L2 radius (pixel units), with 95% Clopper-Pearson intervals over images",
            "",
        ]
    header = ["job", "sigma", "denoiser", "t", *(f"r = {r:g}" for r in radii), "abstained", "s / image"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        r = row.results
        if not is_certify(r):
            status = "missing results.json" if r is None else "not a certify job"
            lines.append(
                "| " + " | ".join([row.label, f"{status} ({row.job_dir.name})"] + ["-"] * (len(header) - 2)) + " |"
            )
            continue
        certify, metrics = r["certify"], r["metrics"]
        votes = f" ({certify['n_votes']} votes)" if certify["n_votes"] > 1 else ""
        cells = [row.label, f"{certify['sigma']:g}", certify["denoiser"] + votes, f"{certify['level']['t']:.4g}"]
        cells += [_pct(metrics[metric_name(radius)]) if metric_name(radius) in metrics else "-" for radius in radii]
        cells += [_pct(metrics["abstained"]), f"{r['timing']['mean_s_per_image']:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![certified accuracy against radius, one line per job](sweep.png)"]
    return "\n".join(lines) + "\n"


def write_certify_sweep_report(sweep_dir: Path, rows: Sequence[Any]) -> dict[str, Path]:
    """sweep.md, sweep.csv, sweep.json and sweep.png (certified accuracy against radius, one line
    per job) for a multirun of ``task=certify`` jobs; returns their paths."""
    paths = {name: sweep_dir / f"sweep.{name}" for name in ("md", "csv", "json", "png")}
    flat = sweep_records(rows)
    write_text_atomic(paths["md"], format_sweep_markdown(rows, sweep_dir))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for record in flat for k in record)))
    writer.writeheader()
    writer.writerows(flat)
    write_text_atomic(paths["csv"], buffer.getvalue())
    write_json_atomic(paths["json"], {"sweep_dir": str(sweep_dir), "jobs": flat})
    done = [row for row in rows if is_certify(row.results)]
    curves = [curve_of(row.results) for row in done]
    n_images = sorted({row.results["images"]["n_images"] for row in done})
    write_curves(paths["png"], curves, f"{len(done)} jobs, {'/'.join(map(str, n_images))} images each")
    return paths
