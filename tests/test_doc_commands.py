"""Every command the documentation prints runs as printed (tests/doc_commands.py finds them).

What a test composes is not what a user types: each command here runs verbatim in a subprocess
from the repository root (``python`` is this interpreter; outputs go where the command sends them,
under outputs/), with only budget-shrinking overrides appended (:func:`shrink_overrides`: fewer
images, iterations, EOT samples, epochs; never a different option or output folder). It must exit
0 and write the files it promises: ``results.json``/``results.md``/``records.csv`` for an
evaluation, a checkpoint for a training, one job folder per value and ``sweep.md``/``sweep.png``
for a multirun. Before any run, every ``python run.py`` command is composed and validated in
process (fast). A command this machine cannot run (a GPU, SLURM, the published files: see
``NEEDS`` in tests/doc_commands.py) is composed with ``--cfg job`` instead. The README's two
deliberately wrong commands must fail at start-up, naming the key. A few commands are fast (the
default job, the README's multirun and its report, a training, the config printers); the others
are marked slow (``make test-full``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from advpure.config.validate import check_combinations, validate_config
from tests.doc_commands import ROOT, DocCommand, documented_commands, every_job_overrides, first_job_overrides

COMMANDS = documented_commands()
# Documented on purpose as mistakes: the README shows that each stops at start-up naming the key.
MISTAKES = {"python run.py purifier.t_strar=0.1": "purifier.t_star", "python run.py purifier.t_star=1.5": "t_star"}
# make targets a test must not run, and why (each is still checked to exist: make -n).
NOT_RUN = {
    "make test": "it is this test suite",
    "make test-full": "it is this test suite, slow tests included",
    "make clean": "it deletes the .venv the tests run in",
    "make lock": "it rewrites constraints.txt from the installed set",
    "make format": "it rewrites the sources",
    "make bench": "it rewrites the committed benchmark tables (benchmarks/RESULTS.md) over ~12 minutes",
    "make device-kit": "it downloads the GPU machine's packages from PyPI (benchmarks/device/prepare.sh)",
}
# Budget-shrinking overrides, each appended only when its key exists in the command's config.
SHRINK = {
    "task.n_images": 2,
    "task.batch_size": 2,
    "task.n_vote": 2,
    "task.n_worst": 2,
    "task.n_panel": 2,
    "attack.n_iter": 2,
    "attack.n_eot": 2,
    "attack.n_restarts": 1,
    "attack.n_defense_reps": 2,
    "task.max_epochs": 1,
    "task.max_steps": 2,
    "task.n_samples": 2,
    "task.eval_steps": 1,
    "task.trades.steps": 1,
}
FAST = (
    "python experiments/published_standins.py /tmp/standins",
    "make run",
    "make help",
    "make install",
    "make lint",
    "python run.py --cfg job",
    "python run.py +sweep=tstar --cfg hydra",
    "python run.py -m purifier.t_star=0.05,0.1",
    "python run.py purifier.t_star=0.05 attack.norm=L2",
    "python run.py task=train_classifier",
)
# Scripts under experiments/: their budget-shrinking arguments (and, for a script that rewrites a
# committed doc, where its table goes instead: {tmp}). Every documented script needs an entry.
SCRIPT_SHRINK = {
    "experiments/agdm_aux_transfer.py": ["--n-images", "2", "--steps", "2", "--draws", "2"],
    "experiments/published_standins.py": [],
    "experiments/attack_strength.py": [
        "--doc-dir",
        "{tmp}",
        "--out",
        "{tmp}/runs",
        "--",
        "task.n_images=2",
        "task.batch_size=2",
        "task.n_vote=2",
        "task.n_worst=2",
        "attack.n_iter=2",
        "attack.n_eot=2",
    ],
}
# Scripts that write only committed docs (no option to write elsewhere): checked with --help, not run.
SCRIPT_NOT_RUN = {"experiments/audit_digits.py": "it rewrites the committed docs/audit_digits.md"}
# make targets whose recipe is `python run.py ... $(ARGS)` (the shrink overrides go in ARGS).
RUN_TARGETS = (["make", "run"], ["make", "grad-modes"])
TIMEOUT = 1800
CONF = ROOT / "conf"


def _key(command: DocCommand) -> str:
    return " ".join(command.argv)


def _compose(command: DocCommand, overrides: list[str] | None = None):
    overrides = first_job_overrides(command.overrides) if overrides is None else overrides
    hydra_overrides = [o for o in overrides if o.lstrip("+~").startswith("hydra")]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=overrides, return_hydra_config=bool(hydra_overrides))
    finally:
        GlobalHydra.instance().clear()


def shrink_overrides(command: DocCommand) -> list[str]:
    """The budget-shrinking overrides for ``command``: the ``SHRINK`` keys the config of every job
    of it has (a sweep over attacks: only the knobs all of them share)."""
    configs = [_compose(command, job) for job in every_job_overrides(command.overrides)]
    extra = [
        f"{key}={value}"
        for key, value in SHRINK.items()
        if all(OmegaConf.select(cfg, key, default="absent") != "absent" for cfg in configs)
    ]
    if "optuna" in command.text:
        extra.append("hydra.sweeper.n_trials=2")
    return extra


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}


def _split_at_dashes(words: list[str]) -> tuple[list[str], list[str]]:
    """(the words before ``--``, the words after it)."""
    if "--" not in words:
        return words, []
    i = words.index("--")
    return words[:i], words[i + 1 :]


def _argv(command: DocCommand, extra: list[str]) -> list[str]:
    argv = command.argv
    if argv[0] == "python" and argv[1] in SCRIPT_SHRINK:
        tmp = tempfile.mkdtemp(prefix="advpure_doc_")
        shrink = [word.replace("{tmp}", tmp) for word in SCRIPT_SHRINK[argv[1]]]
        # options before the command's own "--" (what follows it goes to run.py), overrides after it
        head, tail = _split_at_dashes(argv[1:])
        shrink_head, shrink_tail = _split_at_dashes(shrink)
        return [sys.executable, *head, *shrink_head, *(["--", *tail, *shrink_tail] if tail or shrink_tail else [])]
    if argv[0] == "python":
        return [sys.executable, *argv[1:], *extra]
    assert argv[0] == "make", argv
    return [*argv, *([f"ARGS={' '.join(extra)}"] if extra else [])]


def _run(argv: list[str], timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)


def _new_folders(parent: Path, before: set[Path]) -> list[Path]:
    return sorted(set(parent.glob("*/*")) - before) if parent.is_dir() else []


def _snapshot(parent: Path) -> set[Path]:
    return set(parent.glob("*/*")) if parent.is_dir() else set()


def _assert_promised_files(command: DocCommand, out: str, runs: list[Path], sweeps: list[Path]) -> None:
    """The files the command's kind promises, in the folders it created (folders of another task,
    made meanwhile by another process, are not its own)."""
    task = OmegaConf.select(_compose(command), "task.name")
    task = str(getattr(task, "value", task))
    runs = [p for p in runs if p.name.endswith(f"_{task}")]
    sweeps = [p for p in sweeps if p.name.endswith(f"_{task}")]
    if command.multirun:
        assert len(sweeps) == 1, f"expected one new sweep folder, found {sweeps}"
        jobs = [p for p in sweeps[0].iterdir() if (p / ".hydra").is_dir()]
        assert jobs, f"no job folder in {sweeps[0]}"
        assert all((job / "results.json").is_file() for job in jobs), jobs
        assert (sweeps[0] / "sweep.md").is_file() and (sweeps[0] / "sweep.png").is_file()
        return
    assert len(runs) == 1, f"expected one new run folder, found {runs}"
    written = {p.name for p in runs[0].iterdir()}
    promised = {
        "evaluate": {"results.json", "results.md", "records.csv"},
        "train_classifier": {"classifier.safetensors", "classifier.json"},
        "train_diffusion": {"diffusion.safetensors", "diffusion.json", "samples.png"},
        "train_agdm_aux": {"agdm_aux.safetensors", "agdm_aux.json", "auxiliary_report.md"},
        "certify": {"certify.csv", "certify.md", "certify.png", "results.json"},
    }.get(task, set())
    assert promised <= written, f"{task} run folder {runs[0]} lacks {promised - written}"


def run_verbatim(command: DocCommand) -> subprocess.CompletedProcess:
    """Run ``command`` with its shrink overrides; assert exit 0 and the promised files."""
    before_runs, before_sweeps = _snapshot(ROOT / "outputs/runs"), _snapshot(ROOT / "outputs/multirun")
    prints_only = any(flag in command.argv for flag in ("--cfg", "-c", "--help", "--info"))
    runs_a_job = (command.argv[:2] == ["python", "run.py"] or command.argv[:2] in RUN_TARGETS) and not prints_only
    result = _run(_argv(command, shrink_overrides(command) if runs_a_job else []))
    assert result.returncode == 0, f"{command.text}\n{result.stderr[-4000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    if runs_a_job:
        runs = _new_folders(ROOT / "outputs/runs", before_runs)
        sweeps = _new_folders(ROOT / "outputs/multirun", before_sweeps)
        _assert_promised_files(command, result.stdout, runs, sweeps)
    return result


def _runnable() -> list[DocCommand]:
    return [
        c
        for c in COMMANDS
        if not c.is_template
        and c.needs is None
        and _key(c) not in MISTAKES
        and _key(c) not in NOT_RUN
        and (len(c.argv) < 2 or c.argv[1] not in SCRIPT_NOT_RUN)
    ]


def _params(commands: list[DocCommand]) -> list:
    return [
        pytest.param(c, id=c.id, marks=() if _key(c) in FAST else (pytest.mark.slow,))
        for c in commands
        if "advpure.report" not in c.text
    ]


def test_the_documentation_has_commands_and_every_kind_is_handled():
    """Each command is run, composed, expected to fail, a template or a listed make exception."""
    assert len(COMMANDS) >= 40
    keys = {_key(c) for c in COMMANDS}
    assert set(FAST) <= keys, set(FAST) - keys  # the fast set still names documented commands
    assert set(MISTAKES) <= keys and set(NOT_RUN) <= keys
    for command in COMMANDS:
        assert command.argv[0] in ("python", "make"), command.id
        if command.argv[1].startswith("experiments/"):
            assert command.argv[1] in SCRIPT_SHRINK or command.argv[1] in SCRIPT_NOT_RUN, (
                f"{command.id}: add the script's shrink arguments to SCRIPT_SHRINK"
            )
    templates = sorted(c.text for c in COMMANDS if c.is_template)
    assert all("<" in t for t in templates)


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.overrides and not c.is_template], ids=lambda c: c.id)
def test_every_run_command_composes_and_validates(command):
    if _key(command) in MISTAKES:
        pytest.skip("a documented mistake: test_documented_mistakes_stop_at_start_up_naming_the_key")
    cfg = _compose(command)
    if "hydra" in cfg:  # the launcher's node, resolved by Hydra per job
        with open_dict(cfg):
            del cfg["hydra"]
    validate_config(cfg)
    check_combinations(cfg)


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.needs and not c.multirun], ids=lambda c: c.id)
def test_commands_this_machine_cannot_run_compose_with_cfg_job(command):
    """Needs a GPU, SLURM or the published files: the verbatim command + ``--cfg job`` composes."""
    if command.argv[:2] != ["python", "run.py"]:
        pytest.skip(f"not a run.py command; needs {command.needs}")
    result = _run([sys.executable, *command.argv[1:], "--cfg", "job"], timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "purifier:" in result.stdout or "task:" in result.stdout


@pytest.mark.parametrize("text", sorted(MISTAKES))
def test_documented_mistakes_stop_at_start_up_naming_the_key(text):
    result = _run([sys.executable, *text.split()[1:]], timeout=120)
    assert result.returncode != 0
    assert MISTAKES[text] in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]


@pytest.mark.parametrize("script", sorted(SCRIPT_NOT_RUN))
def test_scripts_not_run_here_answer_help(script):
    result = _run([sys.executable, script, "--help"], timeout=120)
    assert result.returncode == 0 and "usage" in result.stdout, result.stderr


@pytest.mark.parametrize("target", sorted(NOT_RUN))
def test_make_targets_not_run_here_exist(target):
    result = _run(["make", "-n", *target.split()[1:]], timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", _params(_runnable()))
def test_documented_command_runs_verbatim(command):
    run_verbatim(command)


def test_readme_sweep_then_its_report_command():
    """``python run.py -m purifier.t_star=0.05,0.1`` writes two jobs and sweep.md/.png; the report
    command the README prints, with <date>/<time> filled in from that sweep, rewrites them."""
    sweep = next(c for c in COMMANDS if _key(c) == "python run.py -m purifier.t_star=0.05,0.1")
    before = _snapshot(ROOT / "outputs/multirun")
    run_verbatim(sweep)
    (folder,) = _new_folders(ROOT / "outputs/multirun", before)
    assert len([p for p in folder.iterdir() if (p / "results.json").is_file()]) == 2
    report = next(c for c in COMMANDS if "advpure.report outputs/multirun/<date>/<time>_evaluate" in c.text)
    date, time_task = folder.parent.name, folder.name
    assert time_task.endswith("_evaluate")
    text = report.text.replace("<date>", date).replace("<time>_evaluate", time_task)
    (folder / "sweep.md").unlink()
    started = time.time()
    result = _run([sys.executable, *DocCommand(report.source, report.line, text).argv[1:]], timeout=120)
    assert result.returncode == 0, result.stderr
    assert (folder / "sweep.md").stat().st_mtime >= started - 1
    assert re.search(r"purifier\.t_star=0\.05", (folder / "sweep.md").read_text())


def test_run_py_help_lists_the_user_facing_groups_only():
    result = _run([sys.executable, "run.py", "--help"], timeout=120)
    assert result.returncode == 0
    groups = dict(line.split(": ", 1) for line in result.stdout.splitlines() if re.match(r"^\+?[a-z_]+: \S+, ", line))
    assert {"attack", "purifier", "dataset", "budget", "+experiment", "+sweep"} <= set(groups)
    assert groups["attack"].startswith("diffhammer")  # the default first
    assert not any(name.startswith(("schema", "budget/", "protocol")) for name in groups)
