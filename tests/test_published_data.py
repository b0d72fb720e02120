"""ImageNet, CelebA-HQ and SVHN data modules on tiny stand-in folders the tests write."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from advpure.config.enums import Norm
from advpure.data.imagenet import imagenet_wnids
from advpure.errors import ConfigError, DataError
from advpure.instantiate import build
from tests.compose_cache import make_fast_compose

fast_compose = pytest.fixture(scope="module")(make_fast_compose)

# standard ILSVRC-2012 indices: 0 tench, 281 tabby cat, 999 toilet tissue
WNIDS = {"n01440764": 0, "n02123045": 281, "n15075141": 999}


def write_image(path, size=(40, 30), seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def build_dataset(fast_compose, *overrides: str):
    datamodule = build(fast_compose(*overrides).dataset, key="dataset")
    datamodule.setup()
    return datamodule


# ---------------------------------------------------------------------------------- ImageNet


def test_wnid_list_is_the_standard_class_order():
    wnids = imagenet_wnids()
    assert len(wnids) == len(set(wnids)) == 1000
    assert list(wnids) == sorted(wnids)
    assert all(wnids[index] == wnid for wnid, index in WNIDS.items())


def test_imagenet_subset_folder_keeps_the_standard_indices(fast_compose, tmp_path):
    for n, wnid in enumerate(sorted(WNIDS)):
        write_image(tmp_path / "val" / wnid / f"ILSVRC2012_val_{n:08d}.JPEG", seed=n)
    write_image(tmp_path / "val" / "n02123045" / "second.png", size=(20, 50), seed=9)
    datamodule = build_dataset(
        fast_compose, "dataset=imagenet", f"dataset.root={tmp_path}", "dataset.resize=16", "dataset.crop=12"
    )
    assert (datamodule.num_classes, datamodule.image_shape) == (1000, (3, 12, 12))
    assert sorted(datamodule.test_set.targets) == [0, 281, 281, 999]
    x, y = next(iter(datamodule.test_dataloader()))
    assert x.shape == (4, 3, 12, 12) and x.dtype == torch.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert y.tolist() == datamodule.test_set.targets and y.dtype == torch.int64
    assert datamodule.standard_eps == {Norm.Linf: 4 / 255, Norm.L2: 3.0}
    with pytest.raises(DataError, match=r"dataset\.train_split=train"):
        datamodule.train_dataloader()


def test_imagenet_default_is_resize_256_center_crop_224(fast_compose, tmp_path):
    write_image(tmp_path / "val" / "n01440764" / "a.JPEG", size=(300, 260))
    datamodule = build_dataset(fast_compose, "dataset=imagenet", f"dataset.root={tmp_path}")
    x, y = datamodule.test_set[0]
    assert (tuple(x.shape), y, datamodule.image_shape) == ((3, 224, 224), 0, (3, 224, 224))


def test_imagenet_layout_errors_name_the_folder_and_the_layout(fast_compose, tmp_path):
    def error_for(root):
        with pytest.raises(DataError) as error:
            build(fast_compose("dataset=imagenet", f"dataset.root={root}").dataset, key="dataset")
        message = str(error.value)
        assert "<wnid>" in message and "dataset.root" in message
        return message

    message = error_for(tmp_path / "nowhere")
    assert "not found" in message and str(tmp_path / "nowhere") in message
    (tmp_path / "empty" / "val").mkdir(parents=True)
    assert "no images" in error_for(tmp_path / "empty")
    write_image(tmp_path / "flat" / "val" / "ILSVRC2012_val_00000001.JPEG")
    assert "not in class folders" in error_for(tmp_path / "flat")
    write_image(tmp_path / "named" / "val" / "tench" / "a.JPEG")
    assert "['tench']" in error_for(tmp_path / "named")
    with pytest.raises(ConfigError, match=r"dataset\.resize"):
        from advpure.config.validate import validate_config

        validate_config(fast_compose("dataset=imagenet", "dataset.resize=100"))


# --------------------------------------------------------------------------------- CelebA-HQ


ATTRIBUTES = "5_o_Clock_Shadow Eyeglasses Smiling"
ROWS = {"0.jpg": (-1, 1, 1), "1.jpg": (1, -1, -1), "2.jpg": (-1, -1, 1), "3.jpg": (1, 1, -1)}


def write_celebahq(root, rows=ROWS) -> None:
    lines = [str(len(rows)), ATTRIBUTES] + [f"{name}  " + " ".join(map(str, values)) for name, values in rows.items()]
    root.mkdir(parents=True, exist_ok=True)
    (root / "CelebAMask-HQ-attribute-anno.txt").write_text("\n".join(lines) + "\n")
    for n, name in enumerate(ROWS):
        write_image(root / "CelebA-HQ-img" / name, size=(24, 24), seed=n)


@pytest.mark.parametrize(("attribute", "column"), [("Smiling", 2), ("Eyeglasses", 1)])
def test_celebahq_labels_are_the_chosen_binary_attribute(fast_compose, tmp_path, attribute, column):
    write_celebahq(tmp_path)
    datamodule = build_dataset(
        fast_compose,
        "dataset=celebahq",
        f"dataset.root={tmp_path}",
        f"dataset.attribute={attribute}",
        "dataset.image_size=16",
        "dataset.test_fraction=0.5",
    )
    assert (datamodule.num_classes, datamodule.image_shape) == (2, (3, 16, 16))
    items = datamodule.test_set.items + datamodule.train_set.items
    assert len(datamodule.test_set) == 2 and sorted(path.name for path, _ in items) == sorted(ROWS)
    assert all(label == int(ROWS[path.name][column] > 0) for path, label in items)
    x, y = datamodule.test_set[0]
    assert x.shape == (3, 16, 16) and x.min() >= 0.0 and x.max() <= 1.0 and y in (0, 1)
    assert datamodule.standard_eps[Norm.Linf] == 16 / 255
    with pytest.raises(ConfigError, match=r"attack\.eps"):
        datamodule.standard_eps[Norm.L2]


def test_celebahq_errors_name_the_path_and_the_fix(fast_compose, tmp_path):
    def build_at(root, *extra):
        return build(fast_compose("dataset=celebahq", f"dataset.root={root}", *extra).dataset, key="dataset")

    with pytest.raises(DataError, match=r"CelebA-HQ root not found: .*nowhere"):
        build_at(tmp_path / "nowhere")
    write_celebahq(tmp_path / "ok")
    with pytest.raises(ConfigError, match="Eyeglasses") as error:
        build_at(tmp_path / "ok", "dataset.attribute=Glasses")
    assert error.value.key == "dataset.attribute"
    with pytest.raises(DataError, match=r"attribute file not found: .*other\.txt.*dataset\.attributes_file"):
        build_at(tmp_path / "ok", "dataset.attributes_file=other.txt")
    write_celebahq(tmp_path / "absent", {**ROWS, "9.jpg": (1, 1, 1)})
    with pytest.raises(DataError, match=r"1 images listed in .* are not in .*CelebA-HQ-img .*\['9\.jpg'\]"):
        build_at(tmp_path / "absent")
    write_celebahq(tmp_path / "short", {**ROWS, "1.jpg": (1, 1)})
    with pytest.raises(DataError, match=r"line 4: 2 values for 3 attributes"):
        build_at(tmp_path / "short")


# -------------------------------------------------------------------------------------- SVHN


def test_svhn_reads_torchvision_mat_files(fast_compose, tmp_path):
    from scipy.io import savemat

    for split, labels in {"train": [10, 1, 2], "test": [3, 10]}.items():
        images = np.random.RandomState(0).randint(0, 256, (32, 32, 3, len(labels)), dtype=np.uint8)
        savemat(tmp_path / f"{split}_32x32.mat", {"X": images, "y": np.array(labels).reshape(-1, 1)})
    with pytest.raises(DataError, match=r"test_32x32\.mat does not have the published MD5.*dataset\.verify=false"):
        build(fast_compose("dataset=svhn", f"dataset.root={tmp_path}").dataset, key="dataset")
    datamodule = build_dataset(fast_compose, "dataset=svhn", f"dataset.root={tmp_path}", "dataset.verify=false")
    assert (datamodule.num_classes, datamodule.image_shape) == (10, (3, 32, 32))
    x, y = next(iter(datamodule.test_dataloader()))
    assert x.shape == (2, 3, 32, 32) and x.min() >= 0.0 and x.max() <= 1.0
    assert y.tolist() == [3, 0]  # SVHN's label 10 is the digit 0
    assert [datamodule.train_set[i][1] for i in range(3)] == [0, 1, 2]
    with pytest.raises(DataError, match=r"lacks \['extra_32x32\.mat'\].*dataset\.download=true"):
        build(fast_compose("dataset=svhn", f"dataset.root={tmp_path}", "dataset.use_extra=true").dataset, key="dataset")
    with pytest.raises(DataError, match=r"SVHN folder not found: .*nowhere"):
        build(fast_compose("dataset=svhn", f"dataset.root={tmp_path / 'nowhere'}").dataset, key="dataset")
