"""Shared fixtures: composing the real conf/ tree, and the project root."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from advpure.config.registry import register_config

register_config()  # the schemas and resolvers, before any test composes conf/

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# Evaluation batch stores (paths.evaluations) of this test session, also for CLI subprocesses:
# tests never reuse batches from outside the session, nor leave any in outputs/.
os.environ["ADVPURE_EVALUATIONS"] = tempfile.mkdtemp(prefix="advpure-test-evaluations-")
atexit.register(shutil.rmtree, os.environ["ADVPURE_EVALUATIONS"], True)
# Likewise the resume state of training tasks (paths.training).
os.environ["ADVPURE_TRAINING"] = tempfile.mkdtemp(prefix="advpure-test-training-")
atexit.register(shutil.rmtree, os.environ["ADVPURE_TRAINING"], True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu``-marked tests are skipped, with the reason, where CUDA is absent (``make test-full`` on a CPU)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="gpu test: no CUDA device here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


class CreatesFileWhenUnpickled:
    """A hostile payload: unpickling it creates ``marker`` (what a malicious checkpoint could do
    instead). A loader that refuses pickles leaves ``marker`` absent."""

    def __init__(self, marker: Path) -> None:
        self.marker = Path(marker)

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module of tiny kernels: they gain nothing from two, and on a busy
    2-core machine OpenMP's waiting makes them many times slower. Restored after the module.
    Use with ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    """``compose_cfg(*overrides)`` -> the composed root config, as run.py would see it."""

    def _compose(*overrides: str) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=list(overrides))

    yield _compose
    GlobalHydra.instance().clear()


def group_options(group: str) -> list[str]:
    """Every option file of a config group."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(scope="session")
def digits_backbone() -> torch.nn.Module:
    """The shipped digits diffusion model (8x8, 0.65M parameters), frozen, in eval mode."""
    from advpure.tasks.components import build_backbone

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config")
    GlobalHydra.instance().clear()
    return build_backbone(cfg.diffusion, require_weights=True).eval().requires_grad_(False)
