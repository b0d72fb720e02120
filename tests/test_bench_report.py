"""make bench's report: every row reaches the file as it is measured, and a deadline skips (and
lists) what was not started, so a run stopped by a time limit keeps its measurements."""

from __future__ import annotations

from benchmarks.purification import PATHS, Report


def test_rows_are_on_disk_before_the_run_ends_and_the_marker_goes_at_the_end(tmp_path):
    out = tmp_path / "RESULTS.md"
    report = Report(out)
    report.add("# title", "| a | b |")
    text = out.read_text()
    assert "| a | b |" in text and text.rstrip().endswith(Report.INCOMPLETE)
    report.add("| c | d |")
    assert out.read_text().index("| a | b |") < out.read_text().index("| c | d |")
    report.finish()
    assert out.read_text() == "# title\n| a | b |\n| c | d |\n"


def test_a_passed_deadline_skips_and_lists_what_was_not_measured(tmp_path):
    report = Report(tmp_path / "RESULTS.md", deadline_s=0.0)
    assert report.out_of_time("loop @ 1024")
    assert not Report(tmp_path / "other.md").out_of_time("loop @ 1024")  # no deadline: never late
    report.finish()
    assert "Skipped after the 0 s deadline (--deadline-s): loop @ 1024." in (tmp_path / "RESULTS.md").read_text()


def test_bf16_paths_run_in_full_except_on_a_cpu_without_bf16_instructions():
    bf16 = [p for p in PATHS if p.precision == "bf16"]
    assert bf16 and all(p.runs_in_full("cuda") and p.runs_in_full("cpu+bf16") for p in bf16)
    assert not any(p.runs_in_full("cpu") for p in bf16)
    assert all(p.runs_in_full("cpu") for p in PATHS if p.precision == "fp32")


def test_every_change_has_a_prediction_for_every_device_kind():
    from benchmarks.purification import PREDICTIONS

    changes = {p.change for p in PATHS if p.base is not None}
    assert changes == set(PREDICTIONS)
    assert all(set(by_kind) == {"cuda", "cpu", "cpu+bf16"} for by_kind in PREDICTIONS.values())


def test_attack_cost_writes_the_iteration_rows_and_its_floor(tmp_path):
    """benchmarks/attack_cost.py on a 1-step purification of one image with N = 2: the table has the
    prediction, the two iterations, the two parts of the grafted one, and ratios that agree with the
    seconds printed beside them (timings themselves are make bench's business, not a test's)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "attack_cost.md"
    root = Path(__file__).resolve().parents[1]
    args = ["--steps", "1", "--batch", "1", "--draws", "2", "--repeats", "1", "--out", str(out)]
    subprocess.run([sys.executable, "benchmarks/attack_cost.py", *args], cwd=root, check=True, capture_output=True)
    text = out.read_text()
    assert "prediction (written before measuring)" in text and "(measuring...)" not in text
    rows = {
        m[0]: (float(m[1]), float(m[2]))
        for m in re.findall(r"^\| ([^|]+?) \| [^|]+ \| ([\d.]+) \| ([\d.]+)x \|$", text, re.M)
    }
    assert set(rows) == {"full EOT", "grafted (DiffHammer)", "of which: N-evaluation", "of which: graft"}
    full_s = rows["full EOT"][0]
    for seconds, ratio in rows.values():  # each printed to 2 decimals
        assert abs(ratio * full_s - seconds) <= 0.005 * (1 + ratio + full_s) + 1e-9, (seconds, ratio, full_s)
    assert "Purifier backward passes per iteration: full EOT 2, grafted 1." in text
