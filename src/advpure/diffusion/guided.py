"""guided-diffusion's ImageNet U-Net (Dhariwal & Nichol 2021), DiffPure's ImageNet diffusion model.

The published file is ``256x256_diffusion_uncond.pt``: the unconditional 256x256 model, a plain
state dict saved with ``torch.save``, in the layout of guided-diffusion's ``UNetModel``
(566 entries, 552,814,086 parameters). It was trained on the discrete DDPM schedule (linear
betas over 1000 steps) with a learned variance: the network outputs 6 channels, the first 3 are
the noise prediction eps and the last 3 interpolate the log-variance (unused here). DiffPure
ran it with ``use_fp16=True``: the convolutions of the U-Net's torso in float16, group norms,
softmax, the timestep MLP and the output head in float32.

The network itself comes from the original code, the PyPI package ``guided-diffusion-sdk``
(import name ``guided_diffusion``; advpure's optional extra ``published``): its
``script_util.create_model`` builds it with the flags below, without MPI.
:class:`GuidedEpsilon` puts it behind advpure's backbone signature ``(x in [-1, 1], t in [0, 1])
-> eps`` and calls it with the label ``999 t`` (as every advpure backbone; DiffPure's own code
feeds it the integer ``floor(1000 t)`` instead, at most one label away). Its state-dict keys are
the original's under ``unet.``; :meth:`GuidedEpsilon.load_published_weights` reads the published
file with ``torch.load(weights_only=True)`` and loads it strictly.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from advpure.checkpoints import dtype_mismatch, state_mismatch
from advpure.diffusion.backbone import LABEL_SCALE
from advpure.errors import CheckpointError, ConfigError
from advpure.weights_files import read_weights_file

INSTALL_HINT = "pip install -e '.[published]' (the original code, PyPI package guided-diffusion-sdk)"

# The model flags of 256x256_diffusion_uncond.pt (guided-diffusion's README, DiffPure's
# configs/imagenet.yml) as GuidedEpsilon keywords; conf/diffusion/guided_imagenet256.yaml holds
# the same. ``use_fp16`` is diffusion.precision; ``use_checkpoint`` is off (advpure checkpoints
# whole solver steps instead); ``diffusion_steps: 1000`` and ``noise_schedule: linear`` are the
# purifiers' DDPM schedule (beta 1e-4 .. 0.02 over 1000 steps), not network keys.
PUBLISHED_IMAGENET256_NET: dict[str, Any] = {
    "image_size": 256,
    "num_channels": 256,
    "num_res_blocks": 2,
    "channel_mult": "",
    "learn_sigma": True,
    "class_cond": False,
    "attention_resolutions": "32,16,8",
    "num_heads": 4,
    "num_head_channels": 64,
    "num_heads_upsample": -1,
    "use_scale_shift_norm": True,
    "dropout": 0.0,
    "resblock_updown": True,
    "use_new_attention_order": False,
}
PUBLISHED_IMAGENET256_PARAMETERS = 552_814_086
PUBLISHED_FILE = (
    "guided-diffusion's 256x256_diffusion_uncond.pt (a torch.save'd state dict) or the same as .safetensors"
)


def require_guided_diffusion(key: str = "diffusion.net._target_") -> ModuleType:
    """guided-diffusion's ``script_util`` module; ``ConfigError`` (on ``key``) naming the install when it is missing."""
    try:
        with warnings.catch_warnings():
            # Its nn.py decorates with torch.cuda.amp.custom_fwd, deprecated by torch (not actionable here).
            warnings.simplefilter("ignore", FutureWarning)
            from guided_diffusion import script_util
    except ImportError as error:
        raise ConfigError(
            key,
            f"this option builds the original guided-diffusion network, but its code cannot be imported ({error})",
            INSTALL_HINT,
        ) from None
    return script_util


