"""Image folders on disk: layout checks that fail before work starts, and a dataset over a file list."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, pil_loader


def require_dir(path: Path, *, what: str, layout: str, fix: str) -> Path:
    """``path`` if it is a folder, else ``DataError`` naming it, the expected ``layout`` and the ``fix``."""
    from advpure.errors import DataError

    if not path.is_dir():
        problem = "is a file, not a folder" if path.exists() else "not found"
        raise DataError(f"{what} {problem}: {path} (expected {layout}). Fix: {fix}")
    return path


def require_file(path: Path, *, what: str, layout: str, fix: str) -> Path:
    """``path`` if it is a file, else ``DataError`` naming it, the expected ``layout`` and the ``fix``."""
    from advpure.errors import DataError

    if not path.is_file():
        raise DataError(f"{what} not found: {path} (expected {layout}). Fix: {fix}")
    return path


def is_image(path: Path) -> bool:
    """Whether ``path`` names an image file torchvision's folder datasets read (by extension)."""
    return path.suffix.lower() in IMG_EXTENSIONS


def image_files(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image(p))


class ImageListDataset(Dataset):
    """``(transform(image), label)`` for a list of ``(path, label)``; images read with PIL as RGB."""

    def __init__(self, items: Sequence[tuple[Path, int]], transform: Callable[..., torch.Tensor]) -> None:
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        return self.transform(pil_loader(str(path))), label

    @property
    def targets(self) -> list[int]:
        """Every item's label, in order (without reading images)."""
        return [label for _, label in self.items]
