"""The one place advpure turns a config node into an object."""

from __future__ import annotations

import dataclasses
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from advpure.errors import AdvpureError, ConfigError


def build(node: Any, /, *, key: str, **kwargs: Any) -> Any:
    """Instantiate ``node`` (a DictConfig, dict or schema dataclass with ``_target_``).

    Args:
        node: the config; ``None`` or ``_target_: null`` gives ``None``.
        key: the node's dotted config key, named in errors (e.g. ``"purifier"``).
        **kwargs: run-time arguments the config cannot hold (a backbone, a resolved eps, a
            network built from a sub-node); each replaces the node's key of the same name.

    Raises:
        ConfigError: naming ``key`` when the target cannot be imported or called with the
            given arguments (an unexpected or missing keyword, a wrong type).
    """
    if node is None:
        return None
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        node = OmegaConf.structured(node)
    if isinstance(node, dict):
        node = OmegaConf.create(node)
    if not isinstance(node, DictConfig) or node.get("_target_") is None:
        return None
    if any(name in node for name in kwargs):
        # A run-time argument replaces its config node (a purifier's ``surrogate``, AGDM's
        # ``auxiliary``): drop the node first, since Hydra would merge an object into a typed node.
        plain = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
        node = OmegaConf.create({name: value for name, value in plain.items() if name not in kwargs})
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as error:
        cause = error.__cause__ or error
        if isinstance(cause, AdvpureError):
            raise cause from None
        raise ConfigError(
            key,
            f"cannot build {node.get('_target_')!r}: {cause}",
            "check the option's keys against its schema (python run.py --cfg job shows the config)",
        ) from None
