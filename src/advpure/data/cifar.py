"""CIFAR-10/100 from a local folder in torchvision's layout (the "python version"); downloading only when asked.

The python version stores each batch as a pickle. advpure never lets a data file run code: the
batches are read with an unpickler that rebuilds only numpy arrays and plain containers (dicts,
lists, strings, numbers) and refuses every other global, so a planted file fails with an error
instead of executing. ``verify`` (default) also checks each file's MD5 against the official
archive's (torchvision's list), catching truncated or foreign files before any work. Whatever
``verify`` says, every batch read must hold uint8 images of 3x32x32 and one integer label per image
in the class range (``verify=false`` skips only the MD5 check, e.g. for a rebuilt archive).
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torchvision
from torch.utils.data import Dataset
from typing_extensions import Unpack

from advpure.config.enums import CifarVariant, Norm
from advpure.data.base import ImageDataModule, LoaderOptions
from advpure.errors import DataError

_FOLDER = {CifarVariant.cifar10: "cifar-10-batches-py", CifarVariant.cifar100: "cifar-100-python"}
_TORCHVISION = {
    CifarVariant.cifar10: torchvision.datasets.CIFAR10,
    CifarVariant.cifar100: torchvision.datasets.CIFAR100,
}
_CLASSES = {CifarVariant.cifar10: 10, CifarVariant.cifar100: 100}
_LABEL_KEY = {CifarVariant.cifar10: "labels", CifarVariant.cifar100: "fine_labels"}


def _split_files(variant: CifarVariant) -> dict[str, list[tuple[str, str]]]:
    """``{"train": [(file, md5), ...], "test": [...]}`` of the official archive (torchvision's list)."""
    dataset = _TORCHVISION[variant]
    return {"train": [tuple(f) for f in dataset.train_list], "test": [tuple(f) for f in dataset.test_list]}


class ArraysOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and plain containers; any other global is refused (no code runs)."""

    ALLOWED = frozenset(
        (module, name)
        for core in ("numpy.core", "numpy._core")
        for module, name in (
            (f"{core}.multiarray", "_reconstruct"),
            (f"{core}.multiarray", "scalar"),
            (f"{core}.numeric", "_frombuffer"),
        )
    ) | {("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch file")


def read_batch(path: Path, verify_md5: str | None = None) -> dict[str, Any]:
    """One batch file's dict (``data``: (N, 3072) uint8; labels), read without running code.

    Raises:
        DataError: naming the file, if it is not the official file (MD5), not a CIFAR batch, or
            holds anything but arrays and plain containers.
    """
    raw = path.read_bytes()
    if verify_md5 is not None and hashlib.md5(raw).hexdigest() != verify_md5:
        raise DataError(
            f"{path} is not the official CIFAR file (MD5 mismatch: truncated, corrupted or another file). "
            f"Fix: fetch the archive again (dataset.download=true on a machine with network), or set "
            f"dataset.verify=false to read it anyway"
        )
    try:
        import io

        batch = ArraysOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as error:  # damaged or hostile files raise many types
        raise DataError(
            f"cannot read CIFAR batch {path}: {type(error).__name__}: {error}. advpure reads these pickles with "
            f"an unpickler that only rebuilds arrays and plain containers. Fix: use the official archive"
        ) from None
    if not isinstance(batch, dict) or "data" not in batch:
        raise DataError(f"{path} is not a CIFAR batch (expected a dict with 'data' and labels)")
    return batch


def check_batch(batch: dict[str, Any], path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 3, 32, 32) uint8, labels (N,) int64)`` of a batch read by :func:`read_batch`.

    Raises:
        DataError: naming the file, unless ``data`` is a uint8 array of N images of 3x32x32 (as
            (N, 3072) or (N, 3, 32, 32)) and ``label_key`` holds N integers in ``[0, num_classes)``.
    """
    fix = (
        "Fix: use the official archive (dataset.download=true on a machine with network fetches it), or "
        f"rebuild the file with uint8 images and labels in [0, {num_classes - 1}]"
    )
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        found = f"a {data.dtype} array" if isinstance(data, np.ndarray) else f"a {type(data).__name__}"
        raise DataError(f"{path}: 'data' is {found}, not uint8 image bytes (the CIFAR layout). {fix}")
    if data.shape[1:] not in ((3072,), (3, 32, 32)):
        raise DataError(
            f"{path}: 'data' has shape {tuple(data.shape)}, not (N, 3072) or (N, 3, 32, 32) (CIFAR's 3x32x32 "
            f"images). {fix}"
        )
    if label_key not in batch:
        raise DataError(f"{path} has no '{label_key}' entry (the labels of {path.parent.name}). {fix}")
    try:
        labels = np.asarray(batch[label_key])
    except (TypeError, ValueError):
        labels = np.asarray([], dtype=object)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(data):
        raise DataError(
            f"{path}: '{label_key}' must be {len(data)} integers (one per image), not "
            f"{labels.dtype} values of shape {tuple(labels.shape)}. {fix}"
        )
    outside = (labels < 0) | (labels >= num_classes)
    if outside.any():
        raise DataError(
            f"{path}: {int(outside.sum())} labels outside the {num_classes} classes [0, {num_classes - 1}] "
            f"(e.g. {labels[outside][:5].tolist()}). {fix}"
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


class ArrayImages(Dataset):
    """Images kept as uint8 (N, C, H, W); items are ``(float image in [0, 1], label)``."""

    def __init__(self, images: torch.Tensor, targets: list[int]) -> None:
        self.images = images
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i].float() / 255.0, self.targets[i]


class CifarDataModule(ImageDataModule):
    """CIFAR at 32x32, images (B, 3, 32, 32) in [0, 1], integer labels.

    Args:
        variant: ``cifar10`` or ``cifar100``.
        root: folder that holds ``cifar-10-batches-py/`` (or ``cifar-100-python/``).
        download: fetch the archive into ``root`` if missing (needs network; torchvision).
        verify: check every file's MD5 against the official archive's.

    Raises:
        DataError: at construction, if ``root`` lacks the dataset folder or a batch file and
            ``download`` is false.
    """

    image_shape = (3, 32, 32)
    standard_eps: ClassVar[dict[Norm, float]] = {Norm.Linf: 8 / 255, Norm.L2: 0.5}

    def __init__(
        self,
        root: str,
        variant: CifarVariant = CifarVariant.cifar10,
        download: bool = False,
        verify: bool = True,
        **loader: Unpack[LoaderOptions],
    ) -> None:
        super().__init__(**loader)
        self.variant = CifarVariant(variant)
        self.root = Path(root).expanduser()
        self.download = download
        self.verify = verify
        self.num_classes = _CLASSES[self.variant]
        self.folder = self.root / _FOLDER[self.variant]
        files = [name for split in _split_files(self.variant).values() for name, _ in split]
        if not download and not self.folder.is_dir():
            raise DataError(
                f"{self.variant.value} not found: expected the torchvision folder {self.folder} "
                f"({', '.join(files)} inside). Set dataset.root=/path/to/folder-holding-it, "
                f"or dataset.download=true on a machine with network access"
            )
        missing = [name for name in files if not (self.folder / name).is_file()]
        if not download and missing:
            raise DataError(
                f"{self.variant.value} folder {self.folder} has the wrong layout: {missing} missing (torchvision's "
                f"python version holds {files}). Fix: point dataset.root at the folder holding a complete "
                f"{self.folder.name}/, or set dataset.download=true to fetch it again"
            )

    def prepare_data(self) -> None:
        if self.download:
            for train in (True, False):
                _TORCHVISION[self.variant](str(self.root), train=train, download=True)

    def _split(self, split: str) -> ArrayImages:
        images, targets = [], []
        for name, md5 in _split_files(self.variant)[split]:
            path = self.folder / name
            batch = read_batch(path, md5 if self.verify else None)
            data, labels = check_batch(batch, path, _LABEL_KEY[self.variant], self.num_classes)
            images.append(data)
            targets += labels.tolist()
        return ArrayImages(torch.from_numpy(np.concatenate(images)), targets)

    def setup(self, stage: str | None = None) -> None:
        """The test split always; the training split (50,000 images) only for training stages."""
        if self.test_set is None:
            self.test_set = self._split("test")
        if self.train_set is None and stage in (None, "fit", "validate"):
            self.train_set = self._split("train")
