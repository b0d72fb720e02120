"""Result files: results.json, records.csv, results.md (summary table) and panel.png."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch

from advpure.evaluation.metrics import accuracy
from advpure.evaluation.scoring import score
from advpure.io import save_figure, write_json_atomic, write_text_atomic


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
        if records and all(column in r for r in records):  # batches stored by an older version lack it
            metrics[f"{model}_robust_protocol"] = accuracy(sum(r[column] for r in records), n).as_dict()
    return metrics


# Settings keys of an attack that format_table shows on their own lines, not in the attack's list.
OWN_LINES = {"name", "norm", "eps", "reduced_budget", "grad_mode", "checks", "verdict_rule", "selection"}
OWN_LINES |= {"uses_gradients", "budget_reference"}
VERDICT_NOTE = (
    "its verdict is from the draws the attack saw while attacking; the rescored rows classify fresh "
    "purifications of the examples it returned, so the two can differ"
)


# Per-attack keys long enough to have their own line or too long for one (a gradient's description).
NESTED_HIDDEN = OWN_LINES | {"gradient"}


def settings_text(attack: dict[str, Any]) -> str:
    """``key=value, ...`` of an attack's settings (not those with their own lines); an ensemble's
    ``members`` (name -> settings) as ``name(key=value, ...)``."""
    parts = []
    for key, value in attack.items():
        if key in OWN_LINES:
            continue
        if key == "members" and isinstance(value, dict):
            inner = "; ".join(
                f"{name}({', '.join(f'{k}={v}' for k, v in settings.items() if k not in NESTED_HIDDEN)})"
                for name, settings in value.items()
            )
            parts.append(f"members: {inner}")
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts)


def cost_line(cost: dict[str, Any] | None) -> list[str]:
    """The defended attack's cost in purifier forwards per image (``results["attack_cost"]``)."""
    if not cost:
        return []
    return [
        f"- attack cost on the defended model: {cost['forwards_per_image']:.0f} purifier forwards per image "
        f"({cost['purifier_images_with_graph']} purifications differentiated, "
        f"{cost['purifier_images_forward_only']} forward only; {cost['unit']})"
    ]


def budget_note(attack: dict[str, Any]) -> str:
    """' (REDUCED budget ...)' when the attack's budget is below its published one, ' (budget not
    comparable ...)' when it has none (``reduced_budget: None``), else ''."""
    if attack.get("reduced_budget"):
        return " (REDUCED budget: not a publishable number)"
    if "reduced_budget" in attack and attack["reduced_budget"] is None:
        return f" (budget not comparable to a published protocol: {attack.get('budget_reference', 'none known')})"
    return ""


def check_lines(attack_checks: list[dict[str, Any]] | None) -> list[str]:
    """One Markdown line per check an attack recorded (e.g. pyautoattack's), over every batch and
    model: ``passed``, or ``warned`` with where and its messages."""
    found: dict[str, dict[str, Any]] = {}
    n_batches = len(attack_checks or [])
    for batch in attack_checks or []:
        for model, checks in batch.items():
            if not isinstance(checks, dict) or not all(isinstance(c, dict) and "warned" in c for c in checks.values()):
                continue
            for check, outcome in checks.items():
                entry = found.setdefault(check, {"where": {}, "messages": []})
                if outcome["warned"]:
                    entry["where"][model] = entry["where"].get(model, 0) + 1
                    entry["messages"] += [m for m in outcome["messages"] if m not in entry["messages"]]
    lines = []
    for check, entry in found.items():
        if not entry["where"]:
            lines.append(f"  - {check}: passed")
            continue
        where = ", ".join(f"{model} model in {k} of {n_batches} batches" for model, k in entry["where"].items())
        lines.append(f"  - {check}: warned ({where}): {' / '.join(m.strip() for m in entry['messages'])}")
    return ["- attack checks:", *lines] if lines else []


def format_table(results: dict[str, Any]) -> str:
    """A Markdown table of clean and robust accuracy, undefended and defended, with its settings."""
    m = results["metrics"]
    attack = results["attack"]
    purifier = results["purifier"]

    def cell(name: str) -> str:
        a = m[name]
        return f"{100 * a['value']:.2f}% [{100 * a['ci_low']:.1f}, {100 * a['ci_high']:.1f}]"

    attack_desc = settings_text(attack)
    purifier_desc = ", ".join(
        f"{k}={v}"
        for k, v in purifier.items()
        if k not in {"name", "gradient", "gradient_is_approximation", "surrogate"}
    )
    grad_mode = purifier.get("grad_mode", "full")
    if attack.get("uses_gradients", True):
        gradient = f"{grad_mode}: {purifier.get('gradient', 'exact')}"
        if purifier.get("gradient_is_approximation", False):
            gradient = f"APPROXIMATION ({gradient}); robust accuracy may be overstated"
        defended_label = f"defended ({purifier['name']}, {grad_mode} gradients)"
    else:
        gradient = f"none (attack {attack['name']} takes no gradients)"
        defended_label = f"defended ({purifier['name']}, no attack gradients)"
    lines = [
        f"### {results['dataset']}: {results['classifier']} behind {purifier['name']} vs {attack['name']}",
        "",
        f"- threat model: {attack['norm']}, eps = {attack['eps']:.4g}",
        f"- images: {m['defended_clean']['n']} (test split), seed {results['seed']}",
        f"- attack: {attack['name']}" + (f" ({attack_desc})" if attack_desc else "") + budget_note(attack),
        *cost_line(results.get("attack_cost")),
        f"- purifier: {purifier['name']} ({purifier_desc})",
        f"- attack gradients through the purifier: {gradient}",
        "- scoring: robust = correct on clean and on adversarial; single draw = one purification; majority "
        "vote = the label strictly out-votes every other class (ties count as wrong); worst of N = all N "
        "purifications correct; 95% Wilson intervals",
    ]
    if attack.get("selection"):
        lines.append(f"- adversarial example per point: {attack['selection']}")
    verdict = f"{attack['name']}'s own verdict"
    if "defended_robust_protocol" in m and attack.get("verdict_rule"):
        lines.append(f"- {verdict}: {attack['verdict_rule']}; {VERDICT_NOTE}")
    lines += check_lines(results.get("attack_checks"))
    if results.get("audit"):  # the attack-failure audit (advpure.audit): its verdict line
        lines.append(f"- {results['audit']['verdict']} (indicators, thresholds and fixes: audit.md)")
    lines += [
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
        lines.append(f"| undefended, {verdict} | | {cell('undefended_robust_protocol')} |")
        lines.append(f"| {defended_label}, {verdict} | | {cell('defended_robust_protocol')} |")
    batches = results.get("batches")
    if batches:
        lines += [
            "",
            f"{batches['n_batches']} {'batch' if batches['n_batches'] == 1 else 'batches'} of "
            f"{batches['batch_size']}: {batches['computed_now']} computed in this run, {batches['reused']} reused "
            f"from earlier runs of the same evaluation ({batches['store']})",
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
    save_figure(fig, path, dpi=110)


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
