"""Start-up checks across groups are the task schema's: ``check_combinations`` validates the config
into its typed schema and calls ``root.task.check(root)``, never branching on a task's name."""

from __future__ import annotations

import ast
from dataclasses import dataclass

import pytest

from advpure.config import validate
from advpure.config.enums import TaskName
from advpure.config.schema import SCHEMAS, RootSchema, TaskSchema
from advpure.config.validate import check_combinations, validate_config
from advpure.errors import ConfigError
from tests.conftest import ROOT


def test_check_combinations_runs_the_typed_task_schemas_check(compose_cfg, monkeypatch):
    seen: list[RootSchema] = []
    schema = SCHEMAS["task"]["train_classifier"]
    monkeypatch.setattr(schema, "check", lambda self, root: seen.append(root))
    check_combinations(compose_cfg("task=train_classifier"))
    assert len(seen) == 1 and isinstance(seen[0], RootSchema) and isinstance(seen[0].task, schema)


def test_check_combinations_takes_the_typed_config_too(compose_cfg):
    typed = validate_config(compose_cfg("dataset=digits", "classifier=wrn28_10"))
    with pytest.raises(ConfigError) as error:
        check_combinations(typed)
    assert error.value.key == "classifier.net"


def test_a_new_task_schema_brings_its_own_check(compose_cfg):
    @dataclass
    class Refusing(TaskSchema):
        def check(self, root) -> None:
            raise ConfigError("task", "refused", "nothing")

    typed = validate_config(compose_cfg())
    typed.task = Refusing(name=TaskName.evaluate)
    with pytest.raises(ConfigError, match="refused"):
        check_combinations(typed)


def test_validation_names_no_task():
    """No ``if``/``elif`` on task names in start-up validation: it dispatches on the schema."""
    tree = ast.parse((ROOT / "src" / "advpure" / "config" / "validate.py").read_text(encoding="utf-8"))
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
    assert "TaskName" not in names and not strings & {task.value for task in TaskName}, validate.__file__
