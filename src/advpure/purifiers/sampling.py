"""Unconditional samples: the reverse VP-SDE from pure noise (DiffPure's solver with t* = 1), for
looking at what a diffusion model has learned (``task=train_diffusion`` writes a grid of them)."""

from __future__ import annotations

import torch

from advpure.diffusion.backbone import EpsilonBackbone
from advpure.purifiers.diffpure import DiffPure
from advpure.purifiers.noise import GlobalNoise


@torch.no_grad()
def sample_images(
    backbone: EpsilonBackbone,
    n: int,
    image_shape: tuple[int, int, int],
    *,
    dt: float = 1e-3,
    device: str = "cpu",
) -> torch.Tensor:
    """``n`` samples (n, C, H, W) in [0, 1], solving from t = 1 with Euler-Maruyama step ``dt``."""
    solver = DiffPure(backbone, t_star=1.0, dt=dt)
    x_1 = torch.randn(n, *image_shape, device=device)
    return ((solver.reverse(x_1, GlobalNoise()) + 1.0) * 0.5).clamp(0.0, 1.0)
