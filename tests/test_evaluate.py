"""End to end: the evaluate task on a few digits, in process and through the CLI (single and multirun)."""

from __future__ import annotations

import csv
import json
import struct
import subprocess
import sys

import pytest

from advpure.cli import run_task
from advpure.errors import ConfigError
from advpure.tasks.context import RunContext
from tests.conftest import ROOT

SMALL = (
    "attack=autoattack",  # this module checks AutoAttack's own verdict and checks in the table
    "task.n_images=12",
    "task.batch_size=12",
    "attack.n_iter=10",
    "attack.n_eot=2",
    "purifier.dt=0.02",
    "logger=none",
)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(SMALL))
    GlobalHydra.instance().clear()
    run_dir = tmp_path_factory.mktemp("evaluate")
    results = run_task(cfg, RunContext(run_dir, "python run.py " + " ".join(SMALL), {"dataset": "digits"}))
    return run_dir, results


def test_attack_breaks_the_undefended_classifier_and_robust_never_exceeds_clean(small_run):
    _, results = small_run
    m = results["metrics"]
    assert m["undefended_robust"]["value"] <= m["undefended_clean"]["value"]
    assert m["defended_robust"]["value"] <= m["defended_clean"]["value"]
    assert m["undefended_clean"]["value"] >= 0.9
    # the attack really attacks: the undefended classifier loses most of its accuracy
    assert m["undefended_robust"]["value"] <= 0.5 * m["undefended_clean"]["value"]
    assert results["attack"]["eps"] == 0.15 and results["attack"]["n_iter"] == 10
    assert results["purifier"]["t_star"] == 0.1 and results["purifier"]["n_steps"] == 5
    for rule in ("majority", "worst"):
        assert m[f"defended_robust_{rule}"]["k"] == 10
        assert m[f"defended_robust_{rule}"]["value"] <= m[f"defended_clean_{rule}"]["value"]
    assert m["defended_robust_worst"]["value"] <= m["defended_robust"]["value"]


