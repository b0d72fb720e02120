"""SVHN (cropped digits, 32x32) from a local torchvision folder; downloading only when asked."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torchvision
from torch.utils.data import ConcatDataset
from torchvision.datasets.utils import check_integrity
from torchvision.transforms import ToTensor
from typing_extensions import Unpack

from advpure.config.enums import Norm
from advpure.data.base import ImageDataModule, LoaderOptions
from advpure.data.folders import require_dir
from advpure.errors import DataError

LAYOUT = "<root>/train_32x32.mat and <root>/test_32x32.mat (and extra_32x32.mat), as torchvision's SVHN downloads them"


class _LocalSVHN(torchvision.datasets.SVHN):
    """torchvision's SVHN reader; the files' checksums are checked once, at the data module's construction."""

    def _check_integrity(self) -> bool:
        return (Path(self.root) / self.filename).is_file()


class SvhnDataModule(ImageDataModule):
    """torchvision SVHN, images (B, 3, 32, 32) in [0, 1], labels 0-9 (torchvision maps SVHN's 10 to 0).

    Args:
        root: folder holding ``train_32x32.mat`` and ``test_32x32.mat``.
        use_extra: train on ``train`` + ``extra`` (needs ``extra_32x32.mat``).
        download: fetch the files into ``root`` if missing (needs network).
        verify: check each file's MD5 against torchvision's at construction (a damaged download
            fails before work starts; ``False`` accepts other files in the same layout).

    Raises:
        DataError: at construction, if ``root`` lacks a needed file and ``download`` is false,
            or (``verify``) a file's checksum differs from the published one.
    """

    num_classes = 10
    image_shape = (3, 32, 32)
    # The CIFAR-10 budgets, which RobustBench-style SVHN evaluations (e.g. Gowal et al. 2020,
    # Rebuffi et al. 2021) use for these 32x32 images.
    standard_eps: ClassVar[dict[Norm, float]] = {Norm.Linf: 8 / 255, Norm.L2: 0.5}

    def __init__(
        self,
        root: str,
        use_extra: bool = False,
        download: bool = False,
        verify: bool = True,
        **loader: Unpack[LoaderOptions],
    ) -> None:
        super().__init__(**loader)
        self.root = Path(root).expanduser()
        self.use_extra = use_extra
        self.download = download
        self.train_splits = ["train", "extra"] if use_extra else ["train"]
        if not download:
            require_dir(
                self.root,
                what="SVHN folder",
                layout=LAYOUT,
                fix="set dataset.root=/path/to/svhn, or dataset.download=true on a machine with network access",
            )
            missing = [f"{split}_32x32.mat" for split in ["test", *self.train_splits]]
            missing = [name for name in missing if not (self.root / name).is_file()]
            if missing:
                raise DataError(
                    f"SVHN folder {self.root} lacks {missing} (expected {LAYOUT}). Fix: set dataset.root, "
                    f"or dataset.download=true on a machine with network access"
                )
            if verify:
                for split in ["test", *self.train_splits]:
                    _, filename, md5 = torchvision.datasets.SVHN.split_list[split]
                    if not check_integrity(str(self.root / filename), md5):
                        raise DataError(
                            f"SVHN file {self.root / filename} does not have the published MD5 {md5} (a damaged or "
                            f"different file). Fix: download it again, or set dataset.verify=false to read it anyway"
                        )

    def prepare_data(self) -> None:
        if self.download:
            for split in ["test", *self.train_splits]:
                torchvision.datasets.SVHN(str(self.root), split=split, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self.test_set is not None:
            return
        self.test_set = _LocalSVHN(str(self.root), split="test", transform=ToTensor())
        train = [_LocalSVHN(str(self.root), split=s, transform=ToTensor()) for s in self.train_splits]
        self.train_set = train[0] if len(train) == 1 else ConcatDataset(train)
