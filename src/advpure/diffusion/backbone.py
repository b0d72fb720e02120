"""Noise-prediction backbones behind one signature: ``(x in [-1, 1], t in [0, 1]) -> eps``.

Any callable with that signature can stand in for a backbone (a purifier never sees more).
A continuous-time caller's ``t`` maps to the discrete label ``999 t`` the network was trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from advpure.errors import CheckpointError
from advpure.io import JsonFileError, read_json

LABEL_SCALE = 999.0


class EpsilonBackbone(Protocol):
    """``x``: (B, C, H, W) in about [-1, 1]; ``t``: (B,) or scalar in [0, 1] -> eps (B, C, H, W),
    the same shape and dtype as ``x``."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class DescribedBackbone(Protocol):
    """A backbone that says how it computes (a wrapper's precision, memory format, compile mode)."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def settings(self) -> dict[str, Any]: ...


def backbone_settings(backbone: EpsilonBackbone) -> dict[str, Any]:
    """What a result file records about how ``backbone`` computes: its ``settings()`` if it is a
    :class:`DescribedBackbone`, else nothing (a plain network computes as built)."""
    return backbone.settings() if isinstance(backbone, DescribedBackbone) else {}


class UNetEpsilon(nn.Module):
    """A diffusers ``UNet2DModel`` called with the label ``999 t``.

    Args:
        **unet_kwargs: ``UNet2DModel`` constructor arguments (``sample_size``, ``in_channels``,
            ``block_out_channels``, ``down_block_types``, ...).
    """

    def __init__(self, **unet_kwargs: Any) -> None:
        super().__init__()
        tuples = ("down_block_types", "up_block_types", "block_out_channels")
        kwargs = {k: tuple(v) if k in tuples else v for k, v in unet_kwargs.items()}
        from diffusers import UNet2DModel  # imported on use: diffusers takes ~2 s to import

        self.unet = UNet2DModel(**kwargs)

    @classmethod
    def from_pretrained(cls, path_or_id: str) -> UNetEpsilon:
        """Load a diffusers-format folder (``config.json`` + safetensors weights); never unpickles."""
        local = Path(path_or_id).expanduser()
        if local.exists() and not (local / "config.json").is_file():
            raise CheckpointError(
                f"diffusers folder {local} lacks config.json; expected the layout written by "
                f"UNet2DModel.save_pretrained (config.json + diffusion_pytorch_model.safetensors)"
            )
        if local.exists():
            try:
                read_json(local / "config.json", dict)
            except JsonFileError as error:
                raise CheckpointError(
                    f"diffusers config {error} (UNet2DModel.save_pretrained writes a JSON object). Fix: copy the "
                    "folder again, or point diffusion.pretrained at another diffusers folder"
                ) from None
        try:
            from diffusers import UNet2DModel

            unet = UNet2DModel.from_pretrained(str(local) if local.exists() else path_or_id, use_safetensors=True)
        except (OSError, ValueError) as error:
            raise CheckpointError(
                f"cannot load diffusers UNet2DModel from {path_or_id!r}: {error}. Point "
                f"diffusion.pretrained at a local folder with config.json + diffusion_pytorch_model.safetensors"
            ) from None
        backbone = cls.__new__(cls)
        nn.Module.__init__(backbone)
        backbone.unet = unet
        return backbone

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        labels = (t * LABEL_SCALE).expand(x.shape[0]) if t.ndim == 0 else t * LABEL_SCALE
        return self.unet(x, labels).sample
