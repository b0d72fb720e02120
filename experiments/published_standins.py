"""Stand-in files in the published formats, to run the published-model commands end to end here.

This machine has neither ImageNet/CIFAR-10 nor the released weights. This script writes files in
their layouts, with random weights and random images, so the exact commands a researcher runs
with the real files can be run (and tested) on a CPU:

- ImageNet: a validation folder ``<wnid>/<image>`` (2 random 300x260 images, each in the folder of
  the class the stand-in classifier predicts for it, so that the attacks have work to do);
  torchvision's ResNet-50 state dict (``torch.save``, full size); guided-diffusion's 256x256
  unconditional U-Net state dict (``torch.save``, the published layout). The published U-Net has
  552.8M parameters; by default the stand-in keeps its architecture and flags but uses
  ``num_channels=32`` (``--full-size`` writes the 2.2 GB published size), so the command gets
  ``diffusion.net.num_channels=32``.
- CIFAR-10: torchvision's ``cifar-10-batches-py`` (the python version, 2 images per batch,
  labelled by the stand-in classifier's predictions; not the official files, hence
  ``dataset.verify=false``); a
  RobustBench-layout WRN-28-10 state dict (``{"state_dict": {"module.*": ...}}``); the DDPM
  CIFAR-10 U-Net as a diffusers folder (``save_pretrained``, the google/ddpm-cifar10-32 config).

Usage::

    python experiments/published_standins.py <folder> [--full-size]

It prints the two commands (2 images, a reduced attack so that they finish in minutes on a CPU).
The numbers they produce are meaningless (random weights); what they show is that every loader,
the 224 <-> 256 resizing and the attack run through.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
STANDIN_GUIDED_CHANNELS = 32
# A reduced attack and purification budget: 2 images must finish in minutes on 2 CPU cores.
QUICK = (
    "task.n_images=2",
    "task.batch_size=2",
    "task.n_vote=1",
    "task.n_worst=1",
    "task.n_panel=2",
    "attack.n_iter=1",
    "attack.n_eot=1",
    "logger=none",
)


def write_imagenet(folder: Path, full_size: bool = False) -> list[str]:
    """ImageNet stand-ins under ``folder``; returns the run.py overrides that use them."""
    from torchvision import transforms
    from torchvision.models import resnet50

    from advpure.data.imagenet import imagenet_wnids
    from advpure.diffusion.guided import GuidedEpsilon

    torch.manual_seed(0)
    classifier = resnet50(weights=None).eval()
    torch.save(classifier.state_dict(), folder / "resnet50-standin.pth")
    # Each image goes into the folder of the class the stand-in ResNet-50 predicts for it, so the
    # clean images are classified correctly and the attacks have something to attack.
    generator = np.random.default_rng(0)
    preprocess = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    normalize = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    for i in range(2):
        image = Image.fromarray(generator.integers(0, 256, size=(260, 300, 3), dtype=np.uint8))
        with torch.no_grad():
            predicted = int(classifier(normalize(preprocess(image))[None]).argmax())
        wnid = imagenet_wnids()[predicted]
        (folder / "imagenet" / "val" / wnid).mkdir(parents=True, exist_ok=True)
        image.save(folder / "imagenet" / "val" / wnid / f"ILSVRC2012_val_{i:08d}.png")
    from advpure.diffusion.guided import PUBLISHED_IMAGENET256_NET

    net = dict(PUBLISHED_IMAGENET256_NET)
    if not full_size:
        net["num_channels"] = STANDIN_GUIDED_CHANNELS
    torch.save(GuidedEpsilon(**net).unet.state_dict(), folder / "256x256_diffusion_uncond-standin.pt")
    overrides = [
        "dataset=imagenet",
        f"dataset.root={folder / 'imagenet'}",
        "classifier=resnet50",
        f"classifier.weights={folder / 'resnet50-standin.pth'}",
        "diffusion=guided_imagenet256",
        f"diffusion.weights={folder / '256x256_diffusion_uncond-standin.pt'}",
        "diffusion.precision=fp32",
        "purifier=diffpure",
        "purifier.t_star=0.15",
        "attack=autoattack",
    ]
    # 3 solver steps at t* = 0.15 instead of 150: a 256x256 U-Net call takes seconds on a CPU
    overrides.append("purifier.dt=0.05")
    return overrides + ([] if full_size else [f"diffusion.net.num_channels={STANDIN_GUIDED_CHANNELS}"])


def write_cifar10(folder: Path) -> list[str]:
    """CIFAR-10 stand-ins under ``folder``; returns the run.py overrides that use them."""
    from diffusers import UNet2DModel

    from advpure.models.wide_resnet import WideResNet

    torch.manual_seed(0)
    classifier = WideResNet(depth=28, widen_factor=10, num_classes=10).eval()
    state = classifier.state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, folder / "Standard-standin.pt")
    batches = folder / "cifar10" / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:  # torchvision's layout: pickled dicts of uint8 rows (3x32x32) and labels
        data = generator.integers(0, 256, size=(2, 3072), dtype=np.uint8)
        with torch.no_grad():
            labels = classifier(torch.from_numpy(data).float().div(255).view(-1, 3, 32, 32)).argmax(1).tolist()
        (batches / name).write_bytes(pickle.dumps({"data": data, "labels": labels}))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    (batches / "batches.meta").write_bytes(pickle.dumps(meta))
    import yaml

    net = yaml.safe_load((ROOT / "conf" / "diffusion" / "ddpm_cifar10.yaml").read_text())["net"]
    net.pop("_target_")
    tuples = ("down_block_types", "up_block_types", "block_out_channels")
    UNet2DModel(**{k: tuple(v) if k in tuples else v for k, v in net.items()}).save_pretrained(
        folder / "ddpm-cifar10-32-standin"
    )
    return [
        "dataset=cifar10",
        f"dataset.root={folder / 'cifar10'}",
        "dataset.verify=false",  # not the official files (their MD5 differs)
        "classifier=wrn28_10",
        f"classifier.weights={folder / 'Standard-standin.pt'}",
        "diffusion=ddpm_cifar10",
        f"diffusion.pretrained={folder / 'ddpm-cifar10-32-standin'}",
        "purifier=diffpure",
        "purifier.t_star=0.1",
        "attack=autoattack",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--full-size", action="store_true", help="the published 552.8M-parameter U-Net (2.2 GB)")
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    for name, overrides in (
        ("ImageNet", write_imagenet(args.folder, args.full_size)),
        ("CIFAR-10", write_cifar10(args.folder)),
    ):
        print(f"# {name}\npython run.py " + " ".join([*overrides, *QUICK]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
