"""Threat-model geometry per norm: random start, steepest-ascent direction, projection.

Each norm is one :class:`BallGeometry`; attacks look theirs up in ``GEOMETRIES`` and never branch
on the norm. Tensors are (B, C, H, W); ``eps`` is in [0, 1] pixel units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from advpure.config.enums import Norm


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, 1) L2 norms of each sample, at least 1e-12."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (t.ndim - 1))


def _linf_start(like: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    noise = torch.rand(like.shape, generator=generator, dtype=like.dtype, device=like.device)
    return (2.0 * noise - 1.0) * eps


def _l2_start(like: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    direction = torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
    radius = torch.rand((like.shape[0],), generator=generator, dtype=like.dtype, device=like.device)
    return direction / _per_sample_norm(direction) * eps * radius.view(-1, *[1] * (like.ndim - 1))


def _l2_project(delta: torch.Tensor, eps: float) -> torch.Tensor:
    return delta * (eps / _per_sample_norm(delta)).clamp(max=1.0)


@dataclass(frozen=True)
class BallGeometry:
    """``start(like, eps, generator)``: a random point of the ball; ``ascent(grad)``: the unit
    steepest-ascent direction; ``project(delta, eps)``: the nearest point of the ball."""

    start: Callable[[torch.Tensor, float, torch.Generator | None], torch.Tensor]
    ascent: Callable[[torch.Tensor], torch.Tensor]
    project: Callable[[torch.Tensor, float], torch.Tensor]
    size: Callable[[torch.Tensor], torch.Tensor]


GEOMETRIES: dict[Norm, BallGeometry] = {
    Norm.Linf: BallGeometry(
        start=_linf_start,
        ascent=torch.sign,
        project=lambda delta, eps: delta.clamp(-eps, eps),
        size=lambda delta: delta.flatten(1).abs().amax(1),
    ),
    Norm.L2: BallGeometry(
        start=_l2_start,
        ascent=lambda grad: grad / _per_sample_norm(grad),
        project=_l2_project,
        size=lambda delta: delta.flatten(1).norm(dim=1),
    ),
}


def project(delta: torch.Tensor, norm: Norm, eps: float) -> torch.Tensor:
    """Project perturbations (B, ...) onto the ``norm`` ball of radius ``eps``."""
    return GEOMETRIES[Norm(norm)].project(delta, eps)


def clip_to_image(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The part of ``delta`` that keeps ``x + delta`` in [0, 1]."""
    return (x + delta).clamp(0.0, 1.0) - x


# Float slack when deciding whether a point lies in an eps-ball (clamping and projection round).
BALL_TOLERANCE = 1e-5


def match_to_balls(
    rows: torch.Tensor, clean: torch.Tensor, eps: float, norm: Norm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which clean image's eps-ball holds each row: rows (N, C, H, W), clean (B, C, H, W) ->
    (point (N,), inside (N,) bool). Rows in the usual copy order (row k * B + b belongs to image b)
    are matched at once; the others against every image."""
    size = GEOMETRIES[Norm(norm)].size
    count = clean.shape[0]
    point = torch.arange(rows.shape[0], device=rows.device) % count
    inside = size(rows - clean[point]) <= eps + BALL_TOLERANCE
    if rows.shape[0] % count != 0:
        inside[:] = False
    rest = (~inside).nonzero().squeeze(1)
    if rest.numel() > 0:
        distance = torch.stack([size(rows[rest] - image[None]) for image in clean], dim=1)
        nearest, which = distance.min(1)
        found = nearest <= eps + BALL_TOLERANCE
        point[rest[found]] = which[found]
        inside[rest[found]] = True
    return point, inside
