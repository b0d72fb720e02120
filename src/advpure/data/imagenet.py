"""ImageNet (ILSVRC-2012) from an ImageFolder-style folder, with the standard 1000-class indices."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import ClassVar

from torch.utils.data import DataLoader
from torchvision import transforms
from typing_extensions import Unpack

from advpure.config.enums import Norm
from advpure.data.base import ImageDataModule, LoaderOptions
from advpure.data.folders import ImageListDataset, image_files, is_image, require_dir
from advpure.errors import DataError

LAYOUT = "<root>/<split>/<wnid>/<image>.JPEG: one folder per class, named by its WordNet id such as n01440764"


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 WordNet ids in the standard class-index order (sorted; the order of
    torchvision's ImageFolder over the full train set, which published classifiers were trained with)."""
    return tuple(files("advpure.data").joinpath("imagenet_wnids.txt").read_text().split())


def imagenet_items(folder: Path, key: str) -> list[tuple[Path, int]]:
    """``(image path, standard class index)`` for every image in ``folder``'s class folders, sorted.

    ``DataError`` naming ``folder`` (and the config ``key`` that sets it) when it is missing, holds
    images outside class folders, folders that are not ImageNet WordNet ids, or no images.
    """
    require_dir(folder, what="ImageNet folder", layout=LAYOUT, fix=f"set {key}")
    index = {wnid: i for i, wnid in enumerate(imagenet_wnids())}
    entries = sorted(folder.iterdir())
    loose = [p.name for p in entries if p.is_file() and is_image(p)]
    if loose:
        raise DataError(
            f"ImageNet folder {folder} holds images directly ({loose[:3]} ...), not in class folders (expected "
            f"{LAYOUT}). Fix: sort the validation images into one folder per WordNet id (e.g. with the "
            f"ILSVRC-2012 devkit's ground truth, or the widely used valprep.sh), then set {key}"
        )
    classes = [p for p in entries if p.is_dir()]
    unknown = [p.name for p in classes if p.name not in index]
    if unknown:
        raise DataError(
            f"ImageNet folder {folder} has class folders that are not ILSVRC-2012 WordNet ids: {unknown[:5]} "
            f"(expected {LAYOUT}). Fix: remove them, or point {key} at the folder of the wnid class folders"
        )
    items = [(image, index[c.name]) for c in classes for image in image_files(c)]
    if not items:
        raise DataError(f"ImageNet folder {folder} holds no images (expected {LAYOUT}). Fix: set {key}")
    return items


class ImageNetDataModule(ImageDataModule):
    """ImageNet images (B, 3, crop, crop) in [0, 1], labels the standard 1000-class indices.

    The folder may hold any subset of the classes (each image keeps its class's standard index).
    Images are resized so the short side is ``resize``, then center-cropped to ``crop`` (256 / 224,
    as the published torchvision and timm classifiers are evaluated).

    Args:
        root: folder holding ``<split>/`` (and ``<train_split>/``).
        split: the evaluation folder under ``root`` (``val``).
        train_split: a training folder in the same layout, or ``None`` (training tasks then fail
            naming ``dataset.train_split``).
        resize, crop: sizes of the resize and the center crop.

    Raises:
        DataError: at construction, if a folder is missing, empty, or not in the layout
            ``<root>/<split>/<wnid>/<image>``.
    """

    num_classes = 1000
    # DiffPure (Nie et al. 2022, Table 3) and RobustBench evaluate ImageNet at Linf 4/255; L2 3.0 is
    # the conventional ImageNet L2 budget of robust training (Salman et al. 2020, Madry et al.'s
    # robustness library).
    standard_eps: ClassVar[dict[Norm, float]] = {Norm.Linf: 4 / 255, Norm.L2: 3.0}

    def __init__(
        self,
        root: str,
        split: str = "val",
        train_split: str | None = None,
        resize: int = 256,
        crop: int = 224,
        **loader: Unpack[LoaderOptions],
    ) -> None:
        super().__init__(**loader)
        self.root = Path(root).expanduser()
        self.image_shape = (3, crop, crop)
        self.transform = transforms.Compose(
            [transforms.Resize(resize), transforms.CenterCrop(crop), transforms.ToTensor()]
        )
        require_dir(self.root, what="ImageNet root", layout=LAYOUT, fix="set dataset.root=/path/to/imagenet")
        self.test_items = imagenet_items(self.root / split, "dataset.root (and dataset.split)")
        self.train_items = (
            imagenet_items(self.root / train_split, "dataset.root (and dataset.train_split)")
            if train_split is not None
            else None
        )

    def setup(self, stage: str | None = None) -> None:
        if self.test_set is not None:
            return
        self.test_set = ImageListDataset(self.test_items, self.transform)
        if self.train_items is not None:
            self.train_set = ImageListDataset(self.train_items, self.transform)

    def train_dataloader(self) -> DataLoader:
        if self.train_items is None:
            raise DataError(
                f"ImageNet under {self.root} has no training folder configured. "
                f"Fix: set dataset.train_split=train (a folder in the layout {LAYOUT})"
            )
        return super().train_dataloader()
