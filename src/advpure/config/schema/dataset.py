"""Schemas of the ``dataset`` group: LightningDataModules giving NCHW float images in [0, 1] and
integer labels. Defaults are the data module constructors' (:mod:`.signature`)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from advpure.config.checks import require_at_least, require_interval, require_seed
from advpure.config.enums import CifarVariant
from advpure.config.schema.signature import ConstructedSchema, defaults_from, target_of
from advpure.data.base import ImageDataModule
from advpure.data.celebahq import CelebAHQDataModule
from advpure.data.cifar import CifarDataModule
from advpure.data.digits import DigitsDataModule
from advpure.data.imagenet import ImageNetDataModule
from advpure.data.svhn import SvhnDataModule


@dataclass
@defaults_from(ImageDataModule)
class DatasetSchema(ConstructedSchema):
    """A LightningDataModule giving NCHW float images in [0, 1] and integer labels."""

    _target_: str = MISSING
    batch_size: int
    num_workers: int

    def __post_init__(self) -> None:
        require_at_least("batch_size", self.batch_size, 1)
        require_at_least("num_workers", self.num_workers, 0)
        self.check_variant()

    def check_variant(self) -> None:
        """The option's own range checks (after the batch keys)."""

    def image_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) of the images, from the data module class's declaration; ``None`` when the
        class cannot be imported (building it then fails, naming the key) or declares none."""
        from hydra.utils import get_class

        try:
            shape = get_class(self._target_).image_shape
        except Exception:  # an unknown target fails at build, naming the key (and one without the
            return None  # declaration fails the dataset contract)
        if isinstance(shape, tuple) and len(shape) == 3:
            return tuple(int(s) for s in shape)  # type: ignore[return-value]
        return None


@dataclass
class ResizedDatasetSchema(DatasetSchema):
    """A dataset resized on load to square ``side()`` images (the class's channels, else 3)."""

    def side(self) -> int:
        raise NotImplementedError

    def image_shape(self) -> tuple[int, int, int] | None:
        declared = super().image_shape()
        return (declared[0] if declared is not None else 3, self.side(), self.side())


@dataclass
@defaults_from(DigitsDataModule)
class DigitsSchema(DatasetSchema):
    """scikit-learn's embedded 8x8 digits (1797 images, 10 classes), stratified seeded split."""

    _target_: str = target_of(DigitsDataModule)
    test_fraction: float
    split_seed: int

    def check_variant(self) -> None:
        require_interval("test_fraction", self.test_fraction, 0.0, 1.0, low_open=True, high_open=True)
        require_seed("split_seed", self.split_seed)


@dataclass
@defaults_from(CifarDataModule)
class CifarSchema(DatasetSchema):
    """CIFAR-10/100 (torchvision's python version) read from a local folder without running code;
    ``verify``: MD5 of every file against the official archive's (false: read another file of that
    layout, still without running code: only arrays and plain containers are rebuilt); downloads
    only if ``download: true``."""

    _target_: str = target_of(CifarDataModule)
    variant: CifarVariant
    root: str = MISSING
    download: bool
    verify: bool


@dataclass
@defaults_from(ImageNetDataModule)
class ImageNetSchema(ResizedDatasetSchema):
    """ImageNet from an ImageFolder-style folder ``<root>/<split>/<wnid>/<image>`` (any subset of the
    1000 classes; labels are the standard indices), resized to ``resize`` then center-cropped to
    ``crop``. ``train_split``: a folder in the same layout for training tasks (null: none)."""

    _target_: str = target_of(ImageNetDataModule)
    root: str = MISSING
    split: str
    train_split: str | None
    resize: int
    crop: int

    def check_variant(self) -> None:
        require_at_least("crop", self.crop, 1)
        if self.resize < self.crop:
            from advpure.errors import ConfigError

            raise ConfigError(
                "resize", f"{self.resize} is smaller than crop={self.crop}", "set resize >= crop (standard: 256, 224)"
            )

    def side(self) -> int:
        return int(self.crop)


@dataclass
@defaults_from(CelebAHQDataModule)
class CelebAHQSchema(ResizedDatasetSchema):
    """CelebA-HQ images ``<root>/<images>/`` labelled by one binary ``attribute`` of the CelebA-format
    ``<root>/<attributes_file>`` (1: present, 0: absent), resized to ``image_size``; a seeded split
    holds out ``test_fraction`` of the images."""

    _target_: str = target_of(CelebAHQDataModule)
    root: str = MISSING
    attribute: str
    images: str
    attributes_file: str
    image_size: int
    test_fraction: float
    split_seed: int

    def check_variant(self) -> None:
        require_at_least("image_size", self.image_size, 1)
        require_interval("test_fraction", self.test_fraction, 0.0, 1.0, low_open=True, high_open=True)
        require_seed("split_seed", self.split_seed)

    def side(self) -> int:
        return int(self.image_size)


@dataclass
@defaults_from(SvhnDataModule)
class SvhnSchema(DatasetSchema):
    """torchvision SVHN (32x32, digits 0-9) from a local folder holding ``train_32x32.mat`` and
    ``test_32x32.mat`` (``extra_32x32.mat`` too with ``use_extra``); downloads only if ``download: true``;
    ``verify`` checks the files' published MD5 at start-up."""

    _target_: str = target_of(SvhnDataModule)
    root: str = MISSING
    use_extra: bool
    download: bool
    verify: bool


DATASET_SCHEMAS: dict[str, type[DatasetSchema]] = {
    "digits": DigitsSchema,
    "cifar": CifarSchema,
    "imagenet": ImageNetSchema,
    "celebahq": CelebAHQSchema,
    "svhn": SvhnSchema,
}
