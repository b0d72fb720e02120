"""The attack-strength table: every attack advpure ships against the same defense, at matched cost.

    python experiments/attack_strength.py                    # DiffPure (the digits default)
    python experiments/attack_strength.py --purifier gdmp    # a guided purifier

Runs ``python run.py`` once per attack (the digits default otherwise: 64 images, DiffPure t* = 0.1
with 10 solver steps, exact ``full`` gradients), each with the budget below, sized so that every
attack costs about the same number of purifier forwards per image (AutoAttack ``rand`` at its
``cpu_quick`` budget, ~1500; the measured cost is a column of the table: a differentiated
purification counts 3 forwards). Writes ``docs/attack_strength_<purifier>.md`` (+ ``.json``): per attack
the robust accuracy by single draw, majority of 10 and worst of 10 (95% Wilson intervals), the
attack's own verdict, its cost and its wall time. Extra arguments after ``--`` go to every run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Each attack's budget, matched to ~1500 purifier forwards per image (see the module docstring).
BUDGETS: dict[str, list[str]] = {
    "autoattack": [],  # cpu_quick: APGD-CE + APGD-DLR, 30 iterations x EOT 8 each
    "apgd_eot": ["attack.n_iter=60", "attack.n_eot=8"],
    "pgd_eot": ["attack.n_iter=60", "attack.n_eot=8"],
    "bpda_eot": [],  # cpu_quick: 50 steps x EOT 8, 64 defense reps (its backward is the identity: cheap)
    "torchattacks": ["attack.name=EOTPGD", "attack.n_iter=60", "attack.n_eot=8"],
    "diffhammer": ["attack.n_iter=40", "attack.n_eot=8"],
    "diffattack": ["attack.n_iter=45", "attack.n_eot=8"],  # + one clean reference purification per gradient
    "strongest": [],  # cpu_quick: DiffHammer 3 x 15 x 8 draws, then PGD-EOT (margin) 30 x EOT 8
}
METRICS = (
    ("defended_robust", "single draw"),
    ("defended_robust_majority", "majority of 10"),
    ("defended_robust_worst", "worst of 10"),
    ("defended_robust_protocol", "attack's own verdict"),
)


def run_attack(attack: str, purifier: str, extra: list[str], out: Path) -> dict:
    """One evaluation; its results.json (with the wall time added)."""
    run_dir = out / attack
    command = [
        sys.executable,
        str(ROOT / "run.py"),
        f"purifier={purifier}",
        f"attack={attack}",
        *BUDGETS[attack],
        "logger=none",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    print("$", " ".join(command[1:]), flush=True)
    started = time.monotonic()
    subprocess.run(
        command, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    )
    results = json.loads((run_dir / "results.json").read_text())
    results["wall_seconds"] = time.monotonic() - started
    results["overrides"] = BUDGETS[attack]
    results["command"] = " ".join(["python experiments/attack_strength.py", *sys.argv[1:]])
    return results


def cell(metric: dict | None) -> str:
    if not metric:
        return "-"
    return f"{100 * metric['value']:.1f}% [{100 * metric['ci_low']:.1f}, {100 * metric['ci_high']:.1f}]"


def table(rows: dict[str, dict], purifier: str) -> str:
    n_images = sorted({r["metrics"]["defended_clean"]["n"] for r in rows.values()})
    commands = sorted({r.get("command", "python experiments/attack_strength.py") for r in rows.values()})
    lines = [
        f"# Attack strength on digits: purifier `{purifier}`, every attack at matched cost",
        "",
        f"Regenerate: `python experiments/attack_strength.py --purifier {purifier}` (one `python run.py` per "
        f"attack; budgets in the script's BUDGETS). The rows below were measured by "
        + " and ".join(f"`{c}`" for c in commands)
        + ".",
        "",
        f"- defense: the digits default (shipped classifier and diffusion model; "
        f"{' / '.join(map(str, n_images))} test images; Linf eps = 0.15; exact `full` gradients; cpu_quick purifier "
        "budget); wall times on a shared 2-core machine (other jobs ran alongside)",
        "- robust accuracy: correct on the clean image and on the attack's point, scored on fresh "
        "purifications (single draw; majority of 10; worst of 10), 95% Wilson intervals; lower is a "
        "stronger attack",
        "- cost: purifier forwards per image during the attack on the defended model (a differentiated "
        "purification counts 3), measured by the run",
        "",
        "| attack | budget overrides | cost (forwards / image) | single draw | majority of 10 | worst of 10 | "
        "attack's own verdict | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for attack, r in sorted(rows.items(), key=lambda item: item[1]["metrics"]["defended_robust_worst"]["value"]):
        m = r["metrics"]
        cost = r.get("attack_cost", {}).get("forwards_per_image")
        lines.append(
            f"| `{attack}` | {' '.join(r['overrides']) or '(cpu_quick)'} | {cost:.0f} | "
            + " | ".join(cell(m.get(name)) for name, _ in METRICS)
            + f" | {r['wall_seconds'] / 60:.1f} min |"
        )
    return "\n".join(lines) + "\n"


def index(doc_dir: Path) -> str:
    """docs/attack_strength.md: per purifier measured so far, every attack's worst-of-10 robust
    accuracy (the strongest first), from each attack_strength_<purifier>.json in ``doc_dir``."""
    lines = [
        "# Attack strength: the summary",
        "",
        "Every attack advpure ships, against the same defense at matched cost (purifier forwards per",
        "image), on the digits default. One file per purifier, each regenerated by",
        "`python experiments/attack_strength.py --purifier <name>`; this summary is rewritten with them.",
        "Robust accuracy under worst of 10 fresh purifications (lower: stronger attack), 95% Wilson interval.",
        "",
        "| purifier | images | strongest attack | its worst of 10 | every attack, strongest first |",
        "|---|---|---|---|---|",
    ]
    for stored in sorted(doc_dir.glob("attack_strength_*.json")):
        rows = json.loads(stored.read_text())
        ranked = sorted(rows.items(), key=lambda item: item[1]["metrics"]["defended_robust_worst"]["value"])
        name, best = ranked[0]
        n = best["metrics"]["defended_clean"]["n"]
        others = ", ".join(f"{a} {100 * r['metrics']['defended_robust_worst']['value']:.1f}%" for a, r in ranked)
        purifier = stored.stem.removeprefix("attack_strength_")
        lines.append(
            f"| [`{purifier}`]({stored.with_suffix('.md').name}) | {n} | `{name}` | "
            f"{cell(best['metrics']['defended_robust_worst'])} | {others} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--purifier", default="diffpure")
    parser.add_argument("--attacks", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "attack_strength", help="run folders")
    parser.add_argument("--doc-dir", type=Path, default=ROOT / "docs", help="where the table is written")
    parser.add_argument("extra", nargs="*", help="overrides given to every run (after --)")
    args = parser.parse_args()
    doc = args.doc_dir / f"attack_strength_{args.purifier}.md"
    args.doc_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    stored = doc.with_suffix(".json")
    if stored.is_file():  # rows of attacks not re-run this time are kept
        rows = {a: r for a, r in json.loads(stored.read_text()).items() if a not in args.attacks}
    for attack in args.attacks:
        rows[attack] = run_attack(attack, args.purifier, args.extra, args.out / args.purifier)
        doc.write_text(table(rows, args.purifier))  # each row lands as it is measured
        doc.with_suffix(".json").write_text(
            json.dumps(
                {
                    a: {
                        k: r[k]
                        for k in ("metrics", "attack", "attack_cost", "wall_seconds", "overrides", "command")
                        if k in r
                    }
                    for a, r in rows.items()
                },
                indent=1,
                default=str,
            )
        )
    (args.doc_dir / "attack_strength.md").write_text(index(args.doc_dir))
    print(doc.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
