"""docs/api.md's examples run as printed and print what the page shows.

Each ``python`` block runs verbatim in its own interpreter from the repository root (one CPU
thread, as the page's numbers were measured) and its output is compared with the ``text`` block
that follows it: the same lines word for word with every number masked, shapes and flags exact,
and each accuracy or count within two images of the documented one (floating-point sums differ
across CPUs, and an attack can flip a borderline image). The ``bash`` block runs verbatim too
(``python`` is this interpreter; marked slow) and must write the files it describes. Every ``advpure.…`` name
the page cites must import.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT

DOC = ROOT / "docs" / "api.md"
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def fenced_blocks() -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block of docs/api.md, in order."""
    return [(lang, body) for lang, body in FENCE.findall(DOC.read_text())]


def python_examples() -> list[tuple[str, str]]:
    """``(code, documented output)``: each ``python`` block and the ``text`` block right after it."""
    blocks = fenced_blocks()
    examples = []
    for index, (lang, body) in enumerate(blocks):
        if lang == "python":
            assert index + 1 < len(blocks) and blocks[index + 1][0] == "text", "a python block without its output"
            examples.append((body, blocks[index + 1][1]))
    return examples


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-"], input=code, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def tolerance(line: str) -> float:
    """How far a number of this output line may move: two images' worth for an accuracy (of 16
    images: 12.5 points) or a count, 0.01 for the mean change, nothing for shapes and flags."""
    if "accuracy" in line:
        return 12.5
    if "correct:" in line:
        return 2
    if "mean change" in line:
        return 0.01
    return 0


def assert_output_matches(printed: str, documented: str) -> None:
    got, want = printed.strip().splitlines(), documented.strip().splitlines()
    assert [NUMBER.sub("#", line) for line in got] == [NUMBER.sub("#", line) for line in want], printed
    for got_line, want_line in zip(got, want, strict=True):
        # the first number of a line is its measurement; an accuracy's interval follows from it
        got_value, want_value = (
            float(NUMBER.findall(line)[0]) if NUMBER.search(line) else 0.0 for line in (got_line, want_line)
        )
        assert abs(got_value - want_value) <= tolerance(want_line), f"{got_line!r} vs documented {want_line!r}"
        if tolerance(want_line) == 0:
            assert got_line == want_line


def test_page_has_the_examples_it_promises():
    languages = [lang for lang, _ in fenced_blocks()]
    assert languages.count("python") == 2 and languages.count("bash") == 1
    for code, _ in python_examples():
        assert len(code.strip().splitlines()) <= 32  # "about 20 lines" of work, plus imports


def test_purify_attack_score_example_runs_and_prints_what_the_page_shows():
    code, documented = python_examples()[0]
    for name in ("compose_config", "load_purifier", "PGDEOT", "DefendedClassifier", "accuracy"):
        assert name in code
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_output_matches(result.stdout, documented)
    values = {line.split(":")[0]: float(NUMBER.findall(line)[0]) for line in result.stdout.splitlines() if "%" in line}
    assert values["defended robust accuracy"] <= values["defended clean accuracy"]
    assert values["undefended robust accuracy"] < values["defended robust accuracy"]  # the purifier helps


def test_plain_python_example_runs_and_prints_what_the_page_shows():
    code, documented = python_examples()[1]
    for name in ("load_weights", "load_model", "DiffPure(", "majority_vote", "worst_of_n"):
        assert name in code
    assert "compose_config" not in code  # this one is the Hydra-free path
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_output_matches(result.stdout, documented)


@pytest.mark.slow  # three interpreters (~15 s of CPU); tests/test_doc_commands.py runs each line too
def test_bash_example_runs_verbatim_and_writes_what_it_says():
    (script,) = [body for lang, body in fenced_blocks() if lang == "bash"]
    lines = [line for line in script.splitlines() if line.strip()]
    assert all(line.startswith("python ") for line in lines)  # tests/test_doc_commands.py runs each alone
    for path in ("/tmp/advpure_digits", "/tmp/advpure_purified", "/tmp/advpure_digit0_tstar02.png"):
        shutil.rmtree(path, ignore_errors=True) if Path(path).is_dir() else Path(path).unlink(missing_ok=True)
    # `python` is this interpreter: its own folder first on PATH (a venv's bin/ holds `python`)
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "python").exists(), f"no `python` beside {sys.executable}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-e", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for index in range(4):
        source, target = Path(f"/tmp/advpure_digits/{index}.png"), Path(f"/tmp/advpure_purified/{index}.png")
        with Image.open(target) as image:
            assert (image.mode, image.size) == ("L", (8, 8))
            assert not np.array_equal(np.asarray(image), np.asarray(Image.open(source)))
    assert Path("/tmp/advpure_digit0_tstar02.png").is_file()
    documented = [body for lang, body in fenced_blocks() if lang == "text"][-1]
    for line in documented.strip().splitlines():
        if line != "...":
            assert line in result.stdout, line
    assert "t_star=0.2, n_steps=20" in result.stdout and "seed 1" in result.stdout


def test_every_cited_advpure_name_imports():
    names = sorted(set(re.findall(r"\badvpure(?:\.\w+)+", DOC.read_text())))
    assert len(names) >= 15
    for name in names:
        module_name, attributes = name, []
        while True:
            try:
                target = importlib.import_module(module_name)
                break
            except ModuleNotFoundError:
                module_name, _, attribute = module_name.rpartition(".")
                attributes.insert(0, attribute)
                assert module_name, f"{name} does not import"
        for attribute in attributes:
            target = getattr(target, attribute)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"_target_": "os.system"}, "names the network 'os.system'"),
        ({"_target_": "advpure.api.load_model"}, "not an advpure network class"),
        ({"_args_": ["echo hostile"]}, "with _args_"),
        ({"width": {"_target_": "os.system", "command": "echo hostile"}}, "with ._target_"),
        ({"width": [{"_target_": "os.getcwd"}]}, "with ._target_"),
        ({"width": "${oc.env:HOME}"}, "with ${...}"),
    ],
)
def test_load_model_builds_only_advpure_networks(change, needle, tmp_path):
    """A checkpoint's JSON names the class to build: only advpure's nn.Module classes, keyword
    arguments only, so a crafted JSON cannot call other code."""
    import json

    from advpure.api import load_model
    from advpure.errors import CheckpointError

    stem = tmp_path / "classifier"
    shutil.copyfile(ROOT / "checkpoints/digits/classifier.safetensors", f"{stem}.safetensors")
    config = json.loads((ROOT / "checkpoints/digits/classifier.json").read_text())
    assert type(load_model(ROOT / "checkpoints/digits/classifier")).__name__ == "DigitsCNN"
    config["net"].update(change)
    Path(f"{stem}.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="Fix: point at a checkpoint written by") as raised:
        load_model(stem)
    assert needle in str(raised.value) and str(stem) in str(raised.value)
