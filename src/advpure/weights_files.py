"""Read published weights files (``.pt``/``.pth``/``.safetensors``) without ever fully unpickling.

``.safetensors`` files are read with safetensors; every other file only with
``torch.load(path, map_location="cpu", weights_only=True)``: PyTorch's restricted unpickler, which
rebuilds tensors and plain containers (dicts, lists, numbers, strings) and refuses anything else,
so a file cannot run code while loading. A file that is recognizably something else (an image, an
archive, a text file such as a Git LFS pointer or an HTML error page, a misnamed safetensors
file) is named as what it looks like before any reader sees it. Every problem raises
``CheckpointError`` naming the file, the config key that points at it, and the fix.

Shared by the diffusion loaders (``diffusion.weights``) and the classifier loader
(``classifier.weights``).
"""

from __future__ import annotations

import pickle
import zipfile
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
#: Leading bytes of files that are not weights files, and what each is.
MAGIC_BYTES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"\x1f\x8b", "a gzip-compressed file (.gz, .tar.gz: extract the weights file from it)"),
    (b"\xfd7zXZ\x00", "an xz-compressed file (extract the weights file from it)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive (extract the weights file from it)"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file (extract the weights file from it)"),
    (b"\x93NUMPY", "a NumPy .npy array file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras/TensorFlow weights; advpure reads PyTorch state dicts)"),
)


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
    looks_like = describe_foreign_file(path)
    if looks_like is not None:
        raise CheckpointError(
            f"{path} ({key}) looks like {looks_like}, not a weights file; expected {expected}. "
            f"Fix: point {key} at the weights file itself"
        )
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


def describe_foreign_file(path: Path) -> str | None:
    """What ``path`` looks like when its first bytes show it is no weights file (an image, an archive
    that is not a ``torch.save`` zip, a text file, a safetensors file under another suffix, an empty
    file); ``None`` for anything a weights reader should try (a pickle, a torch zip, a safetensors
    file named ``.safetensors``, or bytes it does not recognize)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as stream:
            head = stream.read(1024)
    except OSError:
        return None  # the reader reports it
    if size == 0:
        return "an empty file (0 bytes: an interrupted download or copy?)"
    for magic, described in MAGIC_BYTES:
        if head.startswith(magic):
            return described
    if head.startswith(b"BZh") and head[4:10] == b"1AY&SY":
        return "a bzip2-compressed file (extract the weights file from it)"
    if head[257:262] == b"ustar":
        return "a tar archive (extract the weights file from it)"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _describe_zip(path)
    header_size = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
    if path.suffix != ".safetensors" and head[8:9] == b"{" and 0 < header_size <= size - 8:
        return f"a safetensors file named {path.name} (rename it to end in .safetensors so it is read as one)"
    if head.startswith(b"\x80") or b"\x00" in head:
        return None  # a pickle (torch's legacy format) or other binary: torch.load decides
    return _describe_text(head)


def _describe_zip(path: Path) -> str | None:
    """``None`` for a ``torch.save`` zip (it holds ``<name>/data.pkl``) or an unreadable zip (the reader
    reports it); else what the archive holds."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return None
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return f"a ZIP archive that is not a torch.save file (it holds {shown or 'nothing'}; extract the weights file)"


def _describe_text(head: bytes) -> str | None:
    """What a file whose first bytes are ``head`` is, if they are text (UTF-8 without control
    characters); ``None`` otherwise."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # not a character cut at the end of the read
            return None
        text = head[: error.start].decode("utf-8")
    if any(ord(c) < 32 and c not in "\t\n\r\f" for c in text):
        return None
    start = text.lstrip().lower()
    if start.startswith("version https://git-lfs"):
        return "a Git LFS pointer, not the file it points to (fetch it: git lfs pull)"
    if start.startswith(("<!doctype html", "<html")):
        return "an HTML page (a download that returned a web page, e.g. a login or error page)"
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return f"a text file (it starts {first_line[:60]!r})"


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
