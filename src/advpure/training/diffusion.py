"""Epsilon-prediction DDPM training (Ho et al., 2020) with EMA weights."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from advpure.diffusion.schedule import DiscreteSchedule
from advpure.training.ema import EMA


class DiffusionModule(pl.LightningModule):
    """Trains ``backbone`` ((x in [-1, 1], t in [0, 1]) -> eps) on the discrete schedule.

    Each example draws a step i uniformly from 0..T-1, forms
    x_i = sqrt(alpha_bar_i) x0 + sqrt(1 - alpha_bar_i) eps from x0 = 2 image - 1, and regresses
    eps with MSE; the backbone sees t = (i + 1) / T (label 999 t, as DiffPure calls it).

    Args:
        backbone: the noise predictor.
        schedule: discrete DDPM schedule (linear betas 1e-4..0.02 over 1000 steps by default).
        lr, warmup_steps, grad_clip: AdamW with linear warm-up.
        ema_decay: EMA decay; ``ema.shadow`` is the model to export.
    """

    def __init__(
        self,
        backbone: nn.Module,
        schedule: DiscreteSchedule | None = None,
        lr: float = 2e-4,
        warmup_steps: int = 200,
        ema_decay: float = 0.999,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.schedule = schedule or DiscreteSchedule()
        self.lr = lr
        self.warmup_steps = warmup_steps
        self.ema = EMA(backbone, ema_decay)
        self.register_buffer("alpha_bars", self.schedule.alpha_bars.float(), persistent=False)

    def noise_loss(self, images: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the predicted noise; images (B, C, H, W) in [0, 1]."""
        x0 = 2.0 * images - 1.0
        step = torch.randint(0, self.schedule.num_timesteps, (x0.shape[0],), device=x0.device)
        alpha_bar = self.alpha_bars[step].view(-1, 1, 1, 1)
        noise = torch.randn_like(x0)
        x_t = alpha_bar.sqrt() * x0 + (1.0 - alpha_bar).sqrt() * noise
        return F.mse_loss(self.backbone(x_t, self.schedule.time_of_step(step)), noise)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.noise_loss(batch[0])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.ema.update(self.backbone)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(batch_idx)  # the same noise every validation: comparable curves
            self.log("val/loss", self.noise_loss(batch[0]), prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.backbone.parameters(), lr=self.lr, weight_decay=0.0)
        warmup = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / max(1, self.warmup_steps))
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}
