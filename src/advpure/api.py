"""advpure from plain Python: the models ``run.py`` builds, in a few calls (docs/api.md shows them).

Two ways in:

- From the config (the same objects, defaults and budget as ``python run.py``):
  :func:`compose_config` composes ``conf/`` with Hydra's compose API and the given overrides, then
  :func:`load_classifier` and :func:`load_purifier` build the selected classifier and purifier
  exactly as the evaluation task does (weights loaded, eval mode, parameters frozen).
- Without Hydra: :func:`load_model` builds the network an advpure checkpoint records
  (``<stem>.safetensors`` + ``<stem>.json``) and loads its weights; hand it to the purifier and
  attack classes directly (``advpure.purifiers.diffpure.DiffPure(backbone, t_star=0.1)``).

Every image tensor is NCHW float in [0, 1]: a purifier maps x (B, C, H, W) in [0, 1] to the same
shape and range, a classifier maps it to logits (B, K).
"""

from __future__ import annotations

import json
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.initialize import get_gh_backup, restore_gh_from_backup
from hydra.utils import get_class
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from advpure.checkpoints import checkpoint_paths, load_weights, read_checkpoint
from advpure.config.catalog import project_root
from advpure.config.enums import Norm
from advpure.config.registry import register_config
from advpure.config.validate import CHANNEL_KEYS, SIDE_KEYS, validate_config
from advpure.errors import CheckpointError, ConfigError
from advpure.instantiate import build

__all__ = [
    "compose_config",
    "config_options",
    "load_classifier",
    "load_model",
    "load_purifier",
    "purifier_input",
    "threat_eps",
]

# Channels of a backbone whose config fixes none (guided-diffusion's ImageNet model: RGB).
DEFAULT_CHANNELS = 3


def config_dir() -> Path:
    """The ``conf/`` folder ``run.py`` composes (``$ADVPURE_ROOT/conf``, else the source checkout's)."""
    return project_root() / "conf"


def config_options(group: str) -> list[str]:
    """The options of a config group, e.g. ``config_options("purifier")`` -> ``["agdm", ..., "none"]``."""
    return sorted(path.stem for path in (config_dir() / group).glob("*.yaml"))


def compose_config(*overrides: str) -> DictConfig:
    """The root config as ``python run.py <overrides>`` composes it: ``conf/config.yaml``, its
    defaults (``budget=cpu_quick`` included) and the overrides (``"purifier=gdmp"``,
    ``"purifier.t_star=0.05"``, ``"budget=published"``), range-checked like a run's.

    Raises:
        ConfigError: naming the override or key, for an unknown option or key, a wrong type or an
            out-of-range value.
    """
    folder = config_dir()
    if not (folder / "config.yaml").is_file():
        raise ConfigError(
            "conf",
            f"no config.yaml in {folder}",
            "run from the advpure checkout, or set ADVPURE_ROOT to the folder holding conf/",
        )
    register_config()  # the schemas and resolvers conf/ needs
    backup = get_gh_backup()  # an application already inside Hydra keeps its own state
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as error:
        raise _composition_error(list(overrides), error) from None
    finally:
        restore_gh_from_backup(backup)
    validate_config(cfg)
    return cfg


def _composition_error(overrides: list[str], error: Exception) -> ConfigError:
    """One-line :class:`ConfigError` for a config Hydra could not compose, naming the override at
    fault (all of them when Hydra's message names none) and the fix."""
    from advpure.cli import override_hints

    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    problem = lines[0].rstrip(".") if lines else type(error).__name__
    at_fault = [o for o in overrides if _names(problem, o)][:1] or overrides
    if len(lines) > 2 and lines[1].startswith("Available options"):  # an unknown option: list the known ones
        fix = f"choose one of: {', '.join(_option_lines(lines[2:]))}"
    else:
        # Hydra's second line suggests appending a key (+key=value): never the fix for a typo.
        hints = [hint.removeprefix("fix: ") for hint in override_hints(at_fault)]
        fix = " ".join(hints) or "check the override's group, option and key (python run.py --cfg job shows them)"
    return ConfigError(" ".join(at_fault) or "config", problem, fix)


def _names(problem: str, override: str) -> bool:
    """Whether Hydra's message names ``override``: its key (``'purifier.tstar'``), its group and
    option (``'purifier/foo'``) or the whole override (``override purifier.t_star=abc``)."""
    plain = override.lstrip("+~")
    key = plain.split("=", 1)[0]
    return f"'{key}'" in problem or f"'{plain.replace('=', '/', 1)}'" in problem or f"override {override}" in problem


def _option_lines(lines: list[str]) -> list[str]:
    """The option names of Hydra's "Available options" list (it ends where the search path starts)."""
    names = []
    for line in lines:
        if line.startswith("Config search path"):
            break
        names.append(line)
    return names


def threat_eps(cfg: DictConfig) -> float:
    """The attack budget the evaluation uses: ``attack.eps``, or the dataset's standard budget for
    ``attack.norm`` (digits: Linf 0.15, L2 1.0)."""
    if cfg.attack.get("eps") is not None:
        return float(cfg.attack.eps)
    norm = Norm(cfg.attack.norm)
    return float(get_class(cfg.dataset._target_).standard_eps[norm])


