"""The defended model: classifier after purifier."""

from __future__ import annotations

import torch
from torch import nn


class DefendedClassifier(nn.Module):
    """x (B, C, H, W) in [0, 1] -> classifier(purifier(x)) logits (B, K). One call is one random draw."""

    def __init__(self, purifier: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.purifier = purifier
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.purifier(x))
