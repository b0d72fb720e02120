"""Load score_sde's released NCSN++ weights (DiffPure's CIFAR-10 ``checkpoint_8.pth``) without a full unpickle.

Accepted files, all in the original key layout (``sigmas``, ``all_modules.<i>.…``):

- score_sde's training checkpoint: a ``torch.save``'d dict with ``model`` (the raw weights, keys
  prefixed ``module.`` by DataParallel), ``ema`` (``decay``, ``num_updates``, ``shadow_params``:
  one tensor per parameter, in ``named_parameters()`` order), ``optimizer`` and ``step``. The EMA
  weights are used (as score_sde and DiffPure evaluate): ``shadow_params`` onto the parameters in
  order, buffers (``sigmas``) from ``model``.
- a plain state dict, saved with ``torch.save`` (keys with or without ``module.``) or as safetensors.

``.pth``/``.pt`` files are read only with ``torch.load(path, map_location="cpu", weights_only=True)``:
PyTorch's restricted unpickler, which rebuilds tensors and plain containers and refuses anything
else (so a file cannot run code while loading). Every problem raises ``CheckpointError`` naming
the file and the fix.

Conversion to an advpure checkpoint (``<stem>.safetensors`` + ``<stem>.json``)::

    python -m advpure.diffusion.score_sde_weights checkpoint_8.pth checkpoints/score_sde_cifar10
    python run.py diffusion=score_sde_cifar10 diffusion.checkpoint=checkpoints/score_sde_cifar10
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from advpure.checkpoints import dtype_mismatch, save_checkpoint, state_mismatch
from advpure.diffusion.score_sde import (
    PUBLISHED_CIFAR10_NET,
    NCSNpp,
    ScoreSdeEpsilon,
    net_kwargs_from_score_sde_config,
)
from advpure.errors import AdvpureError, CheckpointError, ConfigError
from advpure.io import JsonFileError, read_json
from advpure.weights_files import read_weights_file

DATAPARALLEL_PREFIX = "module."
SCORE_SDE_EPSILON_TARGET = f"{ScoreSdeEpsilon.__module__}.{ScoreSdeEpsilon.__qualname__}"


def read_score_sde_file(path: str | Path) -> Any:
    """The file's content: a dict of tensors for safetensors, else what ``torch.load(weights_only=True)`` rebuilds."""
    return read_weights_file(
        path,
        key="diffusion.weights",
        expected="score_sde's checkpoint_8.pth, a state dict saved with torch.save, or a .safetensors state dict",
    )


def score_sde_state_dict(content: Any, model: NCSNpp, path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict to load into ``model`` from a file's ``content``, and which weights it holds.

    Returns ``(state, kind)``; ``kind`` is ``"ema"`` for score_sde's training checkpoint (EMA
    parameters + ``model``'s buffers) or ``"state_dict"`` for a plain state dict. The state is
    checked against ``model``: every key present, none extra, every shape equal.
    """
    if not isinstance(content, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(content).__name__}, not a dict; expected score_sde's checkpoint "
            f"(model, ema, optimizer, step) or a state dict"
        )
    if "ema" in content or "model" in content:
        return _ema_state_dict(content, model, path), "ema"
    state = _tensor_dict(content, path, "the file")
    _check_fits(state, model, path, "state dict")
    return state, "state_dict"


def load_score_sde_weights(model: NCSNpp, path: str | Path) -> dict[str, Any]:
    """Load score_sde weights into ``model`` (EMA weights for a training checkpoint), strictly.

    Returns what was read: ``{"source", "weights": "ema" | "state_dict", "step", "ema_decay",
    "ema_num_updates"}`` (the last three ``None`` when the file does not hold them).
    """
    if not isinstance(model, NCSNpp):
        raise ConfigError(
            "diffusion.weights",
            f"holds score_sde NCSN++ weights, but diffusion.net builds a {type(model).__name__}",
            f"select diffusion=score_sde_cifar10 (net _target_: {SCORE_SDE_EPSILON_TARGET})",
        )
    content = read_score_sde_file(path)
    state, kind = score_sde_state_dict(content, model, path)
    model.load_state_dict(state, strict=True)
    ema = content.get("ema") if kind == "ema" else None
    return {
        "source": str(path),
        "weights": kind,
        "step": _plain_number(content.get("step")) if kind == "ema" else None,
        "ema_decay": _plain_number(ema.get("decay")) if isinstance(ema, Mapping) else None,
        "ema_num_updates": _plain_number(ema.get("num_updates")) if isinstance(ema, Mapping) else None,
    }


def convert_score_sde_checkpoint(
    published: str | Path, out_stem: str | Path, net_kwargs: Mapping[str, Any] | None = None
) -> Path:
    """Write ``published`` (score_sde weights) as an advpure checkpoint ``<out_stem>.safetensors`` + ``.json``.

    ``net_kwargs``: the network's keywords (default :data:`PUBLISHED_CIFAR10_NET`, which
    ``conf/diffusion/score_sde_cifar10.yaml`` also holds, so ``diffusion.checkpoint=<out_stem>``
    loads the result). Returns the stem.
    """
    kwargs = dict(PUBLISHED_CIFAR10_NET if net_kwargs is None else net_kwargs)
    model = ScoreSdeEpsilon(**kwargs)
    read = load_score_sde_weights(model, published)
    return save_checkpoint(
        model,
        out_stem,
        net={"_target_": SCORE_SDE_EPSILON_TARGET, **kwargs},
        metadata={"converted_from": "score_sde", **read},
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m advpure.diffusion.score_sde_weights <published.pth> <out stem> [--score-sde-config JSON]``."""
    parser = argparse.ArgumentParser(
        prog="python -m advpure.diffusion.score_sde_weights",
        description="Convert score_sde NCSN++ weights (e.g. DiffPure's CIFAR-10 checkpoint_8.pth; EMA weights) "
        "into an advpure checkpoint <out stem>.safetensors + <out stem>.json.",
    )
    parser.add_argument("published", help="score_sde checkpoint (.pth), torch.save'd state dict, or .safetensors")
    parser.add_argument("out_stem", help="output path without suffix")
    parser.add_argument(
        "--score-sde-config",
        help="JSON of the score_sde config the weights were trained with (default: vp/cifar10_ddpmpp_deep_continuous)",
    )
    args = parser.parse_args(argv)
    try:
        net_kwargs = None
        if args.score_sde_config is not None:
            net_kwargs = net_kwargs_from_score_sde_config(_read_json(args.score_sde_config))
        stem = convert_score_sde_checkpoint(args.published, args.out_stem, net_kwargs)
    except AdvpureError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"written: {stem}.safetensors + {stem}.json")
    if net_kwargs is None:
        print(f"use it with: python run.py diffusion=score_sde_cifar10 diffusion.checkpoint={stem}")
    return 0


