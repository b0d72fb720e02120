"""The defended model: classifier after purifier, and the model an attack differentiates."""

from __future__ import annotations

import torch
from torch import nn

from advpure.purifiers.gradients import gradient_rule


class DefendedClassifier(nn.Module):
    """x (B, C, H, W) in [0, 1] -> classifier(purifier(x)) logits (B, K). One call is one random draw;
    the backward pass is the purifier's grad mode."""

    def __init__(self, purifier: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.purifier = purifier
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.purifier(x))

    def attack_target(self) -> nn.Module:
        """What the attack runs against: this model, or the bare classifier for ``grad_mode=blind``."""
        return self.classifier if gradient_rule(self.purifier).attacks_classifier_only else self
