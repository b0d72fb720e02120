"""Classifier training: standard, or PGD adversarial training."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from advpure.config.enums import Norm
from advpure.training.optim import adamw_cosine
from advpure.training.pgd import pgd_attack


class ClassifierModule(pl.LightningModule):
    """Trains ``net`` ((B, C, H, W) in [0, 1] -> logits) with cross-entropy, AdamW and cosine decay.

    Args:
        net: the classifier.
        lr, weight_decay: AdamW settings.
        adversarial: ``None`` for standard training, else PGD settings
            ``{norm, eps, step_size, steps}``: each batch is replaced by its PGD adversarial examples.
    """

    def __init__(
        self,
        net: nn.Module,
        lr: float = 1e-3,
        weight_decay: float = 5e-4,
        adversarial: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.lr = lr
        self.weight_decay = weight_decay
        self.adversarial = adversarial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.adversarial is not None:
            was_training = self.net.training
            self.net.eval()
            x = pgd_attack(self.net, x, y, **{**self.adversarial, "norm": Norm(self.adversarial["norm"])})
            self.net.train(was_training)
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("val/acc", (logits.argmax(1) == y).float().mean(), prog_bar=True, sync_dist=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("test/acc", (self.net(x).argmax(1) == y).float().mean(), sync_dist=True)

    def configure_optimizers(self) -> Any:
        return adamw_cosine(self, self.net.parameters(), self.lr, self.weight_decay)
