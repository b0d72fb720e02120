"""Which reader loads a published backbone's own weights file (``diffusion.weights``).

A published diffusion model comes as its authors' file (score_sde's ``checkpoint_8.pth``,
guided-diffusion's ``256x256_diffusion_uncond.pt``), not as an advpure checkpoint. Each network
class that has such a file is listed in :data:`PUBLISHED_WEIGHTS_READERS` with the function that
reads that format into it; the format's code lives with the format
(:mod:`advpure.diffusion.score_sde_weights`, :mod:`advpure.diffusion.guided`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from advpure.diffusion.guided import GuidedEpsilon
from advpure.diffusion.score_sde import NCSNpp
from advpure.diffusion.score_sde_weights import load_score_sde_weights
from advpure.errors import ConfigError

WeightsReader = Callable[[Any, str | Path], dict[str, Any]]
"""``reader(network, path) -> what was read`` (source, kind of weights, ...), loading strictly."""

PUBLISHED_WEIGHTS_READERS: dict[type[nn.Module], WeightsReader] = {
    NCSNpp: load_score_sde_weights,
    GuidedEpsilon: GuidedEpsilon.load_published_weights,
}


def load_published_weights(network: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load the published file ``path`` into ``network`` with its class's reader; returns what the
    reader read. ``ConfigError`` on ``diffusion.weights`` when the class has no published format."""
    for network_class, reader in PUBLISHED_WEIGHTS_READERS.items():
        if isinstance(network, network_class):
            return reader(network, path)
    readable = ", ".join(cls.__name__ for cls in PUBLISHED_WEIGHTS_READERS)
    raise ConfigError(
        "diffusion.weights",
        f"is set, but the network {type(network).__name__} reads no published weights file (those that do: {readable})",
        "use diffusion.checkpoint (advpure checkpoint) or diffusion.pretrained (diffusers folder); "
        "diffusion.weights is for diffusion=score_sde_cifar10 and diffusion=guided_imagenet256",
    )
