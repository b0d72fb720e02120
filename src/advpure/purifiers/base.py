"""What every diffusion purifier shares: diffuse to t*, run n reverse steps, map back to [0, 1].

A variant (VP-SDE, DDPM, probability-flow ODE) defines only its forward diffusion and one
reverse step; this base runs the loop (with per-step gradient checkpointing when gradients are
recorded), draws noise from a replayable source, purifies K copies in one batched call, and
applies the configured gradient mode (:mod:`advpure.purifiers.gradients`).
"""

from __future__ import annotations

from typing import Any, ClassVar, TypedDict

import torch
from torch import nn

from advpure.config.enums import GradMode
from advpure.diffusion.backbone import DescribedBackbone, EpsilonBackbone
from advpure.errors import ConfigError
from advpure.purifiers.checkpointing import checkpointed_step
from advpure.purifiers.gradients import GRADIENT_RULES
from advpure.purifiers.noise import NoiseSource, noise_source
from advpure.purifiers.protocol import capabilities, check_grad_mode


class ReverseOptions(TypedDict, total=False):
    """The keyword options every :class:`ReversePurifier` takes, documented there once.

    A variant forwards them to its parent unchanged, ``**options: Unpack[ReverseOptions]`` (a family
    base extends this with its own shared options, e.g. ``VPGridOptions``), so that its constructor
    names only its own parameters; each option's default is the parent constructor's.
    """

    grad_mode: GradMode
    seed: int | None
    surrogate: nn.Module | None
    checkpoint_steps: bool


