"""The published-model commands end to end on stand-in files (experiments/published_standins.py):
ImageNet (ResNet-50 + guided-diffusion 256x256, 224 <-> 256) and CIFAR-10 (WRN-28-10 + DDPM)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import published_standins
    finally:
        sys.path.pop(0)
    folder = tmp_path_factory.mktemp("standins")
    return published_standins, {
        "imagenet": published_standins.write_imagenet(folder),
        "cifar10": published_standins.write_cifar10(folder),
    }


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["imagenet", "cifar10"])
def test_published_command_runs_end_to_end_on_standins(standins, dataset, tmp_path):
    module, overrides = standins
    command = [sys.executable, "run.py", *overrides[dataset], *module.QUICK, f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    metrics = results["metrics"]
    assert metrics["undefended_clean"]["n"] == 2
    # the stand-in images carry the stand-in classifier's own predictions as labels
    assert metrics["undefended_clean"]["value"] == 1.0
    assert results["attack"]["name"] == "autoattack" and results["grad_mode"] == "full"
    purifier = results["purifier"]
    if dataset == "imagenet":
        assert results["dataset"] == "imagenet" and purifier["t_star"] == 0.15
        assert purifier["image_size"] == 256  # 224 -> 256 -> 224 around the purifier
        assert [r["label"] for r in results["records"]] == sorted(r["label"] for r in results["records"])
    else:
        assert results["dataset"] == "cifar10" and purifier["t_star"] == 0.1
