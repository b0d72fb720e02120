"""Which test images an evaluation uses: the first n, or a seeded (optionally class-balanced) subset.

With ``seed`` set, the test indices are shuffled once by that seed (class-balanced: each class
shuffled, then interleaved class by class, so every prefix is as balanced as possible) and
subset ``index`` is the slice [index * n, (index + 1) * n): subsets with different indices never
overlap, and every run sharing (seed, n, index, class_balanced) gets the same images, whatever the
purifier or attack.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from advpure.errors import ConfigError


def dataset_labels(dataset: Dataset) -> list[int]:
    """Integer labels of a dataset: ``.targets``, a TensorDataset's second tensor, or by iterating."""
    if hasattr(dataset, "targets"):
        return [int(t) for t in dataset.targets]
    if hasattr(dataset, "tensors"):
        return [int(t) for t in dataset.tensors[1]]
    return [int(dataset[i][1]) for i in range(len(dataset))]


def select_subset(
    labels: Sequence[int], n: int, seed: int | None = None, index: int = 0, class_balanced: bool = False
) -> list[int]:
    """Indices into the test set (length ``n``), in evaluation order."""
    total = len(labels)
    if (index + 1) * n > total:
        raise ConfigError(
            "task.n_images" if index == 0 else "task.subset_index",
            f"subset {index} of {n} images needs {(index + 1) * n} test images; the test split has {total}",
            f"set task.n_images * (task.subset_index + 1) <= {total}",
        )
    if seed is None:
        order = list(range(total))
    else:
        generator = torch.Generator().manual_seed(seed)
        if class_balanced:
            by_class: dict[int, list[int]] = {}
            for i in torch.randperm(total, generator=generator).tolist():
                by_class.setdefault(int(labels[i]), []).append(i)
            queues = [by_class[c] for c in sorted(by_class)]
            order = [q[r] for r in range(max(map(len, queues))) for q in queues if r < len(q)]
        else:
            order = torch.randperm(total, generator=generator).tolist()
    return order[index * n : (index + 1) * n]
