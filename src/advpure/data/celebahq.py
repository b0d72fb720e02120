"""CelebA-HQ labelled by one binary attribute (DiffPure's CelebA-HQ setting: attribute classifiers)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from torchvision import transforms
from typing_extensions import Unpack

from advpure.config.enums import Norm
from advpure.data.base import ImageDataModule, LoaderOptions
from advpure.data.folders import ImageListDataset, require_dir, require_file
from advpure.errors import ConfigError, DataError

LAYOUT = (
    "<root>/<images>/ with the image files and <root>/<attributes_file> in CelebA's format: a line with the "
    "image count, a line of attribute names, then one line per image: <file name> and one 1/-1 per attribute "
    "(CelebAMask-HQ ships CelebA-HQ-img/ and CelebAMask-HQ-attribute-anno.txt so)"
)


class _Budgets(dict):
    """Standard budgets; a norm without one asks for ``attack.eps`` instead of failing with a KeyError."""

    def __missing__(self, norm: Norm) -> float:
        raise ConfigError(
            "attack.eps", f"CelebA-HQ has no standard {Norm(norm).value} budget", "set attack.eps=<budget>"
        )


def read_attribute_file(path: Path) -> tuple[list[str], list[tuple[str, list[int]]]]:
    """``(attribute names, [(file name, values)])`` of a CelebA-format attribute file; values are the
    file's integers (1 present; -1 or 0 absent). Commas count as spaces (the CSV variant also reads)."""
    lines = [line.replace(",", " ").split() for line in path.read_text().splitlines()]
    lines = [tokens for tokens in lines if tokens]
    if lines and len(lines[0]) == 1 and lines[0][0].isdigit():
        lines = lines[1:]  # the image count
    if len(lines) < 2:
        raise DataError(f"attribute file {path} holds no images (expected {LAYOUT}). Fix: set dataset.attributes_file")
    names = lines[0]
    if len(lines[1]) == len(names):  # a CSV-style header names the file column too
        names = names[1:]
    rows: list[tuple[str, list[int]]] = []
    for number, tokens in enumerate(lines[1:], start=3):
        try:
            if len(tokens) != len(names) + 1:
                raise ValueError(f"{len(tokens) - 1} values for {len(names)} attributes")
            rows.append((tokens[0], [int(value) for value in tokens[1:]]))
        except ValueError as error:
            raise DataError(
                f"attribute file {path}, line {number}: {error} (expected {LAYOUT}). Fix: set dataset.attributes_file"
            ) from None
    return names, rows


class CelebAHQDataModule(ImageDataModule):
    """CelebA-HQ images (B, 3, image_size, image_size) in [0, 1]; label 1 where ``attribute`` is present.

    Args:
        root: folder holding ``images`` and ``attributes_file``.
        attribute: a column of the attribute file, e.g. ``Smiling`` or ``Eyeglasses`` (DiffPure's two).
        images: the image folder under ``root``.
        attributes_file: the attribute file under ``root`` (CelebA format).
        image_size: side the images are resized (short side) and center-cropped to.
        test_fraction, split_seed: a seeded random split; the test set holds ``test_fraction``.

    Raises:
        DataError: at construction, if the folder or file is missing, the file is malformed, or
            images it lists are absent. ``ConfigError`` (``dataset.attribute``) for an unknown attribute.
    """

    num_classes = 2
    # DiffPure (Nie et al. 2022, Table 5) attacks its CelebA-HQ attribute classifiers at Linf 16/255;
    # no published DBP evaluation sets an L2 budget for CelebA-HQ, so L2 needs attack.eps.
    standard_eps: ClassVar[dict[Norm, float]] = _Budgets({Norm.Linf: 16 / 255})

    def __init__(
        self,
        root: str,
        attribute: str = "Smiling",
        images: str = "CelebA-HQ-img",
        attributes_file: str = "CelebAMask-HQ-attribute-anno.txt",
        image_size: int = 256,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        **loader: Unpack[LoaderOptions],
    ) -> None:
        super().__init__(**loader)
        self.root = Path(root).expanduser()
        self.attribute = attribute
        self.image_shape = (3, image_size, image_size)
        self.transform = transforms.Compose(
            [transforms.Resize(image_size), transforms.CenterCrop(image_size), transforms.ToTensor()]
        )
        require_dir(self.root, what="CelebA-HQ root", layout=LAYOUT, fix="set dataset.root=/path/to/celebahq")
        image_dir = require_dir(
            self.root / images, what="CelebA-HQ image folder", layout=LAYOUT, fix="set dataset.images"
        )
        attr_path = require_file(
            self.root / attributes_file,
            what="CelebA-HQ attribute file",
            layout=LAYOUT,
            fix="set dataset.attributes_file",
        )
        names, rows = read_attribute_file(attr_path)
        if attribute not in names:
            raise ConfigError(
                "dataset.attribute", f"{attribute!r} is not a column of {attr_path}", f"use one of {names}"
            )
        column = names.index(attribute)
        present = {p.name for p in image_dir.iterdir()}
        absent = [name for name, _ in rows if name not in present]
        if absent:
            raise DataError(
                f"{len(absent)} images listed in {attr_path} are not in {image_dir} (e.g. {absent[:3]}; expected "
                f"{LAYOUT}). Fix: set dataset.images to the folder that holds them"
            )
        items = [(image_dir / name, int(values[column] > 0)) for name, values in rows]
        order = np.random.RandomState(split_seed).permutation(len(items))
        n_test = max(1, round(test_fraction * len(items)))
        self.test_items = [items[i] for i in sorted(order[:n_test])]
        self.train_items = [items[i] for i in sorted(order[n_test:])]

    def setup(self, stage: str | None = None) -> None:
        if self.test_set is not None:
            return
        self.test_set = ImageListDataset(self.test_items, self.transform)
        self.train_set = ImageListDataset(self.train_items, self.transform)
