"""One source per default.

- An option file ``conf/<group>/<option>.yaml`` states only what differs from its schema (plus
  interpolations): a literal value equal to the schema field's default is a restatement, and the
  test names the file and the key.
- A schema field that is also a constructor parameter of the schema's ``_target_`` class has the
  constructor's default (the schemas read it with :func:`constructor_default`), unless the schema
  lists the key, with its reason, in ``OWN_DEFAULTS``.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra.utils import get_class
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from advpure.config.schema import SCHEMAS
from advpure.config.schema.signature import constructor_default, constructor_parameter
from tests.conftest import CONF

# ----------------------------------------------------------------------------- option files


def option_files() -> list[tuple[str, Path]]:
    """(group, file) of every option of every group that has schemas."""
    return [(group, path) for group in SCHEMAS for path in sorted((CONF / group).glob("*.yaml"))]


def schema_node(group: str, path: Path) -> tuple[type, dict[str, Any], str]:
    """The schema ``path`` extends (its ``/schema/<group>/<name>@<package>`` defaults entry), the
    part of the file that lands on it, and that part's dotted prefix (for messages)."""
    body = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    entries = [e for e in body.get("defaults", []) if isinstance(e, str) and e.startswith(f"/schema/{group}/")]
    assert len(entries) == 1, f"{path}: extends no single schema of {group} (defaults: /schema/{group}/<name>@...)"
    name, _, package = entries[0].removeprefix(f"/schema/{group}/").partition("@")
    schema = SCHEMAS[group][name]
    if package in ("", "_here_"):
        return schema, {k: v for k, v in body.items() if k != "defaults"}, ""
    node: Any = body  # a _global_ file placing the schema at ``package``
    for part in package.split("."):
        node = node.get(part, {})
    return schema, node, package + "."


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, DictConfig | ListConfig) else value


def restatements(typed: DictConfig, raw: dict[str, Any], prefix: str = "") -> list[str]:
    """Keys of ``raw`` (literal YAML) whose value equals ``typed``'s (the schema's default)."""
    found = []
    for key, value in raw.items():
        if key not in typed:
            continue
        if isinstance(value, str) and "${" in value:
            continue  # an interpolation: the value has another source
        merged = OmegaConf.merge(typed, {key: value if not isinstance(value, dict) else {}})
        if isinstance(value, dict) and OmegaConf.get_type(merged, key) not in (dict, None):
            found += restatements(merged[key], value, f"{prefix}{key}.")  # a nested schema
            continue
        if OmegaConf.is_missing(typed, key):
            continue
        try:
            given = OmegaConf.merge(typed, {key: value})
        except Exception:  # a wrong value: the schema tests report it
            continue
        if _plain(given._get_node(key)._value()) == _plain(typed._get_node(key)._value()):
            found.append(f"{prefix}{key}: {value!r}")
    return found


@pytest.mark.parametrize(("group", "path"), option_files(), ids=lambda p: p.name if isinstance(p, Path) else p)
def test_an_option_states_only_what_differs_from_its_schema(group, path):
    schema, raw, prefix = schema_node(group, path)
    found = restatements(OmegaConf.structured(schema), raw, prefix)
    assert not found, (
        f"{path.relative_to(CONF.parent)} restates {schema.__name__}'s defaults: {found}; delete these lines "
        "(the schema holds the default; move a useful comment to the schema field)"
    )


def test_a_restatement_is_found():
    """The check itself: a literal equal to the default is found, a different one and an
    interpolation are not, nested schemas are walked."""
    schema = SCHEMAS["task"]["train_classifier"]
    raw = {"max_epochs": 30, "lr": 0.01, "export_to": "${paths.root}", "adversarial": {"steps": 10, "eps": 0.1}}
    assert restatements(OmegaConf.structured(schema), raw) == ["max_epochs: 30", "adversarial.steps: 10"]


# ----------------------------------------------------------------------- constructor defaults


def target_schemas() -> list[type]:
    """Every schema whose ``_target_`` names a class."""
    schemas = {schema for options in SCHEMAS.values() for schema in options.values()}
    return sorted(
        (s for s in schemas if isinstance(getattr(s, "_target_", None), str) and s._target_ != MISSING),
        key=lambda s: s.__name__,
    )


def _schema_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return inspect.Parameter.empty
    value = _plain(value)
    return inspect.Parameter.empty if value == MISSING else value


def _constructor_value(parameter: inspect.Parameter) -> Any:
    value = parameter.default
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("schema", target_schemas(), ids=lambda s: s.__name__)
def test_a_schema_default_is_its_constructors(schema):
    target = get_class(schema._target_)
    own = schema.OWN_DEFAULTS
    names = {f.name for f in dataclasses.fields(schema)}
    assert set(own) <= names, f"{schema.__name__}.OWN_DEFAULTS names keys it does not have: {set(own) - names}"
    for f in dataclasses.fields(schema):
        parameter = constructor_parameter(target, f.name)
        if f.name.startswith("_") or parameter is None:
            continue
        ours, theirs = _schema_default(f), _constructor_value(parameter)
        if f.name in own:
            assert ours != theirs, f"{schema.__name__}.{f.name}: listed in OWN_DEFAULTS but equals the constructor's"
        else:
            assert ours == theirs, (
                f"{schema.__name__}.{f.name} defaults to {ours!r}, {schema._target_}() to {theirs!r}: take it with "
                f"constructor_default({target.__name__}, {f.name!r}), or list it in OWN_DEFAULTS with the reason"
            )


def test_constructor_default_follows_kwargs_up_the_mro():
    class Base:
        def __init__(self, *, depth: int = 3, width: int = 8) -> None:
            self.depth, self.width = depth, width

    class Middle(Base):
        def __init__(self, *, width: int = 16, **options: Any) -> None:
            super().__init__(width=width, **options)

    class Closed(Base):
        def __init__(self, scale: float = 1.0) -> None:
            super().__init__()

    assert constructor_default(Middle, "width") == 16  # the nearest declaration wins
    assert constructor_default(Middle, "depth") == 3  # forwarded through **options to Base
    assert constructor_parameter(Closed, "depth") is None  # Closed does not forward it
    with pytest.raises(TypeError, match="depth"):
        constructor_default(Closed, "depth")
