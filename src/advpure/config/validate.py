"""Start-up validation: turn a composed DictConfig into typed schema objects or fail clearly."""

from __future__ import annotations

import math
from dataclasses import fields

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from advpure.config.networks import CHANNEL_KEYS, SIDE_KEYS
from advpure.config.schema import RootSchema
from advpure.errors import ConfigError
from advpure.io import JsonFileError, read_json

__all__ = ["CHANNEL_KEYS", "GROUPS", "SIDE_KEYS", "check_combinations", "check_schedule", "validate_config"]

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
        key = error.full_key or "<root>"
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
        full_key = error.full_key or key
        raise ConfigError(full_key, str(error).splitlines()[0], "check the value's type and spelling") from None


# ------------------------------------------------------------------ checks across groups


def check_combinations(cfg: DictConfig | RootSchema) -> None:
    """Checks across config groups, for the task ``cfg`` selects (after :func:`validate_config`,
    before any model is built): the noise schedule's one source, then the task schema's own
    :meth:`~advpure.config.schema.task.TaskSchema.check` (the attack budget against the data
    range, networks and the checkpoints they load against the dataset's images, and options that
    exclude each other). ``cfg``: the composed config, or the typed one :func:`validate_config`
    returned.

    Raises ``ConfigError`` naming the key (and the checkpoint file, for a checkpoint) and the fix.
    """
    root = cfg if isinstance(cfg, RootSchema) else validate_config(cfg)
    check_schedule(root)
    root.task.check(root)


def check_schedule(root: RootSchema) -> None:
    """The noise schedule has one source, ``diffusion.schedule`` (what the model was trained with):
    a purifier whose betas were set apart from it, or a diffusion checkpoint that records another
    schedule, is a ConfigError naming both and the fix."""
    schedule = root.diffusion.schedule
    start, end, steps = float(schedule.beta_start), float(schedule.beta_end), int(schedule.num_timesteps)
    implied = {"beta_start": start, "beta_end": end, "num_timesteps": steps, "beta_min": start * steps}
    implied["beta_max"] = end * steps
    purifier = root.purifier
    if purifier.uses_backbone():
        given = {f.name: getattr(purifier, f.name) for f in fields(purifier)}
        for key, value in implied.items():
            if given.get(key) is not None and not math.isclose(float(given[key]), value, rel_tol=1e-6):
                raise ConfigError(
                    f"purifier.{key}",
                    f"is {given[key]}, but the diffusion model's schedule (diffusion.schedule: beta_start={start}, "
                    f"beta_end={end}, num_timesteps={steps}) gives {value:g}",
                    f"leave purifier.{key} out (it follows diffusion.schedule), or set diffusion.schedule.* to the "
                    "schedule the model was trained with",
                )
    checkpoint = root.diffusion.checkpoint
    if checkpoint is None:
        return
    from advpure.checkpoints import checkpoint_paths

    config_path = checkpoint_paths(checkpoint)[1]
    try:
        recorded = (read_json(config_path, dict).get("metadata") or {}).get("schedule")
    except JsonFileError:
        return  # reported when the checkpoint is loaded, naming diffusion.checkpoint
    if not isinstance(recorded, dict):
        return  # a checkpoint that records no schedule (a published model's conversion)
    trained = (
        float(recorded.get("beta_start", start)),
        float(recorded.get("beta_end", end)),
        int(recorded.get("T", steps)),
    )
    if not all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(trained, (start, end, steps), strict=True)):
        raise ConfigError(
            "diffusion.schedule",
            f"is beta_start={start}, beta_end={end}, num_timesteps={steps}, but {config_path} was trained with "
            f"beta_start={trained[0]}, beta_end={trained[1]}, num_timesteps={trained[2]}",
            f"set diffusion.schedule.beta_start={trained[0]} diffusion.schedule.beta_end={trained[1]} "
            f"diffusion.schedule.num_timesteps={trained[2]}, or point diffusion.checkpoint at a model trained on "
            "this schedule",
        )
