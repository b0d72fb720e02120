"""Read published weights files (``.pt``/``.pth``/``.safetensors``) without ever fully unpickling.

``.safetensors`` files are read with safetensors; every other file only with
``torch.load(path, map_location="cpu", weights_only=True)``: PyTorch's restricted unpickler, which
rebuilds tensors and plain containers (dicts, lists, numbers, strings) and refuses anything else,
so a file cannot run code while loading. Every problem raises ``CheckpointError`` naming the file,
the config key that points at it, and the fix.

Shared by the diffusion loaders (``diffusion.weights``) and the classifier loader
(``classifier.weights``).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from advpure.errors import CheckpointError

#: Prefixes that wrappers add to every key of a state dict: DataParallel's ``module.`` and the
#: ``model.`` of RobustBench-style ``nn.Sequential(normalize, model)`` wrappers.
WRAPPER_PREFIXES = ("module.", "model.")
#: Entries of a checkpoint dict that hold its state dict, tried in this order (``state_dict``:
#: RobustBench and most training scripts; ``model_state_dict``; ``model``: DeiT's released files).
STATE_DICT_ENTRIES = ("state_dict", "model_state_dict", "model")


def read_weights_file(path: str | Path, *, key: str, expected: str) -> Any:
    """The file's content: a dict of tensors for safetensors, else what ``torch.load(weights_only=True)`` rebuilds.

    Args:
        path: the weights file.
        key: the config key that names the file (e.g. ``classifier.weights``), quoted in errors.
        expected: what the file should be, quoted in the not-found error.

    Raises:
        CheckpointError: the file is missing, damaged, or holds anything but tensors and plain containers.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path} (expected {expected}; fix {key})")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(
                f"cannot read {path} ({key}): {error} (truncated or not a safetensors file; download it again)"
            ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower():
            raise CheckpointError(
                f"{path} ({key}) was refused by torch.load(weights_only=True): it holds objects other than tensors "
                f"and plain containers, and advpure never fully unpickles a file (that could run code). Fix: in a "
                f"trusted environment, re-save only its tensors (torch.save of the state dict, or safetensors)"
            ) from None
        raise CheckpointError(
            f"cannot read {path} ({key}): {error} (not a torch.save file; download it again)"
        ) from None
    except Exception as error:  # torch.load raises many types (RuntimeError, KeyError, EOFError) on damaged files
        raise CheckpointError(
            f"cannot read {path} ({key}): {type(error).__name__}: {error} (truncated or not a torch.save file; "
            f"download it again)"
        ) from None


def find_state_dict(content: Any, path: str | Path, *, key: str) -> dict[str, torch.Tensor]:
    """The state dict inside a file's ``content``: the content itself when every value is a tensor,
    else its first entry among :data:`STATE_DICT_ENTRIES` whose values all are (a RobustBench file's
    ``{"state_dict": ..., "epoch": ...}``). ``CheckpointError`` naming the file otherwise."""
    if isinstance(content, Mapping):
        if content and all(isinstance(value, torch.Tensor) for value in content.values()):
            return {str(name): tensor for name, tensor in content.items()}
        for entry in STATE_DICT_ENTRIES:
            inner = content.get(entry)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return {str(name): tensor for name, tensor in inner.items()}
        described = f"a dict with entries {sorted(map(str, content))[:8]}"
    else:
        described = f"a {type(content).__name__}"
    raise CheckpointError(
        f"{path} ({key}) holds {described}, not a state dict; expected a dict of tensors, or a dict holding one "
        f"under {' / '.join(repr(e) for e in STATE_DICT_ENTRIES)}. Fix: re-save the model's state_dict()"
    )


def strip_wrapper_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with each of :data:`WRAPPER_PREFIXES` removed while every key carries it."""
    state = dict(state)
    changed = True
    while changed and state:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(name.startswith(prefix) for name in state):
                state = {name[len(prefix) :]: tensor for name, tensor in state.items()}
                changed = True
    return state
