"""Load a published classifier's weights file (``classifier.weights``) strictly, never unpickling.

Accepted files (``.pt``/``.pth`` read with ``torch.load(weights_only=True)``, or ``.safetensors``):

- a state dict, or a dict holding one under ``state_dict`` / ``model_state_dict`` / ``model``
  (RobustBench's CIFAR checkpoints: ``{"state_dict": ...}``; DeiT's release: ``{"model": ...}``);
- keys with wrapper prefixes (DataParallel's ``module.``, ``model.``) while every key has them;
- normalization stored in the file (``mean``/``std``, ``mu``/``sigma``, or RobustBench ImageNet's
  ``normalize.mean``/``normalize.std`` beside ``model.*``): advpure's classifiers normalize with
  the config's ``net.mean``/``net.std`` instead (non-persistent buffers), so the file's values are
  checked against them and an error says which values to set when they differ.

The state dict must then fit the network exactly (every key, no extra, every shape, each tensor's
kind: floating point where the network holds floating point), with two
named exceptions: a missing BatchNorm ``num_batches_tracked`` counter (files saved by PyTorch
< 0.4.1; unused at evaluation) keeps the network's value, and RobustBench ``WideResNet``'s unused
``sub_block1.*`` (defined but never called in its forward) is dropped.

Wrappers whose published weights belong to an inner module (:class:`~advpure.models.published.
NormalizedClassifier`) say so with a ``weights_module()`` method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from advpure.checkpoints import dtype_mismatch, state_mismatch
from advpure.errors import CheckpointError
from advpure.models.normalize import Normalize
from advpure.models.wide_resnet import WideResNet
from advpure.weights_files import find_state_dict, read_weights_file, strip_wrapper_prefixes

EXPECTED = (
    "a state dict saved with torch.save (.pt/.pth, as RobustBench, torchvision and timm publish them) "
    "or a .safetensors state dict"
)
#: Names under which published files store input normalization, as (mean, std) pairs.
NORMALIZATION_KEYS = (("mean", "std"), ("mu", "sigma"), ("normalize.mean", "normalize.std"))
UNUSED_PREFIXES: dict[type[nn.Module], str] = {WideResNet: "sub_block1."}


@runtime_checkable
class WrapsPublishedWeights(Protocol):
    """A classifier whose published state dict belongs to an inner module (e.g. a wrapper adding
    input normalization): it names that module."""

    def weights_module(self) -> nn.Module: ...


@runtime_checkable
class NormalizesInput(Protocol):
    """A classifier that normalizes its [0, 1] input inside (``normalize``: mean/std)."""

    normalize: nn.Module


def weights_module(model: nn.Module) -> nn.Module:
    """The module a published state dict belongs to: ``model.weights_module()`` if it declares one
    (:class:`WrapsPublishedWeights`), else ``model``."""
    return model.weights_module() if isinstance(model, WrapsPublishedWeights) else model


def load_classifier_weights(model: nn.Module, path: str | Path, *, key: str = "classifier.weights") -> dict[str, Any]:
    """Load the published weights file ``path`` into ``model`` (see the module docstring).

    Args:
        model: the classifier the config built (``classifier.net``).
        path: the weights file.
        key: the config key naming the file, quoted in errors (``<node>.net`` is named for fixes).

    Returns:
        What was read: ``{"source", "normalization_in_file", "dropped", "filled"}``.

    Raises:
        CheckpointError: the file is missing, unreadable, a pickle with objects, or does not fit
            the network (names the missing / unexpected keys and shape mismatches).
    """
    node = key.rsplit(".", 1)[0]
    content = read_weights_file(path, key=key, expected=EXPECTED)
    state = strip_wrapper_prefixes(find_state_dict(content, path, key=key))
    target = weights_module(model)
    expected = target.state_dict()

    file_norm = _pop_normalization(state, expected)
    state = strip_wrapper_prefixes(state)
    if file_norm is not None:
        _check_normalization(file_norm, model, path, key, node)

    dropped: list[str] = []
    for kind, prefix in UNUSED_PREFIXES.items():
        if isinstance(target, kind):
            dropped += [name for name in state if name.startswith(prefix) and name not in expected]
    for name in dropped:
        del state[name]
    filled = [name for name in expected if name not in state and name.endswith("num_batches_tracked")]
    for name in filled:
        state[name] = expected[name]

    missing, unexpected, wrong_shape = state_mismatch(state, target)
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            f"{path} ({key}) does not fit {node}.net ({type(target).__name__}): {len(missing)} missing keys "
            f"{missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}, shape mismatches {wrong_shape[:5]}. "
            f"Fix: set {node}.net to the architecture the weights were trained with (depth, width, num_classes), "
            f"or point {key} at weights for this one"
        )
    wrong_dtype = dtype_mismatch(state, target)
    if wrong_dtype:
        raise CheckpointError(
            f"{path} ({key}) holds tensors of the wrong kind for {node}.net: {wrong_dtype[:5]} ({len(wrong_dtype)} "
            f"in all; parameters must be floating point). Fix: point {key} at the published weights file itself, "
            "or re-save the model's state_dict() without converting its tensors"
        )
    target.load_state_dict(state, strict=True)
    return {
        "source": str(path),
        "normalization_in_file": file_norm is not None,
        "dropped": dropped,
        "filled": filled,
    }


def _pop_normalization(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Remove and return the file's ``(mean, std)`` if it stores them under a known pair of names
    the network does not itself hold as state."""
    for mean_key, std_key in NORMALIZATION_KEYS:
        if mean_key in state and std_key in state and mean_key not in expected and std_key not in expected:
            return state.pop(mean_key).flatten().float(), state.pop(std_key).flatten().float()
    return None


def _check_normalization(
    file_norm: tuple[torch.Tensor, torch.Tensor], model: nn.Module, path: str | Path, key: str, node: str
) -> None:
    """``CheckpointError`` unless the file's mean/std equal the normalization ``model`` applies."""
    file_mean, file_std = file_norm
    normalize = model.normalize if isinstance(model, NormalizesInput) else None
    if isinstance(normalize, Normalize):
        model_mean, model_std = normalize.mean.flatten().cpu(), normalize.std.flatten().cpu()
    else:  # no normalization inside: the network reads [0, 1] directly
        model_mean, model_std = torch.zeros_like(file_mean), torch.ones_like(file_std)
    same_shape = model_mean.shape == file_mean.shape and model_std.shape == file_std.shape
    same_values = same_shape and torch.allclose(model_mean, file_mean, atol=1e-6)
    if same_values and torch.allclose(model_std, file_std, atol=1e-6):
        return
    raise CheckpointError(
        f"{path} ({key}) was trained with input normalization mean={_fmt(file_mean)}, std={_fmt(file_std)}, "
        f"but {node}.net normalizes with mean={_fmt(model_mean)}, std={_fmt(model_std)}. "
        f"Fix: set {node}.net.mean={_fmt(file_mean)} {node}.net.std={_fmt(file_std)}"
    )


def _fmt(values: torch.Tensor) -> str:
    return "[" + ",".join(f"{v:.6g}" for v in values.tolist()) + "]"
