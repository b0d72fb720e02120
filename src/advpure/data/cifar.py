"""CIFAR-10/100 from a local torchvision folder; downloading only when asked."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torchvision
from torchvision.transforms import ToTensor

from advpure.config.enums import CifarVariant, Norm
from advpure.data.base import ImageDataModule
from advpure.errors import DataError

_FOLDER = {CifarVariant.cifar10: "cifar-10-batches-py", CifarVariant.cifar100: "cifar-100-python"}
_DATASET = {
    CifarVariant.cifar10: torchvision.datasets.CIFAR10,
    CifarVariant.cifar100: torchvision.datasets.CIFAR100,
}
_CLASSES = {CifarVariant.cifar10: 10, CifarVariant.cifar100: 100}
_FILES = {
    CifarVariant.cifar10: (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"),
    CifarVariant.cifar100: ("train", "test", "meta"),
}


class CifarDataModule(ImageDataModule):
    """torchvision CIFAR at 32x32, images (B, 3, 32, 32) in [0, 1].

    Args:
        variant: ``cifar10`` or ``cifar100``.
        root: folder that holds ``cifar-10-batches-py/`` (or ``cifar-100-python/``).
        download: fetch the archive into ``root`` if missing (needs network).

    Raises:
        DataError: at construction, if ``root`` lacks the dataset folder and ``download`` is false.
    """

    image_shape = (3, 32, 32)
    standard_eps: ClassVar[dict[Norm, float]] = {Norm.Linf: 8 / 255, Norm.L2: 0.5}

    def __init__(
        self,
        root: str,
        variant: CifarVariant = CifarVariant.cifar10,
        download: bool = False,
        batch_size: int = 128,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        self.variant = CifarVariant(variant)
        self.root = Path(root).expanduser()
        self.download = download
        self.num_classes = _CLASSES[self.variant]
        expected = self.root / _FOLDER[self.variant]
        if not download and not expected.is_dir():
            raise DataError(
                f"{self.variant.value} not found: expected the torchvision folder {expected} "
                f"(data_batch_1..5 and test_batch inside). Set dataset.root=/path/to/folder-holding-it, "
                f"or dataset.download=true on a machine with network access"
            )
        missing = [name for name in _FILES[self.variant] if not (expected / name).is_file()]
        if not download and missing:
            raise DataError(
                f"{self.variant.value} folder {expected} has the wrong layout: {missing} missing (torchvision's "
                f"python version holds {list(_FILES[self.variant])}). Fix: point dataset.root at the folder "
                f"holding a complete {expected.name}/, or set dataset.download=true to fetch it again"
            )

    def prepare_data(self) -> None:
        if self.download:
            for train in (True, False):
                _DATASET[self.variant](str(self.root), train=train, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        dataset = _DATASET[self.variant]
        self.train_set = dataset(str(self.root), train=True, transform=ToTensor())
        self.test_set = dataset(str(self.root), train=False, transform=ToTensor())
