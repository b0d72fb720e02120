"""Sweep report: shared settings in the header, differing attacks and attack verdicts as columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from advpure.sweeps.summary import write_sweep_report


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


def test_a_numeric_sweep_is_plotted_as_curves_against_the_swept_value(tmp_path):
    from advpure.sweeps.summary import collect, curve_groups, numeric_axis

    attack = {"name": "pgd_eot", "norm": "Linf", "eps": 0.15, "n_iter": 30, "n_eot": 8}
    for number, (t_star, mode) in enumerate([(0.1, "full"), (0.05, "full"), (0.1, "blind"), (0.05, "blind")]):
        _job(tmp_path, number, f"purifier.t_star={t_star}", attack)
        job = next(tmp_path.glob(f"{number}_*"))
        (job / ".hydra" / "overrides.yaml").write_text(
            f"- purifier.t_star={t_star}\n- purifier.grad_mode={mode}\n- logger=none\n"
        )
        results = json.loads((job / "results.json").read_text())
        results |= {"grad_mode": mode, "gradient_is_approximation": mode == "blind"}
        (job / "results.json").write_text(json.dumps(results))
    rows = collect(tmp_path)
    assert numeric_axis(rows) == "purifier.t_star"
    groups = curve_groups(rows, "purifier.t_star")
    assert list(groups) == ["pgd_eot, full (exact)", "pgd_eot, blind (approximation)"]
    # each curve runs left to right: job 1 (t*=0.05) before job 0 (t*=0.1)
    assert [row.job_dir.name[0] for row in groups["pgd_eot, full (exact)"]] == ["1", "0"]
    paths = write_sweep_report(tmp_path)
    assert "![accuracy against purifier.t_star, 95% interval bands](sweep.png)" in paths["md"].read_text()
    with paths["csv"].open() as f:
        table = list(csv.DictReader(f))
    assert [row["purifier.t_star"] for row in table] == ["0.1", "0.05", "0.1", "0.05"]
    assert float(table[0]["defended_robust_worst_ci_high"]) == 1.0 and table[0]["defended_clean_ci_low"] == "0.0"
    assert paths["png"].stat().st_size > 10_000


def test_a_sweep_over_purifiers_has_no_numeric_axis_and_keeps_the_bar_chart(tmp_path):
    from advpure.sweeps.summary import collect, numeric_axis

    attack = {"name": "pgd_eot", "norm": "Linf", "eps": 0.15}
    _job(tmp_path, 0, "purifier=diffpure", attack)
    _job(tmp_path, 1, "purifier=gdmp", attack)
    assert numeric_axis(collect(tmp_path)) is None
    assert "![robust accuracy per job](sweep.png)" in write_sweep_report(tmp_path)["md"].read_text()


def test_job_folder_names_never_nest_and_stay_short_and_distinct():
    from advpure.config.resolvers import JOB_DIRNAME_LIMIT, job_dirname

    assert (
        job_dirname("dataset.root=/data/imagenet,purifier.t_star=0.1")
        == "dataset.root=_data_imagenet,purifier.t_star=0.1"
    )
    long_a = ",".join(f"key{i}=/a/{i}" for i in range(40))
    long_b = long_a.replace("key39=/a/39", "key39=/a/40")
    assert len(job_dirname(long_a)) == JOB_DIRNAME_LIMIT and "/" not in job_dirname(long_a)
    assert job_dirname(long_a) != job_dirname(long_b)
