"""Networks against the dataset they will see: the channels and the square side a ``net`` node
(or the ``net`` an advpure checkpoint's JSON records) fixes, compared with the dataset's images.

Start-up validation runs these through each task schema's ``check`` (the task knows which networks
it builds); this module knows no schema: it takes the typed config duck-typed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from advpure.errors import ConfigError
from advpure.io import JsonFileError, read_json

# Config keys of a network that fix the images it takes: channels, and the square side. score_sde's
# NCSN++ names its image channels ``num_channels`` (elsewhere, e.g. guided-diffusion, a width).
CHANNEL_KEYS = {"ScoreSdeEpsilon": "num_channels"}
SIDE_KEYS = ("image_size", "sample_size")


class Network(NamedTuple):
    """A network a task builds: its config key, ``net`` node, advpure checkpoint (or ``None``) and
    the side it works at when not the data's (``None``: the data's)."""

    key: str
    net: Any
    checkpoint: str | None
    side: int | None = None


def check_networks(root: Any, networks: list[Network]) -> None:
    """Each network's ``net`` and checkpoint against ``root.dataset``'s images (nothing when their
    shape is unknown); ``ConfigError`` naming the key (and the checkpoint file) and the fix."""
    shape = root.dataset.image_shape()
    if shape is None:
        return
    name = str(root.dataset._target_).rsplit(".", 1)[-1].removesuffix("DataModule")
    for network in networks:
        expected = (shape[0], network.side or shape[1])
        _check_net(f"{network.key}.net", network.net, expected, name)
        if network.checkpoint is not None:
            _check_checkpoint_net(f"{network.key}.checkpoint", network.checkpoint, expected, name)


def net_images(net: dict[str, Any]) -> tuple[int | None, int | None]:
    """(channels, side) a ``net`` node (or a checkpoint's ``net`` dict) fixes; ``None`` where it does not."""
    target = str(net.get("_target_") or "").rsplit(".", 1)[-1]
    channels = net.get(CHANNEL_KEYS.get(target, "in_channels"))
    side = next((net.get(k) for k in SIDE_KEYS if net.get(k) is not None), None)
    return (int(channels) if isinstance(channels, int) else None, int(side) if isinstance(side, int) else None)


def _mismatch(channels: int | None, side: int | None, expected: tuple[int, int]) -> str | None:
    problems = []
    if channels is not None and channels != expected[0]:
        problems.append(f"{channels} channels (the data has {expected[0]})")
    if side is not None and side != expected[1]:
        problems.append(f"{side}x{side} images (the data is {expected[1]}x{expected[1]})")
    return " and ".join(problems) or None


def _check_net(key: str, net: Any, expected: tuple[int, int], dataset: str, recorded_in: Path | None = None) -> None:
    """``ConfigError`` on ``key`` when ``net`` (a ``net`` node, or the one a checkpoint's JSON
    ``recorded_in`` records) fixes other channels or another side than ``expected``."""
    problem = _mismatch(*net_images(net if isinstance(net, dict) else {}), expected)
    if problem is None:
        return
    images = f"{expected[0]}-channel {expected[1]}x{expected[1]} images"
    if recorded_in is None:
        raise ConfigError(
            key,
            f"builds a network for {problem}, but dataset {dataset} has {images}",
            f"select the {key.split('.')[0]} option made for this dataset (python run.py --help lists them), "
            "or another dataset",
        )
    raise ConfigError(
        key,
        f"{recorded_in} was trained for {problem}: it belongs to another dataset than {dataset} ({images})",
        f"point {key} at a checkpoint trained on this dataset (train one with a train_* task), or select its dataset",
    )


def _check_checkpoint_net(key: str, checkpoint: str, expected: tuple[int, int], dataset: str) -> None:
    """The architecture a checkpoint's JSON records, against the dataset (a missing or unreadable
    file is reported when it is loaded, with the same key)."""
    from advpure.checkpoints import checkpoint_paths

    config_path = checkpoint_paths(checkpoint)[1]
    try:
        recorded = read_json(config_path, dict).get("net")
    except JsonFileError:
        return
    _check_net(key, recorded, expected, dataset, recorded_in=config_path)
