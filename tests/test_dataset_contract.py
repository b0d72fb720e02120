"""The dataset contract (:mod:`advpure.data`), checked on every option of ``conf/dataset/`` as
run.py composes it: a LightningDataModule whose test images are NCHW float32 in [0, 1] of its
``image_shape``, whose labels are int64 in [0, ``num_classes``), and whose ``standard_eps`` holds
the threat model's budget per norm (Linf always).

``digits`` is read for real (scikit-learn ships it). The other options read published files this
machine does not have; ``experiments/published_standins.py`` writes full-size stand-in models
with its data (minutes), so each test here writes a few tiny files in the option's own layout
(torchvision's CIFAR pickles and SVHN ``.mat`` files, ImageNet's ``val/<wnid>/`` folders,
CelebA-HQ's image folder and attribute file) and points ``dataset.root`` at them, with
``dataset.verify=false`` where the loader checks the official files' MD5.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch.utils.data import TensorDataset

from advpure.config.enums import Norm
from advpure.data.base import ImageDataModule
from advpure.data.digits import DigitsDataModule
from advpure.data.imagenet import imagenet_wnids
from advpure.instantiate import build
from tests.compose_cache import make_fast_compose
from tests.conftest import group_options

fast_compose = pytest.fixture(scope="module")(make_fast_compose)


def _pixels(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def write_cifar(root: Path, variant: str) -> list[str]:
    """torchvision's python layout: pickled dicts of uint8 rows (3072) and labels, 2 per file."""
    dataset = torchvision.datasets.CIFAR10 if variant == "cifar10" else torchvision.datasets.CIFAR100
    label_key, classes = ("labels", 10) if variant == "cifar10" else ("fine_labels", 100)
    folder = root / dataset.base_folder
    folder.mkdir(parents=True)
    for n, (name, _md5) in enumerate(dataset.train_list + dataset.test_list):
        batch = {"data": _pixels((2, 3072), n), label_key: [n % classes, classes - 1]}
        (folder / name).write_bytes(pickle.dumps(batch))
    return [f"dataset.root={root}", "dataset.verify=false"]


def write_cifar10(root: Path) -> list[str]:
    return write_cifar(root, "cifar10")


def write_cifar100(root: Path) -> list[str]:
    return write_cifar(root, "cifar100")


def write_svhn(root: Path) -> list[str]:
    """torchvision's ``{train,test}_32x32.mat``: X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0."""
    from scipy.io import savemat

    root.mkdir(parents=True)
    for split, labels in {"train": [10, 1, 2], "test": [3, 10, 9]}.items():
        savemat(root / f"{split}_32x32.mat", {"X": _pixels((32, 32, 3, len(labels)), 0), "y": np.array([labels]).T})
    return [f"dataset.root={root}", "dataset.verify=false"]


def write_imagenet(root: Path) -> list[str]:
    """``val/<wnid>/<image>``: three JPEGs of odd sizes in three classes."""
    for n, wnid in enumerate(imagenet_wnids()[i] for i in (0, 281, 999)):
        (root / "val" / wnid).mkdir(parents=True)
        Image.fromarray(_pixels((30 + n, 40, 3), n)).save(root / "val" / wnid / f"ILSVRC2012_val_{n:08d}.JPEG")
    return [f"dataset.root={root}"]


def write_celebahq(root: Path) -> list[str]:
    """``CelebA-HQ-img/<n>.jpg`` and ``CelebAMask-HQ-attribute-anno.txt`` (count, names, one row per image)."""
    (root / "CelebA-HQ-img").mkdir(parents=True)
    rows = {f"{n}.jpg": (1 if n % 2 else -1, -1 if n % 3 else 1) for n in range(4)}
    lines = [str(len(rows)), "Eyeglasses Smiling", *(f"{name}  {a} {b}" for name, (a, b) in rows.items())]
    (root / "CelebAMask-HQ-attribute-anno.txt").write_text("\n".join(lines) + "\n")
    for n, name in enumerate(rows):
        Image.fromarray(_pixels((24, 24, 3), n)).save(root / "CelebA-HQ-img" / name)
    return [f"dataset.root={root}", "dataset.test_fraction=0.5"]


STAND_INS: dict[str, Callable[[Path], list[str]]] = {
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "svhn": write_svhn,
    "imagenet": write_imagenet,
    "celebahq": write_celebahq,
}
READ_FOR_REAL = ("digits",)


def test_every_option_is_checked_here():
    assert set(group_options("dataset")) == set(STAND_INS) | set(READ_FOR_REAL)


def check_data_contract(datamodule: ImageDataModule) -> None:
    """After ``setup``: test batches NCHW float32 in [0, 1] of ``image_shape``, int64 labels in
    [0, ``num_classes``), items of the same, and a positive Linf budget below 1 in ``standard_eps``."""
    shape, classes = tuple(datamodule.image_shape), int(datamodule.num_classes)
    assert len(shape) == 3 and all(isinstance(side, int) and side > 0 for side in shape) and classes >= 2

    x, y = next(iter(datamodule.test_dataloader()))
    assert x.dtype == torch.float32 and x.ndim == 4 and tuple(x.shape[1:]) == shape and x.is_contiguous()
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
    assert int(y.min()) >= 0 and int(y.max()) < classes
    image, label = datamodule.test_set[0]
    assert tuple(image.shape) == shape and image.dtype == torch.float32
    assert isinstance(label, int) or (torch.is_tensor(label) and label.ndim == 0 and not label.is_floating_point())

    budgets = dict(datamodule.standard_eps)
    assert Norm.Linf in budgets and set(budgets) <= set(Norm)
    assert all(isinstance(eps, float) and eps > 0.0 for eps in budgets.values())
    assert budgets[Norm.Linf] < 1.0  # an Linf budget is a fraction of the [0, 1] range


@pytest.mark.parametrize("option", group_options("dataset"))
def test_test_images_labels_and_budgets_follow_the_contract(option, fast_compose, tmp_path):
    overrides = STAND_INS[option](tmp_path / option) if option in STAND_INS else []
    datamodule = build(fast_compose(f"dataset={option}", "dataset.batch_size=4", *overrides).dataset, key="dataset")
    assert isinstance(datamodule, ImageDataModule)
    datamodule.setup("test")
    check_data_contract(datamodule)


def test_the_check_catches_pixels_in_0_255_and_float_labels():
    """The check can fail: the usual slips (uint8-range pixels, float labels) are caught."""

    class Scaled(DigitsDataModule):
        def __init__(self, scale: float, label_dtype: torch.dtype) -> None:
            super().__init__(batch_size=4)
            self.scale, self.label_dtype = scale, label_dtype

        def setup(self, stage: str | None = None) -> None:
            super().setup(stage)
            x, y = self.test_set.tensors
            self.test_set = TensorDataset(x * self.scale, y.to(self.label_dtype))

    correct = Scaled(1.0, torch.int64)
    correct.setup("test")
    check_data_contract(correct)
    for scale, label_dtype in ((255.0, torch.int64), (1.0, torch.float32)):
        broken = Scaled(scale, label_dtype)
        broken.setup("test")
        with pytest.raises(AssertionError):
            check_data_contract(broken)