def _ema_state_dict(content: Mapping[str, Any], model: NCSNpp, path: str | Path) -> dict[str, torch.Tensor]:
    """score_sde's training checkpoint -> the EMA parameters + the raw state dict's buffers."""
    missing_entries = [key for key in ("model", "ema") if key not in content]
    if missing_entries:
        raise CheckpointError(
            f"{path} looks like a score_sde training checkpoint but lacks {missing_entries} (it has "
            f"{sorted(map(str, content))}); expected model, ema, optimizer, step, or pass a plain state dict"
        )
    raw = _tensor_dict(content["model"], path, "'model'")
    _check_fits(raw, model, path, "'model' entry")
    ema = content["ema"]
    shadow = ema.get("shadow_params") if isinstance(ema, Mapping) else None
    names = [name for name, _ in model.named_parameters()]
    if not isinstance(shadow, (list, tuple)) or len(shadow) != len(names):
        count = f"{len(shadow)} tensors" if isinstance(shadow, (list, tuple)) else "no list"
        raise CheckpointError(
            f"{path}: ema.shadow_params holds {count}, but the network has {len(names)} parameters; "
            f"diffusion.net must be the configuration the checkpoint was trained with "
            f"(diffusion=score_sde_cifar10 for DiffPure's checkpoint_8.pth)"
        )
    state = dict(raw)
    parameters = dict(model.named_parameters())
    for index, (name, tensor) in enumerate(zip(names, shadow, strict=True)):
        if not isinstance(tensor, torch.Tensor) or tensor.shape != parameters[name].shape:
            found = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise CheckpointError(
                f"{path}: ema.shadow_params[{index}] is {found}, but parameter {name} (number {index} in "
                f"named_parameters() order) is {tuple(parameters[name].shape)}; diffusion.net must be the "
                f"configuration the checkpoint was trained with"
            )
        state[name] = tensor
    return state


def _tensor_dict(value: Any, path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """A ``{name: tensor}`` mapping with DataParallel's ``module.`` prefix removed (if every key has it)."""
    if not isinstance(value, Mapping) or not all(isinstance(v, torch.Tensor) for v in value.values()):
        raise CheckpointError(
            f"{path}: {what} is not a state dict of tensors; expected score_sde's checkpoint "
            f"(model, ema, optimizer, step) or a state dict"
        )
    state = {str(key): tensor for key, tensor in value.items()}
    if state and all(key.startswith(DATAPARALLEL_PREFIX) for key in state):
        state = {key[len(DATAPARALLEL_PREFIX) :]: tensor for key, tensor in state.items()}
    return state


def _check_fits(state: Mapping[str, torch.Tensor], model: NCSNpp, path: str | Path, what: str) -> None:
    """``CheckpointError`` unless ``state`` has exactly ``model``'s keys, shapes and tensor kinds."""
    missing, unexpected, wrong_shape = state_mismatch(dict(state), model)
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            f"{path}: the {what} does not fit the network ({len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected {unexpected[:5]}, shape mismatches {wrong_shape[:5]}); "
            f"diffusion.net must be the configuration the weights were trained with "
            f"(diffusion=score_sde_cifar10 for DiffPure's checkpoint_8.pth)"
        )
    wrong_dtype = dtype_mismatch(dict(state), model)
    if wrong_dtype:
        raise CheckpointError(
            f"{path}: the {what} holds tensors of the wrong kind {wrong_dtype[:5]} (parameters must be floating "
            "point). Fix: convert the published file itself, not a converted copy"
        )


def _plain_number(value: Any) -> Any:
    """A tensor scalar as a Python number; anything else unchanged (for the JSON metadata)."""
    return value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value


def _read_json(path: str) -> dict[str, Any]:
    try:
        return read_json(path, dict)
    except JsonFileError as error:
        raise ConfigError("--score-sde-config", f"cannot read {error}", "pass a score_sde config JSON") from None


if __name__ == "__main__":
    sys.exit(main())