def load_classifier(cfg: DictConfig) -> nn.Module:
    """The ``classifier`` group's network with its weights (``classifier.checkpoint`` or
    ``classifier.weights``), in eval mode with frozen parameters: x (B, C, H, W) in [0, 1] ->
    logits (B, K)."""
    from advpure.tasks.components import build_classifier  # imports Lightning: only when a model is built

    return build_classifier(cfg.classifier, require_weights=True).eval().requires_grad_(False)


def load_purifier(cfg: DictConfig) -> nn.Module:
    """The ``purifier`` group's purifier on the ``diffusion`` group's backbone, built as the
    evaluation builds it (a null ``guide_eps`` takes :func:`threat_eps`), in eval mode with frozen
    parameters. x (B, C, H, W) in [0, 1] -> purified (B, C, H, W) in [0, 1], one random draw per
    call (torch's global generator unless ``purifier.seed`` is set); gradients with respect to x
    follow ``purifier.grad_mode``. The shape it takes: :func:`purifier_input`."""
    from advpure.tasks.components import build_purifier  # imports Lightning: only when a model is built

    purifier = build_purifier(cfg.purifier, cfg.diffusion, threat_eps=threat_eps(cfg))
    return purifier.eval().requires_grad_(False)


def purifier_input(cfg: DictConfig) -> tuple[int, int]:
    """``(channels, side)`` of the images the selected purifier works on: the diffusion backbone's
    channels and its side (``diffusion.image_size`` if set, else the network's own size), e.g.
    ``(1, 8)`` for ``diffusion=digits_unet``. A purifier that uses no backbone
    (``purifier=none``) takes any image; its answer is still the backbone's."""
    diffusion = cfg.diffusion
    net = diffusion.net
    target = str(net.get("_target_") or "").rsplit(".", 1)[-1]
    channels = net.get(CHANNEL_KEYS.get(target, "in_channels"))
    side = next((net.get(key) for key in SIDE_KEYS if net.get(key) is not None), None)
    if diffusion.get("pretrained") is not None:
        pretrained = _pretrained_config(Path(str(diffusion.pretrained)).expanduser())
        channels = pretrained.get("in_channels", channels)
        side = pretrained.get("sample_size", side)
    if diffusion.get("image_size") is not None:
        side = diffusion.image_size
    if side is None:
        raise ConfigError(
            "diffusion.net",
            f"{target or 'the network'} names no image size ({' or '.join(SIDE_KEYS)})",
            "set diffusion.image_size=<side the backbone works at>",
        )
    return int(channels if channels is not None else DEFAULT_CHANNELS), int(side)


def _pretrained_config(folder: Path) -> dict:
    """A diffusers folder's ``config.json`` (empty if absent: loading the folder reports that)."""
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def load_model(path: str | Path) -> nn.Module:
    """The network an advpure checkpoint records, with its weights: ``path`` is the checkpoint's
    stem or either file (``checkpoints/digits/diffusion`` -> a ``UNetEpsilon`` noise predictor
    ``(x in [-1, 1], t in [0, 1]) -> eps``; ``checkpoints/digits/classifier`` -> a ``DigitsCNN``,
    x (B, 1, 8, 8) in [0, 1] -> logits (B, 10)). Returned in eval mode with frozen parameters.

    Only advpure's own network classes are built (the JSON's ``_target_`` must be an
    ``advpure.`` ``nn.Module`` class, called with plain keyword arguments: no other Hydra key at
    any depth), so a checkpoint file cannot run other code.

    Raises:
        CheckpointError: naming the file, if it is missing, damaged, names another kind of
            target, or its weights do not fit the network.
    """
    config_path = checkpoint_paths(path)[1]
    _, config = read_checkpoint(path)
    net = config["net"]
    target = str(net.get("_target_", "")) if isinstance(net, dict) else ""
    special = sorted(key for key in _special_keys(net) if key != "_target_")
    network_class = _advpure_module_class(target)
    if network_class is None or special:
        raise CheckpointError(
            f"{config_path} names the network {target or net!r}"
            + (f" with {', '.join(special)}" if special else "")
            + ", which is not an advpure network class called with keyword arguments. "
            "Fix: point at a checkpoint written by one of advpure's train_* tasks"
        )
    model = build(net, key=f"net of {config_path}")
    load_weights(model, path, net=net)
    return model.eval().requires_grad_(False)


def _special_keys(node: object, top: bool = True) -> list[str]:
    """Hydra's special keys (``_target_``, ``_args_``, ...) in ``node``: its own (``top``) and any
    of a nested value, which Hydra would instantiate too (shown with a leading ``.``); and
    ``${...}`` for a string OmegaConf would resolve (a resolver may read or create files)."""
    found: list[str] = []
    if isinstance(node, str) and "${" in node:
        found.append("${...}")
    elif isinstance(node, dict):
        for key, value in node.items():
            if str(key).startswith("_"):
                found.append(str(key) if top else f".{key}")
            found += _special_keys(value, top=False)
    elif isinstance(node, list):
        for value in node:
            found += _special_keys(value, top=False)
    return found


def _advpure_module_class(target: str) -> type | None:
    """The class ``target`` names if it is an ``nn.Module`` subclass inside the advpure package."""
    if not target.startswith("advpure."):
        return None
    try:
        found = get_class(target)
    except Exception:  # not importable, or not a class
        return None
    return found if isinstance(found, type) and issubclass(found, nn.Module) else None
