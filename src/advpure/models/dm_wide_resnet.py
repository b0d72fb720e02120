"""DeepMind's WideResNet (Gowal et al. 2020, Rebuffi et al. 2021) with RobustBench's parameter names.

RobustBench serves its CIFAR WRN-70-16 entries (``Gowal2020Uncovering_70_16*``,
``Rebuffi2021Fixing_70_16_cutmix_*``, ``Wang2023Better_WRN-70-16``) in this architecture
(``robustbench/model_zoo/architectures/dm_wide_resnet.py``). State-dict keys:

    init_conv.weight
    layer.{g}.block.{b}.{batchnorm_0, conv_0, batchnorm_1, conv_1}.*     g = 0, 1, 2
    layer.{g}.block.0.shortcut.weight                                      (where the width changes)
    batchnorm.*, logits.{weight, bias}

Differences from the ``WideResNet`` of :mod:`advpure.models.wide_resnet`: convolutions padded
TensorFlow-``SAME`` style by hand (``(1, 1, 1, 1)``, or ``(0, 1, 0, 1)`` on stride 2), swish
activations in the published models, BatchNorm momentum, and a shortcut that reads the
pre-activated input. RobustBench keeps the input normalization as ``mean``/``std`` buffers (in
newer versions persistent, so some files hold them); here they are non-persistent buffers set
from the config, and :func:`advpure.models.classifier_weights.load_classifier_weights` checks a
file's ``mean``/``std`` against them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from advpure.models.normalize import Normalize

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


class Swish(nn.Module):
    """x * sigmoid(x) (RobustBench's custom-autograd ``Swish``, computed the same way; plain autograd)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


ACTIVATIONS: dict[str, type[nn.Module]] = {"swish": Swish, "relu": nn.ReLU}


def _same_pad(x: torch.Tensor, stride: int) -> torch.Tensor:
    """TensorFlow ``SAME`` padding of a 3x3 convolution, as the published weights were trained."""
    return F.pad(x, (1, 1, 1, 1)) if stride == 1 else F.pad(x, (0, 1, 0, 1))


class DMBlock(nn.Module):
    """Pre-activation block: act(BN(x)) -> conv3x3(stride) -> act(BN) -> conv3x3, plus a 1x1
    shortcut of act(BN(x)) where the width changes (identity otherwise)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, activation: type[nn.Module]) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"DMBlock stride must be 1 or 2, got {stride}")
        self.batchnorm_0 = nn.BatchNorm2d(in_planes, momentum=0.01)
        self.relu_0 = activation()
        self.conv_0 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes, momentum=0.01)
        self.relu_1 = activation()
        self.conv_1 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.has_shortcut = in_planes != out_planes
        self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False) if self.has_shortcut else None
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu_0(self.batchnorm_0(x))
        out = self.conv_0(_same_pad(pre, self.stride))
        out = self.conv_1(self.relu_1(self.batchnorm_1(out)))
        shortcut = self.shortcut(pre) if self.shortcut is not None else x
        return shortcut + out


class DMBlockGroup(nn.Module):
    """``n_blocks`` DMBlocks under ``block``; the first changes width and stride."""

    def __init__(self, n_blocks: int, in_planes: int, out_planes: int, stride: int, activation: type[nn.Module]):
        super().__init__()
        self.block = nn.Sequential(
            *[
                DMBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, activation)
                for i in range(n_blocks)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DMWideResNet(nn.Module):
    """WRN-depth-width in DeepMind's layout (RobustBench's ``DMWideResNet``).

    Args:
        depth: 6 n + 4 (70 for WRN-70-16).
        width: widening factor (16 for WRN-70-16).
        num_classes: output classes.
        activation: ``swish`` (the published WRN-70-16 models) or ``relu``.
        mean, std: per-channel input normalization applied inside (RobustBench's values for the
            model; CIFAR-10's by default).
        padding: zero padding added around the input first (0 in the published CIFAR models).
        in_channels: image channels.

    Shapes: x (B, in_channels, 32, 32) in [0, 1] -> logits (B, num_classes); ``penultimate(x)``:
    (B, 64 width) pooled features (an 8x8 average pool, as published: global on 32x32 inputs).
    """

    def __init__(
        self,
        depth: int = 70,
        width: int = 16,
        num_classes: int = 10,
        activation: str = "swish",
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
        padding: int = 0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"DMWideResNet depth must be 6n + 4, got {depth}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"DMWideResNet activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        act = ACTIVATIONS[activation]
        n_blocks = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.normalize = Normalize(mean, std)
        self.padding = padding
        self.init_conv = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.layer = nn.Sequential(
            DMBlockGroup(n_blocks, widths[0], widths[1], 1, act),
            DMBlockGroup(n_blocks, widths[1], widths[2], 2, act),
            DMBlockGroup(n_blocks, widths[2], widths[3], 2, act),
        )
        self.batchnorm = nn.BatchNorm2d(widths[3], momentum=0.01)
        self.relu = act()
        self.logits = nn.Linear(widths[3], num_classes)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in [0, 1] -> (B, 64 width) pooled features before ``logits``."""
        if self.padding > 0:
            x = F.pad(x, (self.padding,) * 4)
        out = self.layer(self.init_conv(self.normalize(x)))
        out = self.relu(self.batchnorm(out))
        return F.avg_pool2d(out, 8).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.penultimate(x))