class GuidedEpsilon(nn.Module):
    """guided-diffusion's ``UNetModel`` (built by its ``script_util.create_model``) called with the label ``999 t``.

    Args: the model flags of guided-diffusion's ``create_model`` (see
    :data:`PUBLISHED_IMAGENET256_NET`): ``image_size`` (its default ``channel_mult`` exists for 64,
    128, 256, 512; other sizes need ``channel_mult`` as a comma-separated string),
    ``num_channels``, ``num_res_blocks``, ``channel_mult``, ``learn_sigma`` (6 output channels,
    the first 3 are eps), ``class_cond`` (only ``False``: purification has no labels),
    ``attention_resolutions`` (comma-separated resolutions), ``num_heads``, ``num_head_channels``,
    ``num_heads_upsample``, ``use_scale_shift_norm``, ``dropout``, ``resblock_updown``,
    ``use_new_attention_order``.

    Shapes: x (B, 3, H, W) in about [-1, 1], t (B,) or scalar in [0, 1] -> eps (B, 3, H, W), float32
    unless :meth:`compute_in` chose another format.
    """

    def __init__(
        self,
        image_size: int = 256,
        num_channels: int = 256,
        num_res_blocks: int = 2,
        channel_mult: str = "",
        learn_sigma: bool = True,
        class_cond: bool = False,
        attention_resolutions: str = "32,16,8",
        num_heads: int = 4,
        num_head_channels: int = 64,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = True,
        dropout: float = 0.0,
        resblock_updown: bool = True,
        use_new_attention_order: bool = False,
    ) -> None:
        super().__init__()
        script_util = require_guided_diffusion()
        if class_cond:
            raise ConfigError(
                "diffusion.net.class_cond",
                "a class-conditional model needs the image's label, which a purifier never has",
                "use an unconditional model (class_cond: false, e.g. 256x256_diffusion_uncond.pt)",
            )
        try:
            self.unet = script_util.create_model(
                image_size,
                num_channels,
                num_res_blocks,
                channel_mult=str(channel_mult),
                learn_sigma=learn_sigma,
                class_cond=False,
                use_checkpoint=False,
                attention_resolutions=str(attention_resolutions),
                num_heads=num_heads,
                num_head_channels=num_head_channels,
                num_heads_upsample=num_heads_upsample,
                use_scale_shift_norm=use_scale_shift_norm,
                dropout=dropout,
                resblock_updown=resblock_updown,
                use_fp16=False,
                use_new_attention_order=use_new_attention_order,
            )
        except (ValueError, AssertionError, ZeroDivisionError) as error:
            raise ConfigError(
                "diffusion.net",
                f"guided-diffusion cannot build this network: {type(error).__name__}: {error}",
                "set channel_mult for image sizes other than 64/128/256/512; channels must be multiples of 32 "
                "(group norm) and of num_head_channels",
            ) from None
        self.learn_sigma = bool(learn_sigma)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device)
        labels = (t * LABEL_SCALE).expand(x.shape[0]) if t.ndim == 0 else t * LABEL_SCALE
        out = self.unet(x, labels)
        return out[:, : self.unet.in_channels] if self.learn_sigma else out

    def compute_in(self, dtype: torch.dtype) -> None:
        """Compute in ``dtype`` the way guided-diffusion's ``use_fp16`` does (its ``convert_to_fp16``
        for float16): the torso's convolution weights in ``dtype`` and activations cast to it on
        entry; group norms and softmax (in float32 internally), the timestep MLP and the output head
        stay float32, and the output is float32. Called by :class:`advpure.diffusion.precision.LowPrecisionBackbone`."""
        for block in (self.unet.input_blocks, self.unet.middle_block, self.unet.output_blocks):
            for module in block.modules():
                if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                    module.weight.data = module.weight.data.to(dtype)
                    if module.bias is not None:
                        module.bias.data = module.bias.data.to(dtype)
        self.unet.dtype = dtype

    def load_published_weights(self, path: str | Path) -> dict[str, Any]:
        """Load a guided-diffusion state dict (``256x256_diffusion_uncond.pt``, or the same as
        ``.safetensors``) into the network, strictly; returns ``{"source", "weights", "n_tensors"}``.

        The file is read with ``torch.load(weights_only=True)`` (never a full unpickle); a missing,
        unexpected or misshapen key raises ``CheckpointError`` naming the file and the fix.
        """
        content = read_weights_file(path, key="diffusion.weights", expected=PUBLISHED_FILE)
        if not isinstance(content, Mapping) or not all(isinstance(v, torch.Tensor) for v in content.values()):
            raise CheckpointError(
                f"{path} (diffusion.weights) holds a {type(content).__name__}, not a state dict of tensors; "
                f"expected {PUBLISHED_FILE}"
            )
        state = {str(key): tensor for key, tensor in content.items()}
        missing, unexpected, wrong_shape = state_mismatch(state, self.unet)
        if missing or unexpected or wrong_shape:
            raise CheckpointError(
                f"{path}: the state dict does not fit the network ({len(missing)} missing keys {missing[:5]}, "
                f"{len(unexpected)} unexpected {unexpected[:5]}, shape mismatches {wrong_shape[:5]}); "
                f"diffusion.net must be the configuration the weights were trained with (diffusion=guided_imagenet256 "
                f"without net overrides for 256x256_diffusion_uncond.pt)"
            )
        wrong_dtype = dtype_mismatch(state, self.unet)
        if wrong_dtype:
            raise CheckpointError(
                f"{path}: tensors of the wrong kind {wrong_dtype[:5]} (parameters must be floating point). "
                f"Fix: point diffusion.weights at the published file itself ({PUBLISHED_FILE})"
            )
        self.unet.load_state_dict(state, strict=True)
        return {"source": str(path), "weights": "state_dict", "n_tensors": len(state)}
