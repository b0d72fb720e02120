"""Shared DataModule behaviour: loaders over ``train_set`` / ``test_set`` and an indexed view."""

from __future__ import annotations

from typing import ClassVar, TypedDict

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from advpure.config.enums import Norm


class IndexedDataset(Dataset):
    """Wraps a dataset of ``(x, y)`` so items are ``(x, y, index)`` (for per-example records)."""

    def __init__(self, base: Dataset, indices: list[int] | None = None) -> None:
        self.base = base
        self.indices = list(range(len(base))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        x, y = self.base[self.indices[i]]
        return x, int(y), self.indices[i]


class LoaderOptions(TypedDict, total=False):
    """The loader options every data module takes (their defaults: :class:`ImageDataModule`)."""

    batch_size: int
    num_workers: int


class ImageDataModule(pl.LightningDataModule):
    """Base: subclasses set ``train_set``/``test_set`` in ``setup`` and the class attributes."""

    num_classes: ClassVar[int]
    image_shape: ClassVar[tuple[int, int, int]]
    standard_eps: ClassVar[dict[Norm, float]]

    def __init__(self, batch_size: int = 128, num_workers: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for a loader")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
