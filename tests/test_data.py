"""The data contract: NCHW float in [0, 1], int64 labels; digits split fixed, seeded and stratified."""

from __future__ import annotations

import numpy as np
import torch

from advpure.data.base import IndexedDataset
from advpure.data.digits import DigitsDataModule, load_digits_tensors


def _split(seed: int) -> DigitsDataModule:
    datamodule = DigitsDataModule(split_seed=seed)
    datamodule.setup()
    return datamodule


def test_digits_tensors_follow_the_contract():
    images, labels = load_digits_tensors()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert images.min() == 0.0 and images.max() == 1.0
    assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))
    # pixels are the 17 grey levels k / 16
    assert torch.allclose(images * 16, (images * 16).round())


def test_digits_loader_batches_follow_the_contract():
    datamodule = _split(0)
    x, y = next(iter(datamodule.train_dataloader()))
    assert x.ndim == 4 and x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert y.dtype == torch.int64


def test_digits_split_is_fixed_stratified_and_disjoint():
    a, b, c = _split(0), _split(0), _split(1)
    assert len(a.train_set) + len(a.test_set) == 1797
    assert len(a.test_set) == 360
    assert torch.equal(a.test_set.tensors[0], b.test_set.tensors[0])
    assert not torch.equal(a.test_set.tensors[0], c.test_set.tensors[0])
    train_rows = {tuple(r) for r in a.train_set.tensors[0].flatten(1).numpy().round(4)}
    test_rows = [tuple(r) for r in a.test_set.tensors[0].flatten(1).numpy().round(4)]
    _, all_labels = load_digits_tensors()
    # stratified: each class's test share is within one image of 20%
    test_counts = np.bincount(a.test_set.tensors[1].numpy(), minlength=10)
    class_counts = np.bincount(all_labels.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * class_counts) <= 1.0)
    # digits has a few duplicate images; the split itself shares no index, so overlap stays tiny
    assert sum(r in train_rows for r in test_rows) <= 5


def test_indexed_dataset_returns_source_indices():
    datamodule = _split(0)
    view = IndexedDataset(datamodule.test_set, [3, 7])
    x, y, index = view[1]
    assert index == 7 and torch.equal(x, datamodule.test_set[7][0]) and y == int(datamodule.test_set[7][1])
