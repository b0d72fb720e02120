"""The attack-failure audit of the digits default, under each gradient mode and each guided purifier.

    python experiments/audit_digits.py                          # every setting below
    python experiments/audit_digits.py --settings diffpure_bpda  # one row again (the others are kept)

Runs ``python run.py task.audit=true`` once per setting: the digits default otherwise (shipped
classifier and diffusion model, the default attack at its ``cpu_quick`` budget, Linf eps 0.15,
seed 0), on ``--images`` test images of which the first ``--audit-images`` are audited (default 16
and 4: the default job's ratio of 64 evaluated to 16 audited, in about 20 minutes of CPU with
``OMP_NUM_THREADS=1``), each with a fresh batch store so the evaluation's own time is measured,
not reused. Writes ``docs/audit_digits.md`` (+ ``.json``, the rows): per setting the robust
accuracy, the audit's verdict, every indicator's verdict and value, and the audit's cost against
the evaluation's (wall time, and purifier forwards, which do not depend on the machine). The text
between the ``notes`` markers of the existing file is kept. Extra overrides after ``--`` go to
every run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "audit_digits.md"
# Each setting's overrides (the digits default otherwise).
SETTINGS: dict[str, list[str]] = {
    "diffpure_full": ["purifier=diffpure", "purifier.grad_mode=full"],
    "diffpure_adjoint": ["purifier=diffpure", "purifier.grad_mode=adjoint"],
    "diffpure_surrogate": ["purifier=diffpure", "purifier.grad_mode=surrogate"],
    "diffpure_bpda": ["purifier=diffpure", "purifier.grad_mode=bpda"],
    "diffpure_blind": ["purifier=diffpure", "purifier.grad_mode=blind"],
    "gdmp_full": ["purifier=gdmp", "purifier.grad_mode=full"],
    "mimicdiffusion_full": ["purifier=mimicdiffusion", "purifier.grad_mode=full"],
    "agdm_full": ["purifier=agdm", "purifier.grad_mode=full"],
}
INDICATORS = (
    "zero_gradients",
    "eot_sufficiency",
    "silent_success",
    "incomplete_optimization",
    "unbounded_attack",
    "approximation_gap",
    "black_box",
    "score_stability",
)
METRICS = ("defended_clean", "defended_robust", "defended_robust_majority")
ATTACK_KEYS = ("name", "version", "n_iter", "n_eot", "n_restarts", "eps", "norm")
AUDIT_KEYS = ("verdict", "failed", "warned", "images", "seconds", "purifier_forwards", "cost")
NOTES_START, NOTES_END = "<!-- notes:start -->", "<!-- notes:end -->"


def run_setting(name: str, images: int, audit_images: int, extra: list[str], out: Path) -> dict:
    """One audited evaluation; its results and audit (with the command's wall time)."""
    run_dir = out / name
    command = [
        sys.executable,
        str(ROOT / "run.py"),
        *SETTINGS[name],
        "task.audit=true",
        f"task.n_images={images}",
        f"task.batch_size={images}",
        f"task.audit_images={audit_images}",
        "logger=none",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    print("$", " ".join(command[1:]), flush=True)
    started, cpu = time.monotonic(), _children_cpu()
    with tempfile.TemporaryDirectory(prefix="audit-digits-store-") as store:  # a fresh store: nothing reused
        env = {**os.environ, "ADVPURE_EVALUATIONS": store, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        subprocess.run(command, check=True, cwd=ROOT, env=env)
    results = json.loads((run_dir / "results.json").read_text())
    audit = json.loads((run_dir / "audit.json").read_text())
    return {
        "overrides": SETTINGS[name] + extra,
        "wall_seconds": time.monotonic() - started,
        "cpu_seconds": _children_cpu() - cpu,
        "metrics": {k: results["metrics"][k] for k in METRICS},
        "attack": {k: results["attack"].get(k) for k in ATTACK_KEYS},
        "audit": {k: audit[k] for k in AUDIT_KEYS},
        "indicators": {
            row["name"]: {k: row[k] for k in ("verdict", "value_text", "budget", "seconds", "fix")}
            for row in audit["indicators"]
        },
    }


def machine() -> str:
    """The CPU's model name (Linux), else the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return f"{os.cpu_count()}-core {line.split(':', 1)[1].strip()}"
    return platform.machine()


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pct(metric: dict) -> str:
    return f"{100 * metric['value']:.1f}% [{100 * metric['ci_low']:.1f}, {100 * metric['ci_high']:.1f}]"


def cell(text: str) -> str:
    return text.replace("|", "/")


def attack_text(attack: dict) -> str:
    """``diffhammer (40 iterations x EOT 8 x 3 restarts)``."""
    version = f" {attack['version']}" if attack.get("version") else ""
    restarts = f" x {attack['n_restarts']} restarts" if attack.get("n_restarts") else ""
    return f"{attack['name']}{version} ({attack['n_iter']} iterations x EOT {attack['n_eot']}{restarts})"


def document(rows: dict[str, dict], images: int, audit_images: int, notes: str) -> str:
    """docs/audit_digits.md from the rows (settings in SETTINGS order)."""
    first = next(iter(rows.values()))
    attack = first["attack"]
    attacks = {attack_text(row["attack"]) for row in rows.values()}
    if len(attacks) > 1:
        raise ValueError(f"the rows were made with different attacks ({sorted(attacks)}): re-run every setting")
    lines = [
        "# The attack-failure audit of the digits default",
        "",
        "Generated by",
        "",
        f"    python experiments/audit_digits.py --images {images} --audit-images {audit_images}",
        "",
        "(one `python run.py task.audit=true` per row, each with a fresh batch store; "
        f"`OMP_NUM_THREADS=1`; {machine()}, "
        f"{datetime.date.today().isoformat()}). Every setting: the shipped digits classifier and diffusion "
        f"model, the default attack at its `cpu_quick` budget, {attack_text(attack)}, {attack['norm']} eps = "
        f"{attack['eps']:.4g}, seed 0, "
        f"the first {images} test images evaluated and the first {audit_images} of them audited (the default "
        f"job evaluates 64 and audits 16{': the same ratio' if images == 4 * audit_images else ''}). The "
        "audit's defaults: `task.audit_options` "
        "(`src/advpure/audit/settings.py`, each threshold with its rationale); re-run attacks at 10 iterations x "
        "EOT 4 x 1 restart, Square 100 queries x EOT 4, rescoring by the majority vote of 10 fresh purifications.",
        "",
        "## Verdicts and cost",
        "",
        "| setting | defended clean | robust, single draw | robust, majority of 10 | audit | evaluation | audit "
        "| audit / evaluation (time) | audit / evaluation (purifier forwards) | CPU of the command |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        m, cost = row["metrics"], row["audit"]["cost"]
        lines.append(
            f"| `{name}` ({' '.join(row['overrides'])}) | {pct(m['defended_clean'])} | {pct(m['defended_robust'])} | "
            f"{pct(m['defended_robust_majority'])} | {cell(row['audit']['verdict'])} | "
            f"{cost['evaluation_seconds']:.0f} s | {cost['audit_seconds']:.0f} s | {cost['time_ratio']:.2f}x | "
            f"{cost['forward_ratio']:.2f}x | {row['cpu_seconds'] / 60:.1f} min |"
        )
    total = sum(row["cpu_seconds"] for row in rows.values()) / 60
    lines += [
        "",
        f"CPU time of the {len(rows)} commands together: {total:.1f} min (evaluation, audit, start-up and writing; "
        "wall times above are of the evaluation and the audit alone, on a machine shared with other work).",
    ]
    lines += [
        "",
        "## Every indicator",
        "",
        "| setting | " + " | ".join(f"`{name}`" for name in INDICATORS) + " |",
        "|---|" + "---|" * len(INDICATORS),
    ]
    for name, row in rows.items():
        cells = [row["indicators"].get(i, {}).get("verdict", "-") for i in INDICATORS]
        lines.append(f"| `{name}` | " + " | ".join(c.upper() if c in ("fail", "warn") else c for c in cells) + " |")
    lines += ["", "## Values", ""]
    for name, row in rows.items():
        lines.append(f"- `{name}`:")
        for indicator in INDICATORS:
            entry = row["indicators"].get(indicator)
            if entry is not None:
                budget = f" ({entry['budget']})" if entry["budget"] else ""
                lines.append(f"  - {indicator}: {entry['verdict']}: {cell(entry['value_text'])}{budget}")
    lines += ["", NOTES_START, notes.strip(), NOTES_END, ""]
    return "\n".join(lines)


def kept_notes() -> str:
    """The hand-written notes of the existing document (between the notes markers), or ''."""
    if not DOC.is_file():
        return ""
    text = DOC.read_text()
    if NOTES_START not in text or NOTES_END not in text:
        return ""
    return text[text.index(NOTES_START) + len(NOTES_START) : text.index(NOTES_END)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--images", type=int, default=16, help="test images each setting evaluates")
    parser.add_argument("--audit-images", type=int, default=4, help="of them, the first ones audited")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "audit_digits", help="the run folders")
    parser.add_argument("extra", nargs="*", help="overrides given to every run (after --)")
    args = parser.parse_args()
    stored = DOC.with_suffix(".json")
    rows: dict[str, dict] = json.loads(stored.read_text()) if stored.is_file() else {}
    notes = kept_notes()
    for name in args.settings:
        rows[name] = run_setting(name, args.images, args.audit_images, args.extra, args.out)
        ordered = {key: rows[key] for key in SETTINGS if key in rows}
        stored.write_text(json.dumps(ordered, indent=1))  # each row lands as it is measured
        DOC.write_text(document(ordered, args.images, args.audit_images, notes))
    print(DOC.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
