"""Checkpoints are ``<stem>.safetensors`` (weights) + ``<stem>.json`` (architecture, metadata).

Loading never unpickles: weights come from safetensors only, the architecture from JSON. The JSON
records the SHA-256 of the weights file; loading verifies it (a checkpoint whose weights were
changed or swapped after saving is refused), and every tensor's kind (floating point, integer,
bool) must be the model's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from advpure.errors import CheckpointError
from advpure.io import JsonFileError, read_json, write_atomic, write_json_atomic

FORMAT = "advpure-checkpoint-v1"


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``(weights, config)`` paths of a checkpoint given its stem or either file."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in {".safetensors", ".json"} else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_checkpoint(
    model: nn.Module,
    path: str | Path,
    *,
    net: dict[str, Any],
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s state dict and its architecture ``net`` (``_target_`` + kwargs).

    Returns the stem path. Both files are written atomically.
    """
    weights_path, config_path = checkpoint_paths(path)
    tensors = {name: t.detach().cpu().contiguous().clone() for name, t in model.state_dict().items()}
    write_atomic(weights_path, lambda tmp: save_file(tensors, str(tmp)))
    digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()
    write_json_atomic(
        config_path,
        {
            "format": FORMAT,
            "net": net,
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "sha256": digest,
            "metadata": metadata or {},
        },
    )
    return weights_path.with_suffix("")


def state_mismatch(state: dict[str, torch.Tensor], model: nn.Module) -> tuple[list[str], list[str], list[str]]:
    """``(missing keys, unexpected keys, shape mismatches)`` of ``state`` against ``model``'s
    state dict; all empty when it loads strictly."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    return missing, unexpected, wrong_shape


def dtype_mismatch(state: dict[str, torch.Tensor], model: nn.Module) -> list[str]:
    """``key: file dtype vs model dtype`` for each tensor of ``state`` whose kind (floating point,
    complex, bool, integer) differs from ``model``'s: ``load_state_dict`` would cast integers into
    float parameters silently, giving a network that computes garbage."""
    expected = model.state_dict()

    def kind(tensor: torch.Tensor) -> str:
        if tensor.dtype == torch.bool:
            return "bool"
        return "floating point" if tensor.is_floating_point() else "complex" if tensor.is_complex() else "integer"

    return [
        f"{k}: file {state[k].dtype} ({kind(state[k])}) vs model {expected[k].dtype} ({kind(expected[k])})"
        for k in expected
        if k in state and kind(state[k]) != kind(expected[k])
    ]


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file ``path`` (read in chunks)."""
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(state_dict, config)``; ``CheckpointError`` naming the file if missing or damaged,
    if its JSON is not an advpure checkpoint config, or if the weights' SHA-256 differs from the
    one the JSON records."""
    weights_path, config_path = checkpoint_paths(path)
    for file in (weights_path, config_path):
        if not file.is_file():
            raise CheckpointError(
                f"checkpoint file not found: {file} (an advpure checkpoint is a pair "
                f"<stem>.safetensors + <stem>.json). Fix: correct the path, or train one with a train_* task"
            )
    try:
        config = read_json(config_path, dict)
    except JsonFileError as error:
        raise CheckpointError(
            f"checkpoint config {error} (an advpure checkpoint's JSON is an object with 'format', 'net' and "
            "'sha256'). Fix: copy the checkpoint again, or train it again with its train_* task"
        ) from None
    if config.get("format") != FORMAT or not isinstance(config.get("net"), dict):
        raise CheckpointError(
            f"{config_path} is not an advpure checkpoint config (format {FORMAT!r} with a 'net' object). Fix: point "
            "at a checkpoint written by a train_* task (published weights files go to classifier.weights / "
            "diffusion.weights)"
        )
    for entry, kind in (("metadata", dict), ("sha256", str)):
        if entry in config and not isinstance(config[entry], kind):
            raise CheckpointError(
                f"{config_path}: its '{entry}' entry is a {type(config[entry]).__name__}, not a "
                f"{'JSON object' if kind is dict else 'string'} (a damaged or edited file). Fix: copy the "
                "checkpoint again, or train it again with its train_* task"
            )
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"cannot read weights {weights_path}: {error} (truncated or not a safetensors file). "
            "Fix: copy or train the checkpoint again"
        ) from None
    recorded = config.get("sha256")
    if recorded is not None and file_sha256(weights_path) != recorded.lower():
        raise CheckpointError(
            f"{weights_path} is not the weights file its config {config_path} was saved with (its SHA-256 "
            f"differs from the recorded {recorded[:16]}...: the weights were changed, swapped or damaged after "
            "saving). Fix: copy both files of the checkpoint again from where it was trained, or train it again"
        )
    return state, config


def load_weights(model: nn.Module, path: str | Path, *, net: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load a checkpoint into ``model`` strictly; returns the checkpoint's JSON config.

    Raises ``CheckpointError`` if the stored architecture differs from ``net`` or any key or
    shape differs from ``model``'s.
    """
    state, config = read_checkpoint(path)
    if net is not None and _plain(config["net"]) != _plain(net):
        raise CheckpointError(
            f"checkpoint {checkpoint_paths(path)[1]} was saved for architecture {config['net']}, "
            f"but the config asks for {net}. Fix: point at a checkpoint of this net, or select the net it was saved for"
        )
    missing, unexpected, wrong_shape = state_mismatch(state, model)
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            f"checkpoint {checkpoint_paths(path)[0]} does not fit the model: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatches {wrong_shape[:5]}. "
            "Fix: point at a checkpoint of this architecture, or change the net to the one it was trained with"
        )
    wrong_dtype = dtype_mismatch(state, model)
    if wrong_dtype:
        raise CheckpointError(
            f"checkpoint {checkpoint_paths(path)[0]} holds tensors of the wrong kind: {wrong_dtype[:5]} "
            f"({len(wrong_dtype)} in all; parameters must be floating point). Fix: copy the checkpoint again, or "
            "re-save it from the trained model (save_checkpoint keeps each tensor's dtype)"
        )
    model.load_state_dict(state, strict=True)
    return config


def _plain(value: Any) -> Any:
    """JSON round-trip so tuples/lists and Enums compare equal."""
    return json.loads(json.dumps(value, default=str))
