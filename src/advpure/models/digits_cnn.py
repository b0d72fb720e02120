"""A small CNN for 8x8 digits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from advpure.models.normalize import Normalize


class DigitsCNN(nn.Module):
    """Three 3x3 conv layers (two 2x2 max-pools) and a two-layer head.

    Args:
        in_channels: image channels (1 for digits).
        num_classes: output classes.
        width: channels of the first conv layer (doubled at each pool).
        image_size: square input side (8 for digits).
        mean, std: per-channel normalization applied inside.

    Shapes: x (B, in_channels, image_size, image_size) in [0, 1] -> logits (B, num_classes);
    ``penultimate(x)``: the 128 features the last linear layer reads, (B, 128).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        width: int = 32,
        image_size: int = 8,
        mean: Sequence[float] = (0.3,),
        std: Sequence[float] = (0.4,),
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(4 * width * side * side, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in [0, 1] -> (B, 128) features before the last linear layer."""
        return self.head[:-1](self.features(self.normalize(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head[-1](self.penultimate(x))
