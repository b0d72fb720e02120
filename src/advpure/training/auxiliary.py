"""AGDM's auxiliary network c_phi: TRADES-style adversarial training on diffused inputs.

AGDM evaluates c_phi on the reverse chain's states x_s, s from t* down to 0, and on the clean-level
input; so c_phi is trained on the input diffused to a random level k, uniform in {0, ..., K}
(K = round(T t_max); level 0 is the clean image, level k >= 1 is alpha_bar at step k - 1):

    x_k = sqrt(ab_k) (2 x - 1) + sqrt(1 - ab_k) z,  read as the pixels (x_k + 1) / 2 (not clamped).

c_phi has no noise-level input: any classifier architecture can serve as c_phi (and be compared
with a standardly trained network of the same architecture), and at purification time the level
is implicit in the state. The objective is TRADES (Zhang et al. 2019) at the sampled level:

    CE(c(x_k), y) + lambda * max_{||delta|| <= eps} KL(softmax c(x_k) || softmax c(x_k(x + delta))),

where x_k(x + delta) diffuses the perturbed image with the same level and noise z: the adversary
controls the input before diffusion (the threat model at test time), not the noise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from advpure.attacks.geometry import GEOMETRIES, clip_to_image
from advpure.config.enums import Norm
from advpure.diffusion.schedule import DiscreteSchedule
from advpure.training.optim import adamw_cosine
from advpure.training.pgd import pgd_attack


class DiffusionLevels:
    """Levels 0..K of the discrete schedule that c_phi trains on.

    Args:
        t_max: K = round(T t_max); 0 trains on clean images only.
        beta_start, beta_end, num_timesteps: the diffusion model's DDPM schedule.
    """

    def __init__(self, t_max: float, beta_start: float, beta_end: float, num_timesteps: int) -> None:
        self.max_level = round(num_timesteps * t_max)
        alpha_bars = DiscreteSchedule(beta_start, beta_end, num_timesteps).alpha_bars[: self.max_level]
        self.alpha_bars = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars])  # (K + 1,)

    def draw(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image a level's alpha_bar, (B, 1, 1, 1), and standard-normal noise z like x."""
        levels = torch.randint(0, self.max_level + 1, (x.shape[0],), generator=generator)
        alpha_bar = self.alpha_bars[levels].to(dtype=x.dtype, device=x.device).view(-1, *[1] * (x.ndim - 1))
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return alpha_bar, z

    @staticmethod
    def apply(x: torch.Tensor, alpha_bar: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x in [0, 1] diffused with per-image ``alpha_bar`` (broadcastable) and noise z, back
        on the pixel scale (not clamped)."""
        return (alpha_bar.sqrt() * (2.0 * x - 1.0) + (1.0 - alpha_bar).sqrt() * z + 1.0) * 0.5


def trades_adversary(
    net: nn.Module,
    x: torch.Tensor,
    diffuse: Callable[[torch.Tensor], torch.Tensor],
    *,
    norm: Norm,
    eps: float,
    step_size: float,
    steps: int,
) -> torch.Tensor:
    """The inner maximum of TRADES: x + delta in the eps-ball and [0, 1] that maximizes
    KL(softmax net(diffuse(x)) || softmax net(diffuse(x + delta))), by ``steps`` of PGD from a
    0.001-scaled Gaussian start (TRADES' own). x, result: (B, C, H, W) in [0, 1]."""
    geometry = GEOMETRIES[Norm(norm)]
    with torch.no_grad():
        target = F.softmax(net(diffuse(x)), dim=1)
    delta = clip_to_image(x, geometry.project(0.001 * torch.randn_like(x), eps))
    for _ in range(steps):
        delta = delta.detach().requires_grad_(True)
        with torch.enable_grad():
            divergence = F.kl_div(F.log_softmax(net(diffuse(x + delta)), dim=1), target, reduction="sum")
            (grad,) = torch.autograd.grad(divergence, delta)
        delta = clip_to_image(x, geometry.project(delta.detach() + step_size * geometry.ascent(grad), eps))
    return (x + delta).detach()


class AuxiliaryModule(pl.LightningModule):
    """Trains c_phi ((B, C, H, W) in [0, 1] -> logits) with TRADES on diffused inputs.

    Args:
        net: c_phi.
        levels: the diffusion levels to train on.
        trades_lambda: weight of the KL term (0: plain cross-entropy on diffused inputs).
        adversary: ``{norm, eps, step_size, steps}`` of the inner maximum.
        eval_steps: PGD steps (cross-entropy, same eps and step size) of the per-epoch robust accuracy.
        lr, weight_decay: AdamW, cosine decay over the epochs.

    Logs per epoch: ``train/ce``, ``train/kl``, ``train/acc`` (on diffused inputs) and
    ``val/clean_acc``, ``val/robust_acc`` (clean level, PGD) and ``val/diffused_acc``.
    """

    def __init__(
        self,
        net: nn.Module,
        levels: DiffusionLevels,
        trades_lambda: float,
        adversary: dict[str, Any],
        eval_steps: int,
        lr: float = 1e-3,
        weight_decay: float = 5e-4,
    ) -> None:
        super().__init__()
        self.net = net
        self.levels = levels
        self.trades_lambda = trades_lambda
        self.adversary = {**adversary, "norm": Norm(adversary["norm"])}
        self.eval_steps = eval_steps
        self.lr = lr
        self.weight_decay = weight_decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def trades_loss(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{loss, ce, kl, logits}`` of one batch at freshly drawn levels and noise."""
        alpha_bar, z = self.levels.draw(x)

        def diffuse(images: torch.Tensor) -> torch.Tensor:
            return DiffusionLevels.apply(images, alpha_bar, z)

        if self.trades_lambda > 0:
            was_training = self.net.training
            self.net.eval()
            adversarial = trades_adversary(self.net, x, diffuse, **self.adversary)
            self.net.train(was_training)
        logits = self.net(diffuse(x))
        ce = F.cross_entropy(logits, y)
        kl = torch.zeros((), dtype=x.dtype, device=x.device)
        if self.trades_lambda > 0:
            kl = F.kl_div(
                F.log_softmax(self.net(diffuse(adversarial)), dim=1), F.softmax(logits, dim=1), reduction="batchmean"
            )
        return {"loss": ce + self.trades_lambda * kl, "ce": ce, "kl": kl, "logits": logits}

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        parts = self.trades_loss(x, y)
        self.log("train/loss", parts["loss"], prog_bar=True)
        self.log("train/ce", parts["ce"])
        self.log("train/kl", parts["kl"])
        self.log("train/acc", (parts["logits"].argmax(1) == y).float().mean(), prog_bar=True)
        return parts["loss"]

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        alpha_bar, z = self.levels.draw(x)
        with torch.enable_grad():  # Lightning validates under no_grad
            adversarial = pgd_attack(self.net, x, y, **{**self.adversary, "steps": self.eval_steps})
        with torch.no_grad():
            accuracy = {
                "val/clean_acc": self.net(x).argmax(1) == y,
                "val/robust_acc": self.net(adversarial).argmax(1) == y,
                "val/diffused_acc": self.net(DiffusionLevels.apply(x, alpha_bar, z)).argmax(1) == y,
            }
        for name, correct in accuracy.items():
            self.log(name, correct.float().mean(), prog_bar=name != "val/diffused_acc", sync_dist=True)

    def configure_optimizers(self) -> Any:
        return adamw_cosine(self, self.net.parameters(), self.lr, self.weight_decay)
