"""The optimizer every classifier-like training task uses: AdamW with cosine decay over the epochs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
import torch


def adamw_cosine(module: pl.LightningModule, params: Iterable[torch.Tensor], lr: float, weight_decay: float) -> Any:
    """Lightning's ``configure_optimizers`` answer: AdamW, learning rate cosine-annealed per epoch
    over the Trainer's ``max_epochs`` (1 when it has none)."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    trainer = module._trainer
    max_epochs = trainer.max_epochs if trainer is not None and trainer.max_epochs else 1
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, max_epochs))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}
