"""Start-up validation: turn a composed DictConfig into typed schema objects or fail clearly."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from advpure.config.enums import GradMode, Norm, TaskName
from advpure.config.schema import RootSchema
from advpure.errors import ConfigError
from advpure.io import JsonFileError, read_json
from advpure.purifiers.protocol import Capabilities, capabilities

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


# ------------------------------------------------------------------ checks across groups

# Config keys of a network that fix the images it takes: channels, and the square side. score_sde's
# NCSN++ names its image channels ``num_channels`` (elsewhere, e.g. guided-diffusion, a width).
CHANNEL_KEYS = {"ScoreSdeEpsilon": "num_channels"}
SIDE_KEYS = ("image_size", "sample_size")


def check_combinations(cfg: DictConfig) -> None:
    """Checks across config groups, for the task ``cfg`` selects (after :func:`validate_config`,
    before any model is built): the attack budget against the data range, networks and the
    checkpoints they load against the dataset's images, and options that exclude each other.

    Raises ``ConfigError`` naming the key (and the checkpoint file, for a checkpoint) and the fix.
    """
    check_schedule(cfg)
    shape = dataset_shape(cfg.dataset)
    task = TaskName(cfg.task.name)
    nodes: list[tuple[str, DictConfig, int | None]] = []
    if task == TaskName.evaluate:
        _check_attack(cfg, shape)
        _check_purifier(cfg)
        nodes.append(("classifier", cfg.classifier, None))
        if _uses_backbone(cfg.purifier) and cfg.diffusion.get("pretrained") is None:
            nodes.append(("diffusion", cfg.diffusion, cfg.diffusion.get("image_size")))
        if cfg.purifier.get("auxiliary") is not None:
            nodes.append(("purifier.auxiliary", cfg.purifier.auxiliary, None))
    elif task == TaskName.train_classifier:
        nodes.append(("classifier", cfg.classifier, None))
    elif task == TaskName.train_diffusion and cfg.diffusion.get("pretrained") is None:
        nodes.append(("diffusion", cfg.diffusion, cfg.diffusion.get("image_size")))
    elif task == TaskName.train_agdm_aux:
        nodes.append(("task", cfg.task, None))
    if shape is None:
        return
    for key, node, side in nodes:
        expected = (shape[0], side or shape[1])
        _check_net(f"{key}.net", node.net, expected, cfg)
        checkpoint = node.get("checkpoint")
        if checkpoint is not None:
            _check_checkpoint_net(f"{key}.checkpoint", checkpoint, expected, cfg)


def check_schedule(cfg: DictConfig) -> None:
    """The noise schedule has one source, ``diffusion.schedule`` (what the model was trained with):
    a purifier whose betas were set apart from it, or a diffusion checkpoint that records another
    schedule, is a ConfigError naming both and the fix."""
    schedule = cfg.diffusion.get("schedule")
    if schedule is None:
        return
    start, end, steps = float(schedule.beta_start), float(schedule.beta_end), int(schedule.num_timesteps)
    implied = {"beta_start": start, "beta_end": end, "num_timesteps": steps, "beta_min": start * steps}
    implied["beta_max"] = end * steps
    purifier = cfg.get("purifier")
    if purifier is not None and _uses_backbone(purifier):
        for key, value in implied.items():
            given = purifier.get(key)
            if given is not None and not math.isclose(float(given), value, rel_tol=1e-6):
                raise ConfigError(
                    f"purifier.{key}",
                    f"is {given}, but the diffusion model's schedule (diffusion.schedule: beta_start={start}, "
                    f"beta_end={end}, num_timesteps={steps}) gives {value:g}",
                    f"leave purifier.{key} out (it follows diffusion.schedule), or set diffusion.schedule.* to the "
                    "schedule the model was trained with",
                )
    checkpoint = cfg.diffusion.get("checkpoint")
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


def dataset_shape(node: DictConfig) -> tuple[int, int, int] | None:
    """(C, H, W) of the dataset's images, from its DataModule class (or its ``crop`` /
    ``image_size`` keys, for datasets resized on load); ``None`` when unknown."""
    from hydra.utils import get_class

    try:
        shape = getattr(get_class(node._target_), "image_shape", None)
    except Exception:  # an unknown target fails at build, naming the key
        return None
    for key in ("crop", "image_size"):
        if node.get(key) is not None:
            channels = shape[0] if isinstance(shape, tuple) else 3
            return (channels, int(node[key]), int(node[key]))
    if isinstance(shape, tuple) and len(shape) == 3:
        return tuple(int(s) for s in shape)  # type: ignore[return-value]
    return None


def _check_attack(cfg: DictConfig, shape: tuple[int, int, int] | None) -> None:
    attack = cfg.attack
    norm = Norm(attack.norm)
    if attack.get("eps") is not None and shape is not None and norm == Norm.L2:
        largest = math.sqrt(shape[0] * shape[1] * shape[2])
        if float(attack.eps) > largest:
            raise ConfigError(
                "attack.eps",
                f"L2 budget {attack.eps} exceeds the data range: two {shape[0]}x{shape[1]}x{shape[2]} images in "
                f"[0, 1] are at most sqrt({shape[0] * shape[1] * shape[2]}) = {largest:.4g} apart",
                f"set attack.eps <= {largest:.4g} (the dataset's standard L2 budget: attack.eps=null)",
            )
    if str(attack.get("_target_", "")).endswith("TorchAttacksRunner"):
        from advpure.attacks.torchattacks_runner import check_norm

        check_norm(str(attack.name), norm)


def _purifier_capabilities(node: DictConfig) -> Capabilities | None:
    """What the purifier class ``node`` names declares (:mod:`advpure.purifiers.protocol`); None
    when the class cannot be imported (building it then fails, naming the key)."""
    from hydra.utils import get_class

    try:
        purifier_class = get_class(node._target_)
    except Exception:  # an unknown target fails at build, naming the key
        return None
    return capabilities(purifier_class)


def _uses_backbone(node: DictConfig) -> bool:
    declared = _purifier_capabilities(node)
    return declared is None or declared.uses_backbone


def _check_purifier(cfg: DictConfig) -> None:
    declared = _purifier_capabilities(cfg.purifier)
    if declared is None:
        return
    grad_mode = GradMode(cfg.purifier.grad_mode)
    if grad_mode == GradMode.adjoint and not declared.supports_adjoint:
        raise ConfigError(
            "purifier.grad_mode",
            f"'adjoint' is torchsde's stochastic adjoint of the continuous VP-SDE; purifier {declared.name!r} is not "
            "one (a discrete or guided sampler has no adjoint)",
            "use purifier=diffpure for the adjoint, or purifier.grad_mode=full for exact gradients",
        )
    if grad_mode == GradMode.guidance_blind and not declared.supports_guidance:
        raise ConfigError(
            "purifier.grad_mode",
            f"'guidance_blind' treats a guidance gradient as constant; purifier {declared.name!r} has no guidance",
            "use it with purifier=gdmp, mimicdiffusion or agdm, or set purifier.grad_mode=full",
        )


def _net_images(net: Any) -> tuple[int | None, int | None]:
    """(channels, side) a ``net`` node (or a checkpoint's ``net`` dict) fixes; ``None`` where it does not."""
    get = net.get if hasattr(net, "get") else (lambda _key, _default=None: None)
    target = str(get("_target_") or "").rsplit(".", 1)[-1]
    channels = get(CHANNEL_KEYS.get(target, "in_channels"))
    side = next((get(k) for k in SIDE_KEYS if get(k) is not None), None)
    return (int(channels) if isinstance(channels, int) else None, int(side) if isinstance(side, int) else None)


def _dataset_name(cfg: DictConfig) -> str:
    target = str(cfg.dataset.get("_target_", "dataset"))
    return target.rsplit(".", 1)[-1].removesuffix("DataModule")


def _mismatch(channels: int | None, side: int | None, expected: tuple[int, int]) -> str | None:
    problems = []
    if channels is not None and channels != expected[0]:
        problems.append(f"{channels} channels (the data has {expected[0]})")
    if side is not None and side != expected[1]:
        problems.append(f"{side}x{side} images (the data is {expected[1]}x{expected[1]})")
    return " and ".join(problems) or None


def _check_net(key: str, net: Any, expected: tuple[int, int], cfg: DictConfig) -> None:
    problem = _mismatch(*_net_images(net), expected)
    if problem:
        raise ConfigError(
            key,
            f"builds a network for {problem}, but dataset {_dataset_name(cfg)} has {expected[0]}-channel "
            f"{expected[1]}x{expected[1]} images",
            f"select the {key.split('.')[0]} option made for this dataset (python run.py --help lists them), "
            "or another dataset",
        )


def _check_checkpoint_net(key: str, checkpoint: str, expected: tuple[int, int], cfg: DictConfig) -> None:
    """The architecture a checkpoint's JSON records, against the dataset (a missing or unreadable
    file is reported when it is loaded, with the same key)."""
    from advpure.checkpoints import checkpoint_paths

    config_path = checkpoint_paths(checkpoint)[1]
    try:
        recorded = read_json(config_path, dict).get("net")
    except JsonFileError:
        return
    problem = _mismatch(*_net_images(recorded if isinstance(recorded, dict) else {}), expected)
    if problem:
        raise ConfigError(
            key,
            f"{config_path} was trained for {problem}: it belongs to another dataset than "
            f"{_dataset_name(cfg)} ({expected[0]}-channel {expected[1]}x{expected[1]} images)",
            f"point {key} at a checkpoint trained on this dataset (train one with a train_* task), "
            "or select its dataset",
        )