def test_result_files_agree_with_each_other(small_run):
    run_dir, _ = small_run
    stored = json.loads((run_dir / "results.json").read_text())
    with open(run_dir / "records.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(stored["records"]) == 12
    assert sorted(int(r["index"]) for r in rows) == list(range(12))
    robust = sum(int(r["defended_clean_pred"]) == int(r["label"]) == int(r["defended_adv_pred"]) for r in rows)
    for r in rows:  # draw 0 is the single-draw prediction; 10 draws per image
        clean_draws, adv_draws = r["defended_clean_draws"].split(), r["defended_adv_draws"].split()
        assert len(clean_draws) == len(adv_draws) == 10
        assert (int(clean_draws[0]), int(adv_draws[0])) == (int(r["defended_clean_pred"]), int(r["defended_adv_pred"]))
    assert robust == stored["metrics"]["defended_robust"]["correct"]
    assert max(float(r["defended_linf"]) for r in rows) <= 0.15 + 1e-6
    assert max(float(r["undefended_linf"]) for r in rows) <= 0.15 + 1e-6
    summary = (run_dir / "results.md").read_text()
    assert "eps = 0.15" in summary and "t_star=0.1" in summary and "| undefended |" in summary
    assert "majority vote of 10 |" in summary and "worst of 10 |" in summary
    # AutoAttack's own robust accuracy next to the rescored rows, its checks as a readable list
    assert "autoattack's own verdict |" in summary and "fresh purifications" in summary
    assert "checks={" not in summary and "- attack checks:" in summary and "  - check_randomized: " in summary
    assert "1 batch of 12:" in summary
    verdict = sum(int(r["defended_protocol_robust"]) for r in rows)
    assert verdict == stored["metrics"]["defended_robust_protocol"]["correct"]
    traces = stored["attack_checks"][0]["traces"]["defended"]
    assert set(traces) == {"run", "margin", "fooled_draws"} and {"apgd-ce"} <= set(traces["run"])
    assert (run_dir / "panel.png").read_bytes()[:4] == b"\x89PNG"
    assert stored["versions"]["torch"] and stored["seed"] == 0 and stored["budget"] == "cpu_quick"
    assert stored["subset"] == {"n_images": 12, "subset_seed": None, "subset_index": 0, "class_balanced": False}


@pytest.mark.parametrize(
    ("purifier", "grad_mode", "approximate"),
    [("diffpure_ddpm", "full", False), ("diffpure_ddpm", "surrogate", True), ("diffpure_ode", "bpda", True)],
)
def test_variants_and_grad_modes_run_end_to_end_and_say_what_they_used(
    compose_cfg, tmp_path, purifier, grad_mode, approximate
):
    overrides = (f"purifier={purifier}", f"purifier.grad_mode={grad_mode}", "task.n_images=4", "task.batch_size=4")
    tiny = ("attack.n_iter=2", "attack.n_eot=1", "logger=none")
    results = run_task(compose_cfg(*overrides, *tiny), RunContext(tmp_path))
    assert results["purifier"]["name"] == purifier and results["purifier"]["n_steps"] == 10
    assert results["attack"]["grad_mode"] == results["grad_mode"] == grad_mode
    assert results["gradient_is_approximation"] is approximate
    summary = (tmp_path / "results.md").read_text()
    assert ("APPROXIMATION" in summary) is approximate
    assert f"defended ({purifier}, {grad_mode} gradients)" in summary


def _results(attack: dict, attack_checks: list | None = None) -> dict:
    """A results dict as the evaluate task writes it, with made-up accuracies."""
    metric = {"value": 0.5, "ci_low": 0.3, "ci_high": 0.7, "n": 8, "correct": 4}
    names = ("clean", "robust", "robust_protocol")
    return {
        "dataset": "digits",
        "classifier": "digits_cnn",
        "seed": 0,
        "metrics": {f"{model}_{name}": metric for model in ("undefended", "defended") for name in names},
        "attack": attack,
        "purifier": {"name": "diffpure", "grad_mode": "full", "gradient": "exact", "t_star": 0.1},
        "batches": {"n_batches": 1, "batch_size": 8, "computed_now": 1, "reused": 0, "store": "/store"},
        "attack_checks": attack_checks or [],
    }


def test_table_without_an_attack_says_so_and_counts_one_batch():
    from advpure.attacks.none import NoAttack
    from advpure.evaluation.tables import format_table

    table = format_table(_results(NoAttack().settings()))
    assert "full gradients" not in table and "defended (diffpure, no attack gradients), single draw" in table
    assert "attack gradients through the purifier: none (attack none takes no gradients)" in table
    assert "- attack: none\n" in table and "1 batch of 8:" in table and "1 batches" not in table


def test_table_flags_torchattacks_budgets_reduced_or_not_comparable():
    from advpure.attacks.torchattacks_runner import TorchAttacksRunner
    from advpure.evaluation.tables import format_table

    reduced = format_table(_results(TorchAttacksRunner("EOTPGD", eps=0.1, n_iter=20, n_eot=4).settings()))
    assert "REDUCED budget" in reduced
    other = format_table(_results(TorchAttacksRunner("PGD", eps=0.1, n_iter=20).settings()))
    assert "REDUCED" not in other and "budget not comparable to a published protocol" in other


def test_table_renders_autoattack_checks_as_a_list_and_its_own_verdict():
    import torch

    from advpure.attacks.autoattack import AutoAttackRunner
    from advpure.evaluation.tables import format_table

    x = torch.rand(4, 1, 8, 8)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    noisy = torch.nn.Sequential(torch.nn.Dropout(0.5), net).train()  # a randomized model
    runner = AutoAttackRunner(eps=0.05, version="rand", n_iter=2, n_eot=1)
    y = net(x).argmax(1)
    runner(net, x, y)
    undefended = runner.last_checks
    runner(noisy, x, y)
    checks = [{"batch": 0, "undefended": undefended, "defended": runner.last_checks, "nonfinite": []}]
    table = format_table(_results(runner.settings(), checks))
    assert "checks={" not in table and "flags_doc" not in table and 'use version="rand"' not in table
    assert "  - check_randomized: warned (defended model in 1 of 1 batches): it seems to be a randomized" in table
    assert "  - check_range_output: passed" in table
    assert "| defended (diffpure, full gradients), autoattack's own verdict | | 50.00% [30.0, 70.0] |" in table
    assert "its verdict is from the draws the attack saw while attacking" in table


def test_too_many_images_is_refused_before_work(compose_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"task\.n_images"):
        run_task(compose_cfg("task.n_images=5000", "logger=none"), RunContext(tmp_path))


def _run_cli(*overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    """``python run.py [-m] <overrides>`` with a tiny attack budget, from the project root."""
    tiny = ("task.batch_size=4", "attack.n_iter=2", "attack.n_eot=1", "logger=none")
    result = subprocess.run(
        [sys.executable, "run.py", *(["-m"] if multirun else []), *tiny, *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_cli_multirun_writes_one_folder_per_job_and_a_sweep_report(tmp_path):
    sweep = tmp_path / "sweep"
    _run_cli(
        "purifier.t_star=0.05,0.1",
        "purifier.grad_mode=full,blind",
        "task.n_images=4",
        f"hydra.sweep.dir={sweep}",
        multirun=True,
    )
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert len(results) == 4
    settings = sorted((r["purifier"]["t_star"], r["attack"]["grad_mode"]) for r in results)
    assert settings == [(0.05, "blind"), (0.05, "full"), (0.1, "blind"), (0.1, "full")]
    assert {r["grad_mode"]: r["gradient_is_approximation"] for r in results} == {"full": False, "blind": True}
    report = (sweep / "sweep.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| purifier.")]
    assert rows[0].startswith("| purifier.t_star=0.05, purifier.grad_mode=full | full (exact) |")
    assert rows[1].startswith("| purifier.t_star=0.05, purifier.grad_mode=blind | blind (approximation) |")
    assert len(rows) == 4
    table = list(csv.DictReader((sweep / "sweep.csv").open()))
    assert [row["status"] for row in table] == ["done"] * 4
    assert (sweep / "sweep.png").stat().st_size > 1000
    # a job that died leaves a row saying so (re-running the report by hand, with the command)
    (sweep.glob("3_*").__next__() / "results.json").unlink()
    command = [sys.executable, "-m", "advpure.report", str(sweep)]
    printed = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    assert (sweep / "sweep.md").read_text().count("missing results.json") == 1
    assert f"sweep report: {sweep / 'sweep.md'}" in printed
    usage = subprocess.run([*command[:3], str(sweep / "nowhere")], capture_output=True, text=True, cwd=ROOT)
    assert usage.returncode == 2 and f"error: {sweep / 'nowhere'} is not a folder" in usage.stderr
    assert "Traceback" not in usage.stderr
    helped = subprocess.run([*command[:3], "--help"], capture_output=True, text=True, cwd=ROOT)
    assert helped.returncode == 0 and "usage: python -m advpure.report" in helped.stdout


def test_cli_ddp_on_two_cpu_processes_gathers_every_image(tmp_path):
    _run_cli(
        "hardware=ddp",
        "hardware.accelerator=cpu",
        "hardware.devices=2",
        "purifier=none",
        "task.n_images=7",
        "task.batch_size=2",
        f"hydra.run.dir={tmp_path}",
    )
    stored = json.loads((tmp_path / "results.json").read_text())
    # 7 images in 4 batches over 2 ranks (the last batch is short); no image twice, none missing
    assert [r["index"] for r in stored["records"]] == list(range(7))
    assert (tmp_path / "panel.png").is_file()  # purifier=none: the purified images are the adversarial ones
    assert stored["metrics"]["undefended_clean"]["n"] == 7


def test_wandb_offline_run_gets_metrics_the_per_example_table_and_the_panel(compose_cfg, tmp_path, capsys):
    overrides = ("logger=wandb", "attack=pgd_eot", "attack.n_iter=2", "attack.n_eot=1", "task.n_images=4")
    scoring = ("task.batch_size=4", "task.n_vote=2", "task.n_worst=2", "task.n_panel=3")
    run_task(compose_cfg(*overrides, *scoring), RunContext(tmp_path))
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert f"upload it with: wandb sync {run}" in capsys.readouterr().out
    (table_file,) = (run / "files" / "media" / "table").glob("records_*.table.json")
    table = json.loads(table_file.read_text())
    assert "defended_attack_succeeded" in table["columns"] and "defended_adv_draws" in table["columns"]
    assert sorted(row[table["columns"].index("index")] for row in table["data"]) == [0, 1, 2, 3]
    assert list((run / "files" / "media" / "images").glob("panel_*.png"))
    logged = _offline_history(next(run.glob("run-*.wandb")))
    config = logged["config"]  # the resolved config, as a plain dict
    assert config["purifier"]["t_star"] == 0.1 and config["task"]["n_images"] == 4
    metrics = json.loads((tmp_path / "results.json").read_text())["metrics"]
    for name in ("defended_robust", "defended_robust_majority", "undefended_robust"):
        assert logged[f"final/{name}"] == pytest.approx(metrics[name]["value"])


def _offline_history(path):
    """Every history value an offline W&B run logged, by key (the last value wins), and under
    ``config`` the run's config (each key's JSON value).

    Offline runs keep metrics only in the run's record log: a 7-byte file header (":W&B", magic,
    version), then LevelDB-style chunks (CRC32 4 bytes, length 2 bytes little-endian, kind 1 byte:
    full/first/middle/last) in 32 KiB blocks whose tails under 7 bytes are padding. Each whole
    record is a `wandb_internal_pb2.Record` protobuf.
    """
    from wandb.proto import wandb_internal_pb2

    data, pos, block, chunks, history = path.read_bytes(), 7, 32768, [], {"config": {}}
    assert data[:4] == b":W&B", f"{path} is not a W&B record log"
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # full or last chunk: one record is complete
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            if record.WhichOneof("record_type") == "config":
                for item in record.config.update:
                    history["config"][item.key] = json.loads(item.value_json)
            if record.WhichOneof("record_type") == "history":
                for item in record.history.item:
                    history["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
    return history