class ReversePurifier(nn.Module):
    """Base of the diffusion purifiers.

    Args:
        backbone: ``(x in [-1, 1], t in [0, 1]) -> eps``.
        t_star: diffusion time in (0, 1] (a variant, or its family's base, declares the published
            default, keyword-only).

    Keyword options (:class:`ReverseOptions`; every variant takes and forwards them):
        grad_mode: how attacks differentiate this purifier (see :class:`GradMode`).
        seed: ``None`` draws fresh noise from torch's global generator on each call (the defense
            as published); an integer makes every call replay the same noise stream (a
            deterministic purifier: for debugging and gradient checks, not for robustness numbers).
        surrogate: the cheaper purifier whose gradient ``grad_mode=surrogate`` uses (required by
            that mode, else ignored).
        checkpoint_steps: recompute each step's activations in the backward pass instead of
            storing them, so memory does not grow with the number of steps.

    Shapes: ``forward(x)``: x (B, C, H, W) in [0, 1] -> purified (B, C, H, W) in [0, 1], one
    random draw per image.

    A :class:`~advpure.purifiers.protocol.Purifier`: a variant declares ``name`` and, where they
    differ from these, ``supports_adjoint`` and ``supports_guidance``.
    """

    name: ClassVar[str]  # each variant names itself (start-up validation refuses a class without one)
    uses_backbone = True
    supports_adjoint = False
    supports_guidance = False

    def __init__(
        self,
        backbone: EpsilonBackbone,
        t_star: float,
        *,
        grad_mode: GradMode = GradMode.full,
        seed: int | None = None,
        surrogate: nn.Module | None = None,
        checkpoint_steps: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 < float(t_star) <= 1.0:
            raise ConfigError("purifier.t_star", f"{t_star!r} is out of range", "set a value in (0, 1]")
        self.backbone = backbone
        self.t_star = float(t_star)
        self.grad_mode = GradMode(grad_mode)
        self.seed = seed
        self.surrogate = surrogate
        self.checkpoint_steps = bool(checkpoint_steps)
        check_grad_mode(self.grad_mode, capabilities(type(self)))
        if self.grad_mode == GradMode.surrogate and surrogate is None:
            raise ConfigError(
                "purifier.surrogate",
                "is null but grad_mode=surrogate needs a surrogate purifier",
                "set purifier.surrogate to a purifier node (see conf/purifier/diffpure.yaml)",
            )

    # ------------------------------------------------------------------ variant interface

    @property
    def n_steps(self) -> int:
        """Number of reverse steps per purification."""
        raise NotImplementedError

    def diffuse(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward diffusion to t*: x (B, C, H, W) in [-1, 1], standard-normal noise -> x_t*."""
        raise NotImplementedError

    def step(self, i: int, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """Reverse step ``i`` (0 is the first, at t*): state x, standard-normal z (or None)."""
        raise NotImplementedError

    def step_is_random(self, i: int) -> bool:
        """Whether reverse step ``i`` draws noise."""
        return True

    def variant_settings(self) -> dict[str, Any]:
        """The variant's own settings for result files."""
        return {}

    def purify_adjoint(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        """Purification whose backward pass is an adjoint solve (VP-SDE only)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared machinery

    def forward(self, x: torch.Tensor, noise: NoiseSource | None = None) -> torch.Tensor:
        """x (B, C, H, W) in [0, 1] -> purified in [0, 1], differentiated as ``grad_mode`` says."""
        source = noise if noise is not None else noise_source(self.seed)
        return GRADIENT_RULES[self.grad_mode].purify(self, x, source)

    def purify(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        """The real purification with exact autograd: x in [0, 1] -> [0, 1] (clamped).

        The output carries an explicit zero term in x: where the graph holds no path from x to
        the output (MimicDiffusion from pure noise under ``guidance_blind``), an attack then sees
        the true gradient, zero, instead of failing.
        """
        out = ((self.purify_signed(2.0 * x - 1.0, noise) + 1.0) * 0.5).clamp(0.0, 1.0)
        return out + 0.0 * x if x.requires_grad else out

    def purify_signed(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        """Diffuse and reverse in model space: x (B, C, H, W) in [-1, 1] -> x_0, not clamped."""
        return self.reverse(self.diffuse(x, noise.normal(0, x)), noise)

    def reverse(self, x_t: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        """All reverse steps from x_t* to x_0. Step ``i`` draws noise key ``i + 1``; under autograd
        each step is checkpointed and its recomputation reuses the same noise tensor."""
        x = x_t
        checkpointed = self.checkpoint_steps and torch.is_grad_enabled()
        params = [p for p in self.backbone_parameters() if p.requires_grad] if checkpointed else []
        for i in range(self.n_steps):
            z = noise.normal(i + 1, x) if self.step_is_random(i) else None
            x = checkpointed_step(self.step, i, x, z, params) if checkpointed else self.step(i, x, z)
        return x

    def backbone_parameters(self) -> list[torch.Tensor]:
        """The backbone's parameters (empty for a plain callable backbone)."""
        return list(self.backbone.parameters()) if isinstance(self.backbone, nn.Module) else []

    def purify_copies(self, x: torch.Tensor, n_copies: int, noise: NoiseSource | None = None) -> torch.Tensor:
        """K independent purifications of each image in one batched call.

        x (B, C, H, W) in [0, 1] -> (K, B, C, H, W) in [0, 1]; copy k of image b is row k * B + b
        of the batched call.
        """
        batch = x.repeat(n_copies, *[1] * (x.ndim - 1))
        return self(batch, noise).view(n_copies, *x.shape)

    def settings(self) -> dict[str, Any]:
        """What a result file records about this purifier."""
        rule = GRADIENT_RULES[self.grad_mode]
        settings: dict[str, Any] = {
            "name": self.name,
            "t_star": self.t_star,
            "n_steps": self.n_steps,
            **self.variant_settings(),
            "grad_mode": self.grad_mode.value,
            "gradient": rule.description,
            "gradient_is_approximation": rule.approximation,
            "checkpoint_steps": self.checkpoint_steps,
            "seed": self.seed,
        }
        if self.grad_mode == GradMode.surrogate and self.surrogate is not None:
            settings["surrogate"] = self.surrogate.settings()
        if isinstance(self.backbone, DescribedBackbone):  # e.g. a half-precision backbone's format
            settings["backbone"] = self.backbone.settings()
        return settings
