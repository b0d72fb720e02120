"""Result files: results.json, records.csv, results.md (summary table) and panel.png."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch

from advpure.evaluation.metrics import accuracy
from advpure.evaluation.scoring import score
from advpure.io import write_atomic, write_json_atomic, write_text_atomic


def summarize(records: list[dict[str, Any]], n_vote: int = 1, n_worst: int = 1) -> dict[str, dict[str, Any]]:
    """Accuracies with Wilson intervals (robust = correct on clean and on adversarial): the
    undefended control, and the defended model by single draw, majority vote over ``n_vote``
    draws and worst-of-``n_worst`` draws (see :mod:`advpure.evaluation.scoring`)."""
    n = len(records)

    def count(*columns: str) -> int:
        return sum(all(r[c] == r["label"] for c in columns) for r in records)

    metrics = {
        "undefended_clean": accuracy(count("undefended_clean_pred"), n).as_dict(),
        "undefended_robust": accuracy(count("undefended_clean_pred", "undefended_adv_pred"), n).as_dict(),
        "defended_clean": accuracy(count("defended_clean_pred"), n).as_dict(),
        "defended_robust": accuracy(count("defended_clean_pred", "defended_adv_pred"), n).as_dict(),
    }
    labels = [r["label"] for r in records]
    clean = [[int(v) for v in r["defended_clean_draws"].split()] for r in records]
    adv = [[int(v) for v in r["defended_adv_draws"].split()] for r in records]
    for name, k in (("majority", n_vote), ("worst", n_worst)):
        clean_acc, robust_acc = score(clean, adv, labels, name, k)
        metrics[f"defended_clean_{name}"] = {**clean_acc.as_dict(), "k": k}
        metrics[f"defended_robust_{name}"] = {**robust_acc.as_dict(), "k": k}
    for model in ("undefended", "defended"):  # an attack's own verdict (e.g. BPDA+EOT's defense reps)
        column = f"{model}_protocol_robust"
        if records and column in records[0]:
            metrics[f"{model}_robust_protocol"] = accuracy(sum(r[column] for r in records), n).as_dict()
    return metrics


def format_table(results: dict[str, Any]) -> str:
    """A Markdown table of clean and robust accuracy, undefended and defended, with its settings."""
    m = results["metrics"]
    attack = results["attack"]
    purifier = results["purifier"]
    budget = "" if not attack.get("reduced_budget") else " (REDUCED budget: not a publishable number)"

    def cell(name: str) -> str:
        a = m[name]
        return f"{100 * a['value']:.2f}% [{100 * a['ci_low']:.1f}, {100 * a['ci_high']:.1f}]"

    hidden = {"name", "norm", "eps", "reduced_budget", "grad_mode"}
    attack_desc = ", ".join(f"{k}={v}" for k, v in attack.items() if k not in hidden)
    purifier_desc = ", ".join(
        f"{k}={v}"
        for k, v in purifier.items()
        if k not in {"name", "gradient", "gradient_is_approximation", "surrogate"}
    )
    approximate = purifier.get("gradient_is_approximation", False)
    gradient = f"{purifier.get('grad_mode', 'full')}: {purifier.get('gradient', 'exact')}"
    if approximate:
        gradient = f"APPROXIMATION ({gradient}); robust accuracy may be overstated"
    defended_label = f"defended ({purifier['name']}, {purifier.get('grad_mode', 'full')} gradients)"
    lines = [
        f"### {results['dataset']}: {results['classifier']} behind {purifier['name']} vs {attack['name']}",
        "",
        f"- threat model: {attack['norm']}, eps = {attack['eps']:.4g}",
        f"- images: {m['defended_clean']['n']} (test split), seed {results['seed']}",
        f"- attack: {attack['name']} ({attack_desc}){budget}",
        f"- purifier: {purifier['name']} ({purifier_desc})",
        f"- attack gradients through the purifier: {gradient}",
        "- scoring: robust = correct on clean and on adversarial; single draw = one purification; majority "
        "vote = the label strictly out-votes every other class (ties count as wrong); worst of N = all N "
        "purifications correct; 95% Wilson intervals",
        "",
        "| model | clean accuracy | robust accuracy |",
        "|---|---|---|",
        f"| undefended | {cell('undefended_clean')} | {cell('undefended_robust')} |",
        f"| {defended_label}, single draw | {cell('defended_clean')} | {cell('defended_robust')} |",
    ]
    for name, title in (("majority", "majority vote of {k}"), ("worst", "worst of {k}")):
        if f"defended_robust_{name}" in m:
            label = f"{defended_label}, {title.format(k=m[f'defended_robust_{name}']['k'])}"
            lines.append(f"| {label} | {cell(f'defended_clean_{name}')} | {cell(f'defended_robust_{name}')} |")
    if "defended_robust_protocol" in m:
        verdict = f"{attack['name']}'s own verdict (correct at every check of the attack)"
        lines.append(f"| undefended, {verdict} | | {cell('undefended_robust_protocol')} |")
        lines.append(f"| {defended_label}, {verdict} | | {cell('defended_robust_protocol')} |")
    batches = results.get("batches")
    if batches:
        lines += [
            "",
            f"{batches['n_batches']} batches of {batches['batch_size']}: {batches['computed_now']} computed in this "
            f"run, {batches['reused']} reused from earlier runs of the same evaluation ({batches['store']})",
        ]
    lines.append("")
    return "\n".join(lines)


def write_records_csv(path: Path, records: list[dict[str, Any]]) -> None:
    """One row per image."""
    buffer = io.StringIO()
    if records:
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    write_text_atomic(path, buffer.getvalue())


def write_panel(path: Path, panel: dict[str, torch.Tensor], class_names: list[str] | None = None) -> None:
    """PNG: rows clean / adversarial / purified-adversarial, one column per example."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ("clean", "adversarial", "purified")
    k = panel["clean"].shape[0]
    fig, axes = plt.subplots(len(rows), k, figsize=(1.3 * k, 1.4 * len(rows)), squeeze=False)
    for r, name in enumerate(rows):
        for c in range(k):
            image = panel[name][c].permute(1, 2, 0).clamp(0, 1).numpy()
            ax = axes[r][c]
            ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
            if r == 0:
                ax.set_title(f"y={int(panel['label'][c])}", fontsize=8)
            if r == len(rows) - 1:
                ax.set_xlabel(f"pred={int(panel['prediction'][c])}", fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def write_results(run_dir: Path, results: dict[str, Any], records: list[dict[str, Any]], panel: Any) -> dict[str, Path]:
    """Write every result file into ``run_dir`` (``results.json`` last); returns their paths."""
    paths = {
        "results": run_dir / "results.json",
        "records": run_dir / "records.csv",
        "summary": run_dir / "results.md",
    }
    write_records_csv(paths["records"], records)
    write_text_atomic(paths["summary"], format_table(results))
    if panel is not None:
        paths["panel"] = run_dir / "panel.png"
        write_panel(paths["panel"], panel)
    write_json_atomic(paths["results"], {**results, "records": records})  # last: it marks a finished run
    return paths
