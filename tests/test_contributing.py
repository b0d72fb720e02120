"""CONTRIBUTING.md's "Add a purifier" checklist, walked with the page's own example files.

The fenced blocks after ``<!-- contributing-example: ... -->`` markers are written into a
temporary overlay, never into the repository: the purifier module and its schema as a package on
``sys.path`` (their ``_target_`` retargeted from ``advpure.purifiers.ddim`` to it), the option and
its CPU budget in a conf folder on Hydra's search path (``hydra.searchpath``), the schema stored
as ``schema/purifier/ddim`` as listing it in ``SCHEMAS`` would. The new option then composes as
run.py composes it, passes start-up validation, builds, and meets the purifier contract
(tests/test_purifier_contract.py's checks); a bad value and an undeclared class are refused at
start-up naming the key.
"""

from __future__ import annotations

import copy
import importlib
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class

from advpure.api import threat_eps
from advpure.config.enums import GradMode
from advpure.config.validate import check_combinations, validate_config
from advpure.data.digits import DigitsDataModule
from advpure.errors import ConfigError
from advpure.tasks.components import build_purifier
from tests.conftest import CONF, ROOT
from tests.test_purifier_contract import (
    check_declarations,
    check_full_gradient,
    check_seeded_replay,
    check_settings,
    check_shape_and_range,
)

pytestmark = pytest.mark.usefixtures("single_thread")
PACKAGE = "contributing_example"
MARKER = re.compile(r"<!-- contributing-example: (\w+) -->\n\s*```\w+\n(.*?)\n\s*```", re.DOTALL)


def contributing_examples() -> dict[str, str]:
    """``{name: code}`` of every marked example block of CONTRIBUTING.md (dedented)."""
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    return {name: textwrap.dedent(code) + "\n" for name, code in MARKER.findall(text)}


@pytest.fixture
def overlay(tmp_path, monkeypatch):
    """The example written into ``tmp_path``; yields the conf folder to add to Hydra's search path."""
    examples = contributing_examples()
    assert set(examples) == {"purifier", "schema", "option", "budget"}
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "ddim.py").write_text(examples["purifier"])
    (package / "schema.py").write_text(examples["schema"].replace("advpure.purifiers.ddim", f"{PACKAGE}.ddim"))
    conf = tmp_path / "conf"
    (conf / "purifier").mkdir(parents=True)
    (conf / "purifier" / "ddim.yaml").write_text(examples["option"])
    (conf / "budget" / "purifier").mkdir(parents=True)
    (conf / "budget" / "purifier" / "cpu_quick_ddim.yaml").write_text(examples["budget"])
    monkeypatch.syspath_prepend(str(tmp_path))
    schema = importlib.import_module(f"{PACKAGE}.schema").DDIMSchema
    store = ConfigStore.instance()
    store.store(group="schema/purifier", name="ddim", node=schema)
    yield conf
    store.repo["schema"]["purifier"].pop("ddim.yaml", None)
    for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
        del sys.modules[name]


def compose_with(conf: Path, *overrides: str):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=[*overrides, f"hydra.searchpath=[file://{conf}]"])
    finally:
        GlobalHydra.instance().clear()


def test_the_example_purifier_composes_validates_builds_and_meets_the_contract(overlay):
    cfg = compose_with(overlay, "purifier=ddim")
    validate_config(cfg)
    check_combinations(cfg)
    assert cfg.purifier._target_ == f"{PACKAGE}.ddim.DDIMPurifier"
    assert (cfg.purifier.t_star, cfg.purifier.steps, cfg.purifier.checkpoint_steps) == (0.1, 2, False)  # cpu_quick
    purifier = build_purifier(cfg.purifier, cfg.diffusion, threat_eps(cfg)).eval()
    datamodule = DigitsDataModule()
    datamodule.setup()
    x = torch.stack([datamodule.test_set[i][0] for i in range(3)])
    check_declarations(purifier, get_class(cfg.purifier._target_), GradMode.full)
    check_shape_and_range(purifier, x)
    check_seeded_replay(purifier, x)
    settings = check_settings(purifier)
    assert (settings["name"], settings["n_steps"], settings["start_step"]) == ("ddim", 2, 100)
    grad = check_full_gradient(copy.deepcopy(purifier).double(), x.double().clamp(0.05, 0.95))
    assert grad.abs().sum() > 0
    published = compose_with(overlay, "purifier=ddim", "budget=published")
    assert published.purifier.steps == 10 and published.purifier.t_star == 0.1  # the constructor's defaults
    option = yaml.safe_load(contributing_examples()["option"])
    assert set(option) == {"defaults"}, "the example option restates what its schema holds"


def test_a_bad_value_and_an_undeclared_class_stop_at_start_up(overlay):
    with pytest.raises(ConfigError) as error:
        validate_config(compose_with(overlay, "purifier=ddim", "purifier.steps=0"))
    assert error.value.key == "purifier.steps"

    module = importlib.import_module(f"{PACKAGE}.ddim")

    class Nameless(module.ReversePurifier):  # the checklist's first step skipped: no ``name``
        pass

    module.Nameless = Nameless
    cfg = compose_with(overlay, "purifier=ddim", f"purifier._target_={PACKAGE}.ddim.Nameless")
    with pytest.raises(ConfigError, match=r"\['name'\]") as error:
        check_combinations(cfg)
    assert error.value.key == "purifier._target_"
