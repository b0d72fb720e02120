"""Defaults read from the constructor a schema configures, so that a default has one source.

A schema field that is also a constructor parameter of its ``_target_`` class takes its default
from that constructor (:func:`constructor_default`); a schema whose default differs on purpose
names the field and why in its ``OWN_DEFAULTS`` (tests/test_one_source.py holds every schema to
this). A parameter a constructor does not declare but forwards through ``**kwargs`` is looked up
in the next constructor along the class's MRO that declares it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar


def target_of(cls: type) -> str:
    """The dotted path Hydra's ``_target_`` names ``cls`` by (``advpure.purifiers.gdmp.GDMP``)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def constructor_parameter(cls: type, name: str) -> inspect.Parameter | None:
    """The parameter ``name`` of ``cls``'s constructor: declared by ``cls.__init__``, or, when that
    constructor forwards ``**kwargs``, by the first constructor along the MRO that declares it;
    ``None`` when no constructor the call reaches declares it."""
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters
        if name in parameters:
            return parameters[name]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return None
    return None


def constructor_default(cls: type, name: str) -> Any:
    """The default of ``cls``'s constructor parameter ``name`` (see :func:`constructor_parameter`);
    ``TypeError`` at import when the constructor has no such parameter or no default for it."""
    parameter = constructor_parameter(cls, name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise TypeError(f"{target_of(cls)}() has no parameter {name!r} with a default")
    return parameter.default


def defaults_from(constructor_class: type) -> Callable[[type], type]:
    """Class decorator, placed under ``@dataclass``: every field the schema annotates without a
    value takes the default of ``constructor_class``'s constructor parameter of the same name
    (:func:`constructor_default`), so a schema lists its keys and types once and writes no default
    again. A list or tuple default becomes a fresh list per instance (OmegaConf's list type), a dict
    a fresh dict.

    ``@dataclass`` / ``@defaults_from(DigitsDataModule)`` / ``class DigitsSchema(...): split_seed: int``.
    """

    def apply(schema: type) -> type:
        for name in inspect.get_annotations(schema):
            if name in schema.__dict__:
                continue
            default = constructor_default(constructor_class, name)
            if isinstance(default, list | tuple | dict):
                factory = (lambda d=default: dict(d)) if isinstance(default, dict) else (lambda d=default: list(d))
                setattr(schema, name, field(default_factory=factory))
            else:
                setattr(schema, name, default)
        return schema

    return apply


@dataclass
class ConstructedSchema:
    """A config node built as ``_target_(**keys)``: its keys take their defaults from that class's
    constructor (:func:`defaults_from`), except those it lists in ``OWN_DEFAULTS`` with the reason
    its default differs (tests/test_one_source.py holds every schema to this)."""

    OWN_DEFAULTS: ClassVar[dict[str, str]] = {}
