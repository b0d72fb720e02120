"""The purifier contract, declared once: what every purifier offers and all that callers may use.

A purifier is an ``nn.Module`` (callers switch it to eval mode and move it between devices) that
maps images to images, ``x`` (B, C, H, W) float in [0, 1] -> the same shape, dtype and range, and
declares:

- ``name``: how results name it (``diffpure``, ``gdmp``, ``none``, ...);
- ``grad_mode``: how an attack differentiates it, a :class:`GradMode` (the rules:
  :mod:`advpure.purifiers.gradients`);
- three capabilities, class attributes so that start-up validation reads them from the config's
  ``_target_`` before anything is built (:func:`capabilities`): ``uses_backbone`` (it needs the
  diffusion model), ``supports_adjoint`` (``grad_mode=adjoint`` applies) and ``supports_guidance``
  (``grad_mode=guidance_blind`` applies);
- ``forward(x, noise=None)``: one random purification per image; a ``noise`` source
  (:mod:`advpure.purifiers.noise`) makes it replayable: the same :class:`SeededNoise` gives the
  same output;
- ``purify_copies(x, n_copies, noise=None)`` -> (n_copies, B, C, H, W): independent purifications
  of every image in one batched call;
- ``settings()`` -> a dict for result files holding at least :data:`REQUIRED_SETTINGS`.

Every purifier advpure ships satisfies it: :class:`~advpure.purifiers.base.ReversePurifier` and its
subclasses, :class:`~advpure.purifiers.identity.IdentityPurifier` and
:class:`~advpure.purifiers.resize.ResizedPurifier`; ``tests/test_purifier_contract.py`` checks
every option of ``conf/purifier/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from advpure.config.enums import GradMode
from advpure.errors import ConfigError
from advpure.purifiers.noise import NoiseSource

CAPABILITIES = ("name", "uses_backbone", "supports_adjoint", "supports_guidance")
"""The contract's class attributes, readable before a purifier is built."""

REQUIRED_SETTINGS = ("name", "grad_mode", "gradient_is_approximation")
"""Keys every ``settings()`` holds (results name the purifier and say whether its gradient is exact)."""


@runtime_checkable
class Purifier(Protocol):
    """x (B, C, H, W) in [0, 1] -> purified (B, C, H, W) in [0, 1]; see the module docstring."""

    name: str
    grad_mode: GradMode
    uses_backbone: bool
    supports_adjoint: bool
    supports_guidance: bool

    def __call__(self, x: torch.Tensor, noise: NoiseSource | None = None) -> torch.Tensor: ...

    def purify_copies(self, x: torch.Tensor, n_copies: int, noise: NoiseSource | None = None) -> torch.Tensor: ...

    def settings(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Capabilities:
    """The class-level part of the contract of one purifier class."""

    name: str
    uses_backbone: bool
    supports_adjoint: bool
    supports_guidance: bool


def capabilities(purifier_class: type, key: str = "purifier._target_") -> Capabilities:
    """The capabilities ``purifier_class`` declares; ``ConfigError`` on ``key`` naming what it lacks.

    Start-up validation calls this on the class a config's ``_target_`` names, so a purifier
    written outside advpure fails at once, naming the missing declaration, instead of being
    treated as having some default.
    """
    missing = [member for member in CAPABILITIES if member not in dir(purifier_class)]
    if missing:
        raise ConfigError(
            key,
            f"{purifier_class.__module__}.{purifier_class.__qualname__} does not declare the purifier "
            f"contract's class attributes {missing}",
            "declare name, uses_backbone, supports_adjoint and supports_guidance on the class "
            "(advpure.purifiers.protocol; CONTRIBUTING.md, 'Add a purifier')",
        )
    return Capabilities(
        name=str(purifier_class.name),
        uses_backbone=bool(purifier_class.uses_backbone),
        supports_adjoint=bool(purifier_class.supports_adjoint),
        supports_guidance=bool(purifier_class.supports_guidance),
    )


def check_grad_mode(grad_mode: GradMode, declared: Capabilities) -> None:
    """``ConfigError`` on ``purifier.grad_mode`` when a purifier class that ``declared`` its
    capabilities cannot be differentiated as ``grad_mode`` says: ``adjoint`` needs
    ``supports_adjoint``, ``guidance_blind`` needs ``supports_guidance``. Start-up validation
    calls it on the configured class; a purifier, on its own class when it is built."""
    if grad_mode == GradMode.adjoint and not declared.supports_adjoint:
        raise ConfigError(
            "purifier.grad_mode",
            f"'adjoint' is torchsde's stochastic adjoint of the continuous VP-SDE; purifier {declared.name!r} is "
            "not one (a discrete or guided sampler has no adjoint)",
            "use purifier=diffpure for the adjoint, or purifier.grad_mode=full for exact gradients",
        )
    if grad_mode == GradMode.guidance_blind and not declared.supports_guidance:
        raise ConfigError(
            "purifier.grad_mode",
            f"'guidance_blind' treats a guidance gradient as constant; purifier {declared.name!r} has no guidance",
            "use it with purifier=gdmp, mimicdiffusion or agdm, or set purifier.grad_mode=full",
        )
