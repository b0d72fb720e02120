"""Purify at the diffusion model's own size (``diffusion.image_size``), classify at the data's.

DiffPure's ImageNet path: the data is 224x224 (resize 256, center-crop 224), the
guided-diffusion model is 256x256, so the image is resized up to 256x256 (bilinear,
``align_corners=False``), purified there, and resized back to 224x224 for the classifier.
:class:`ResizedPurifier` does this around any purifier. Both resizes are linear maps inside the
autograd graph, so an attack's gradient goes through them (and through the purifier as its
grad mode says). Resizing happens here on [0, 1] images; DiffPure resizes in [-1, 1], which is
the same (bilinear weights sum to one). Bilinear weights are also non-negative, so the clamped
purified image stays in [0, 1] after resizing back. An input already at the working size is
passed through unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advpure.config.enums import GradMode
from advpure.purifiers.noise import NoiseSource
from advpure.purifiers.protocol import Purifier

RESIZE_MODE = "bilinear"


class ResizedPurifier(nn.Module):
    """``purifier`` working at ``image_size`` x ``image_size``, whatever the input's size.

    Args:
        purifier: a purifier (:class:`~advpure.purifiers.protocol.Purifier`: x (B, C, H, W) in [0, 1] -> the same).
        image_size: side the purifier works at (the backbone's native size, e.g. 256).

    Shapes: x (B, C, H, W) in [0, 1] -> (B, C, H, W) in [0, 1]: resized to (image_size,
    image_size), purified, resized back to (H, W); identity resizes (H = W = image_size) are
    skipped, so the result is the inner purifier's, bit for bit.
    """

    def __init__(self, purifier: Purifier, image_size: int) -> None:
        super().__init__()
        self.purifier = purifier
        self.image_size = int(image_size)
        self.resized_from: set[tuple[int, int]] = set()

    # The contract's declarations are the inner purifier's: resizing changes none of them.

    @property
    def grad_mode(self) -> GradMode:
        """The inner purifier's grad mode (what attacks and the scoring read)."""
        return self.purifier.grad_mode

    @property
    def name(self) -> str:
        return self.purifier.name

    @property
    def uses_backbone(self) -> bool:
        return self.purifier.uses_backbone

    @property
    def supports_adjoint(self) -> bool:
        return self.purifier.supports_adjoint

    @property
    def supports_guidance(self) -> bool:
        return self.purifier.supports_guidance

    def forward(self, x: torch.Tensor, noise: NoiseSource | None = None) -> torch.Tensor:
        """x (B, C, H, W) in [0, 1] -> purified at ``image_size``, returned at (H, W)."""
        size = tuple(x.shape[-2:])
        work = (self.image_size, self.image_size)
        if size == work:
            return self.purifier(x, noise)
        self.resized_from.add((int(size[0]), int(size[1])))
        up = F.interpolate(x, size=work, mode=RESIZE_MODE, align_corners=False)
        return F.interpolate(self.purifier(up, noise), size=size, mode=RESIZE_MODE, align_corners=False)

    def purify_copies(self, x: torch.Tensor, n_copies: int, noise: NoiseSource | None = None) -> torch.Tensor:
        """K independent purifications of each image in one batched call: (B, C, H, W) -> (K, B, C, H, W)."""
        batch = x.repeat(n_copies, *[1] * (x.ndim - 1))
        return self(batch, noise).view(n_copies, *x.shape)

    def settings(self) -> dict[str, Any]:
        """The inner purifier's settings plus the working size and the resizes that happened."""
        return {
            **self.purifier.settings(),
            "image_size": self.image_size,
            "resize": {
                "mode": RESIZE_MODE,
                "align_corners": False,
                "description": f"inputs resized to {self.image_size}x{self.image_size} before purification "
                "and back to their own size after (gradients flow through both)",
                "resized_from": [list(size) for size in sorted(self.resized_from)],
            },
        }


def resized(purifier: Purifier, image_size: int | None) -> Purifier:
    """``purifier`` itself when ``image_size`` is None, else wrapped in :class:`ResizedPurifier`."""
    return purifier if image_size is None else ResizedPurifier(purifier, image_size)
