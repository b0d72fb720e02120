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
        **kwargs: run-time arguments the config cannot hold (a backbone, a resolved eps).

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
