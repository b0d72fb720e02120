"""Sweep report: shared settings in the header, differing attacks and attack verdicts as columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from advpure.sweeps.report import write_sweep_report


def _metric(correct: int, n: int = 64, **extra) -> dict:
    return {"correct": correct, "n": n, "value": correct / n, "ci_low": 0.0, "ci_high": 1.0, **extra}


def _job(sweep: Path, number: int, override: str, attack: dict, protocol: int | None = None) -> None:
    job = sweep / f"{number}_{override}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- {override}\n- logger=none\n")
    metrics = {
        "defended_clean": _metric(60),
        "defended_robust": _metric(40 + number),
        "defended_robust_majority": _metric(41, k=10),
        "defended_robust_worst": _metric(30, k=10),
        "undefended_robust": _metric(8),
    }
    if protocol is not None:
        metrics["defended_robust_protocol"] = _metric(protocol)
    results = {"dataset": "digits", "classifier": "digits_cnn", "seed": 0, "metrics": metrics}
    results |= {"purifier": {"name": "diffpure"}, "grad_mode": "full", "attack": attack}
    (job / "results.json").write_text(json.dumps(results))


def test_differing_attacks_get_a_column_and_the_protocol_verdict_its_own(tmp_path):
    common = {"norm": "Linf", "eps": 0.15, "n_iter": 30, "n_eot": 8, "reduced_budget": True}
    _job(tmp_path, 0, "attack=pgd_eot", {"name": "pgd_eot", **common})
    _job(tmp_path, 1, "attack=bpda_eot", {"name": "bpda_eot", "n_defense_reps": 64, **common}, protocol=33)
    md = write_sweep_report(tmp_path)["md"].read_text()
    assert "- attack: varies by job" in md
    header = next(line for line in md.splitlines() if line.startswith("| job"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[1] == "attack" and "attack's own verdict" in columns
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| attack=")}
    bpda_cells = [c.strip() for c in rows["attack=bpda_eot"].strip("|").split("|")]
    pgd_cells = [c.strip() for c in rows["attack=pgd_eot"].strip("|").split("|")]
    verdict = columns.index("attack's own verdict")
    assert bpda_cells[verdict].startswith("51.56%") and pgd_cells[verdict] == "-"
    assert bpda_cells[1].startswith("bpda_eot") and "n_defense_reps=64" in bpda_cells[1]
    assert bpda_cells[columns.index("defended robust, single draw")].startswith("64.06%")
    with (tmp_path / "sweep.csv").open() as f:
        by_job = {row["job"]: row for row in csv.DictReader(f)}
    assert float(by_job["attack=bpda_eot"]["defended_robust_protocol"]) == 33 / 64
    assert by_job["attack=pgd_eot"]["defended_robust_protocol"] == ""


def test_one_attack_stays_in_the_header_without_extra_columns(tmp_path):
    attack = {"name": "autoattack", "version": "rand", "norm": "Linf", "eps": 0.15, "n_iter": 30, "n_eot": 8}
    _job(tmp_path, 0, "purifier.t_star=0.05", attack)
    _job(tmp_path, 1, "purifier.t_star=0.1", attack)
    md = write_sweep_report(tmp_path)["md"].read_text()
    assert "- attack: autoattack version=rand, n_iter=30, n_eot=8" in md
    header = next(line for line in md.splitlines() if line.startswith("| job"))
    assert "| attack |" not in header and "verdict" not in header
