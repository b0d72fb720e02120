"""The evaluation's unit of work and of randomness: a fixed batch of test images.

The chosen test images (in evaluation order) are cut into batches of ``batch_size`` once; batch
``b`` holds images ``[b * batch_size, (b + 1) * batch_size)`` of that order whatever the number
of processes. Every random stream a batch uses is seeded from ``(seed, b, stream)`` alone
(:func:`stream_seed`), so a batch's numbers do not depend on which process runs it, on what ran
before it, or on whether the run was interrupted: one process, N DDP processes and a resumed run
give the same records. Process ``r`` of ``W`` runs batches ``r, r + W, r + 2W, ...``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

STREAMS = ("attack", "scoring")


def stream_seed(seed: int, batch: int, stream: str) -> int:
    """A 63-bit seed for one random stream of one batch, from (run seed, batch id, stream name)."""
    digest = hashlib.sha256(f"advpure/{seed}/{batch}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seed_stream(seed: int, batch: int, stream: str) -> None:
    """Seed torch's global generators (CPU and every CUDA device) for ``stream`` of ``batch``."""
    torch.manual_seed(stream_seed(seed, batch, stream))


@dataclass(frozen=True)
class BatchPlan:
    """``batches[b]``: the dataset indices of batch ``b``, in evaluation order."""

    batches: tuple[tuple[int, ...], ...]

    @classmethod
    def cut(cls, indices: Sequence[int], batch_size: int) -> BatchPlan:
        """Batches of ``batch_size`` consecutive indices (the last may be shorter)."""
        chunks = (tuple(indices[i : i + batch_size]) for i in range(0, len(indices), batch_size))
        return cls(tuple(chunks))

    def __len__(self) -> int:
        return len(self.batches)

    def for_rank(self, rank: int, world_size: int) -> list[int]:
        """The batch ids process ``rank`` of ``world_size`` runs (round robin)."""
        return list(range(rank, len(self.batches), world_size))


class PlannedBatches(Dataset):
    """Whole batches as dataset items (use with ``DataLoader(batch_size=None)``).

    Item ``i`` is batch ``batch_ids[i]``: ``(x (B, C, H, W) in [0, 1], y (B,) int64, index (B,)
    int64 dataset indices, batch id)``.
    """

    def __init__(self, dataset: Dataset, plan: BatchPlan, batch_ids: Sequence[int]) -> None:
        self.dataset = dataset
        self.plan = plan
        self.batch_ids = list(batch_ids)

    def __len__(self) -> int:
        return len(self.batch_ids)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        batch_id = self.batch_ids[item]
        indices = self.plan.batches[batch_id]
        pairs = [self.dataset[i] for i in indices]
        x = torch.stack([torch.as_tensor(image) for image, _ in pairs])
        y = torch.tensor([int(label) for _, label in pairs], dtype=torch.int64)
        return x, y, torch.tensor(indices, dtype=torch.int64), batch_id
