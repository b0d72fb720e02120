"""Start-up validation: turn a composed DictConfig into typed schema objects or fail clearly."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from advpure.config.schema import RootSchema
from advpure.errors import ConfigError

GROUPS = ("dataset", "classifier", "diffusion", "purifier", "attack", "hardware", "logger", "task")


def validate_config(cfg: DictConfig) -> RootSchema:
    """Run every schema's range checks and resolve every interpolation, before any work.

    Returns the typed config (dataclass instances, Enums). Raises ``ConfigError`` naming the
    dotted key (e.g. ``purifier.t_star``) and what is allowed.
    """
    for group in GROUPS:
        if group not in cfg:
            raise ConfigError(group, "is missing", f"select an option: {group}=<option>")
        _check_node(cfg[group], group)
    try:
        return OmegaConf.to_object(cfg)  # type: ignore[return-value]
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", "") or "<root>"
        raise ConfigError(key, str(error).splitlines()[0], "check the value's type and spelling") from None


def _check_node(node: DictConfig, key: str) -> None:
    """Run the range checks of ``node`` and of its nested schema nodes, innermost first."""
    for name in node:
        child = node._get_node(name)
        if isinstance(child, DictConfig) and OmegaConf.get_type(child) not in (dict, None):
            _check_node(child, f"{key}.{name}")
    try:
        OmegaConf.to_object(node)
    except ConfigError as error:
        raise error.with_prefix(key) from None
    except OmegaConfBaseException as error:
        full_key = getattr(error, "full_key", "") or key
        raise ConfigError(full_key, str(error).splitlines()[0], "check the value's type and spelling") from None
