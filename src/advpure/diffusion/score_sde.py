"""Score SDE's NCSN++ network in its DDPM++ configuration: DiffPure's CIFAR-10 diffusion model.

The published model is ``vp/cifar10_ddpmpp_deep_continuous`` (Song et al., ICLR 2021): a
U-Net of BigGAN-style residual blocks (resampling inside the block: nearest-neighbour 2x up,
2x2 average-pool down, no FIR filter), every residual sum scaled by 1/sqrt(2), a sinusoidal
embedding of the noise label fed through a two-layer conditioning MLP, self-attention at the
16x16 level and in the middle, GroupNorm and swish throughout. It was trained on the continuous
VP-SDE (beta_min 0.1, beta_max 20) with data centred to [-1, 1], called with the label
``999 t``; its output is a noise prediction: the score is ``-output / std(t)``.

:class:`NCSNpp` reproduces the original's module tree: every state-dict key and shape
(``sigmas`` and ``all_modules.<i>.…``, 957 entries), the order of ``named_parameters()``
(956 entries, the order of the released EMA ``shadow_params``) and the parameter count
(106,632,579 with :data:`PUBLISHED_CIFAR10_NET`). :class:`ScoreSdeEpsilon` is the same network
behind advpure's backbone signature ``(x in [-1, 1], t in [0, 1]) -> eps``, with unchanged keys.

Cost of the published network, measured with ``torch.utils.flop_counter.FlopCounterMode``:
37.1 GFLOP per 32x32 image per call (a multiply-add counts as two FLOPs).

Only the options this configuration uses are implemented (BigGAN blocks, no FIR, no progressive
growing, positional embedding, DDPM attention, GroupNorm, swish); any other value of those keys
raises ``ConfigError`` naming the key. Attention is written as matmul + softmax (not a fused
kernel) so that second-order gradients, which guided purifiers need, exist on every device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advpure.diffusion.backbone import LABEL_SCALE
from advpure.diffusion.schedule import VPSchedule
from advpure.errors import ConfigError

# The ``model`` and ``data`` fields of score_sde's configs/vp/cifar10_ddpmpp_deep_continuous.py
# that shape the network, as constructor keywords (conf/diffusion/score_sde_cifar10.yaml holds the same).
PUBLISHED_CIFAR10_NET: dict[str, Any] = {
    "image_size": 32,
    "num_channels": 3,
    "centered": True,
    "nf": 128,
    "ch_mult": [1, 2, 2, 2],
    "num_res_blocks": 8,
    "attn_resolutions": [16],
    "dropout": 0.1,
    "resamp_with_conv": True,
    "conditional": True,
    "fir": False,
    "fir_kernel": [1, 3, 3, 1],
    "skip_rescale": True,
    "resblock_type": "biggan",
    "progressive": "none",
    "progressive_input": "none",
    "progressive_combine": "sum",
    "attention_type": "ddpm",
    "init_scale": 0.0,
    "embedding_type": "positional",
    "fourier_scale": 16.0,
    "conv_size": 3,
    "normalization": "GroupNorm",
    "nonlinearity": "swish",
    "scale_by_sigma": False,
    "sigma_min": 0.01,
    "sigma_max": 50.0,
    "num_scales": 1000,
    "beta_min": 0.1,
    "beta_max": 20.0,
}

# Keys of score_sde's ``config.model`` that describe training, not the network.
_TRAINING_ONLY_MODEL_KEYS = ("name", "ema_rate")
# Keys whose only implemented value is the DDPM++ one (strings compare case-insensitively, as in the original).
_FIXED_OPTIONS: dict[str, Any] = {
    "fir": False,
    "resblock_type": "biggan",
    "progressive": "none",
    "progressive_input": "none",
    "attention_type": "ddpm",
    "embedding_type": "positional",
    "normalization": "GroupNorm",
    "nonlinearity": "swish",
}


def _casefolded(value: Any) -> Any:
    """A string in lower case; any other value unchanged."""
    return value.lower() if isinstance(value, str) else value


def net_kwargs_from_score_sde_config(config: dict[str, Any]) -> dict[str, Any]:
    """Constructor keywords of :class:`NCSNpp` from a score_sde config as a nested dict.

    Args:
        config: ``{"data": {...}, "model": {...}, ...}`` as in score_sde's ``configs/`` (or a dict
            holding that under ``"config"``, as the golden JSON files do). Only ``data.image_size``,
            ``data.num_channels``, ``data.centered`` and ``model.*`` (less ``name`` and
            ``ema_rate``) are used.
    """
    config = config.get("config", config)
    try:
        data, model = config["data"], config["model"]
    except (KeyError, TypeError):
        raise ConfigError(
            "config", "is not a score_sde config (no 'data' and 'model' sections)", "pass the nested config dict"
        ) from None
    kwargs = {key: value for key, value in model.items() if key not in _TRAINING_ONLY_MODEL_KEYS}
    kwargs.update(image_size=data["image_size"], num_channels=data["num_channels"], centered=data["centered"])
    return kwargs


def sinusoidal_embedding(labels: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """DDPM's positional embedding of noise labels: ``[sin(l f_k), cos(l f_k)]``.

    Args:
        labels: (B,) noise labels, here ``999 t`` in [0, 999].
        dim: embedding width; frequencies ``f_k = max_period^(-k / (dim / 2 - 1))``, k < dim / 2.

    Returns:
        (B, dim) in [-1, 1], float32 (float64 if ``labels`` is float64); an odd ``dim`` ends in a zero.
    """
    dtype = torch.float64 if labels.dtype == torch.float64 else torch.float32
    half = dim // 2
    frequencies = torch.exp(
        torch.arange(half, dtype=dtype, device=labels.device) * -(math.log(max_period) / (half - 1))
    )
    angles = labels.to(dtype)[:, None] * frequencies[None, :]
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(embedding, (0, dim % 2))


def _fan_avg_uniform_(weight: torch.Tensor, scale: float) -> None:
    """DDPM's initialization in place: uniform with variance ``scale / fan_avg``.

    ``fan_avg`` is the mean of the two leading dimensions, each times the kernel area; a
    ``scale`` of 0 means 1e-10 (a near-zero layer at the end of a residual branch).
    """
    scale = scale if scale != 0 else 1e-10
    kernel_area = math.prod(weight.shape[2:])
    fan_avg = (weight.shape[0] + weight.shape[1]) * kernel_area / 2
    bound = math.sqrt(3.0 * scale / fan_avg)
    with torch.no_grad():
        weight.uniform_(-bound, bound)


def _conv(in_channels: int, out_channels: int, kernel_size: int, init_scale: float = 1.0) -> nn.Conv2d:
    """Stride-1 'same' convolution with DDPM initialization and a zero bias."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    _fan_avg_uniform_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def _dense(in_features: int, out_features: int) -> nn.Linear:
    """Linear layer with DDPM initialization and a zero bias."""
    linear = nn.Linear(in_features, out_features)
    _fan_avg_uniform_(linear.weight, 1.0)
    nn.init.zeros_(linear.bias)
    return linear


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with ``min(channels // 4, 32)`` groups and eps 1e-6, as NCSN++ uses everywhere."""
    groups = min(channels // 4, 32)
    if groups < 1 or channels % groups:
        raise ConfigError(
            "diffusion.net.nf",
            f"gives a {channels}-channel layer that GroupNorm cannot split into min({channels} // 4, 32) groups",
            "use an nf (times every ch_mult) that is a multiple of 4 and, above 128 channels, of 32",
        )
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ChannelDense(nn.Module):
    """A per-pixel linear map over channels (the original's ``NIN``): ``y[c'] = sum_c x[c] W[c, c'] + b[c']``.

    ``W`` is stored (in, out), unlike a 1x1 convolution's (out, in, 1, 1).
    """

    def __init__(self, in_channels: int, out_channels: int, init_scale: float = 0.1) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(in_channels, out_channels))
        self.b = nn.Parameter(torch.zeros(out_channels))
        _fan_avg_uniform_(self.W, init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, in, H, W) -> (B, out, H, W)."""
        return torch.einsum("bchw,cd->bdhw", x, self.W) + self.b[:, None, None]


class AttentionBlock(nn.Module):
    """Single-head self-attention over all pixels, added back to the input (``AttnBlockpp``).

    Returns ``(x + attention(x)) / sqrt(2)`` with ``skip_rescale``, else ``x + attention(x)``.
    """

    def __init__(self, channels: int, *, skip_rescale: bool, init_scale: float) -> None:
        super().__init__()
        self.GroupNorm_0 = _group_norm(channels)
        self.NIN_0 = ChannelDense(channels, channels)
        self.NIN_1 = ChannelDense(channels, channels)
        self.NIN_2 = ChannelDense(channels, channels)
        self.NIN_3 = ChannelDense(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, H, W) -> (B, C, H, W)."""
        batch, channels, height, width = x.shape
        normed = self.GroupNorm_0(x)
        query = self.NIN_0(normed).flatten(2)  # (B, C, N)
        key = self.NIN_1(normed).flatten(2)
        value = self.NIN_2(normed).flatten(2)
        logits = torch.bmm(query.transpose(1, 2), key) * (int(channels) ** -0.5)  # (B, N query, N key)
        weights = torch.softmax(logits, dim=-1)
        attended = torch.bmm(value, weights.transpose(1, 2)).reshape(batch, channels, height, width)
        out = x + self.NIN_3(attended)
        return out / math.sqrt(2.0) if self.skip_rescale else out


class BigGANResBlock(nn.Module):
    """BigGAN-style residual block (``ResnetBlockBigGANpp``), optionally resampling by 2.

    norm -> swish -> [resample] -> conv3x3 -> + Dense(swish(temb)) -> norm -> swish -> dropout
    -> conv3x3; the shortcut is resampled the same way and goes through a 1x1 convolution
    when the width changes or the block resamples. Upsampling is nearest-neighbour, downsampling
    a 2x2 average (no FIR filter).

    Args:
        in_channels, out_channels: widths (``out_channels`` None: same as ``in_channels``).
        embedding_dim: width of the conditioning vector ``temb``.
        resample: ``"up"``, ``"down"`` or ``"none"``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        embedding_dim: int,
        resample: str = "none",
        dropout: float,
        skip_rescale: bool,
        init_scale: float,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.resample = resample
        self.skip_rescale = skip_rescale
        self.GroupNorm_0 = _group_norm(in_channels)
        self.Conv_0 = _conv(in_channels, out_channels, 3)
        self.Dense_0 = _dense(embedding_dim, out_channels)
        self.GroupNorm_1 = _group_norm(out_channels)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = _conv(out_channels, out_channels, 3, init_scale=init_scale)
        self.Conv_2 = _conv(in_channels, out_channels, 1) if in_channels != out_channels or resample != "none" else None

    def _resampled(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        """``x``: (B, C_in, H, W), ``temb``: (B, embedding_dim) or None -> (B, C_out, H', W'),
        H' = 2H up, H / 2 down, H otherwise."""
        h = self._resampled(F.silu(self.GroupNorm_0(x)))
        shortcut = self._resampled(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(F.silu(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(F.silu(self.GroupNorm_1(h))))
        if self.Conv_2 is not None:
            shortcut = self.Conv_2(shortcut)
        out = shortcut + h
        return out / math.sqrt(2.0) if self.skip_rescale else out


class NCSNpp(nn.Module):
    """NCSN++ as configured for DDPM++ (score_sde's ``ncsnpp`` model), one flat ``all_modules`` list.

    ``forward(x, labels)`` is the original network: ``x`` (B, num_channels, H, W) in [-1, 1]
    (``centered``; otherwise in [0, 1], mapped to [-1, 1] inside), ``labels`` (B,) noise labels
    (``999 t`` for the VP-SDE) -> (B, num_channels, H, W), the noise prediction (divided by
    ``sigmas[labels]`` if ``scale_by_sigma``). H and W are ``image_size`` (attention sits at the
    levels whose configured resolution is in ``attn_resolutions``).

    Keywords are the fields of score_sde's ``config.model`` (less ``name``, ``ema_rate``) and
    ``config.data.image_size / num_channels / centered``; :func:`net_kwargs_from_score_sde_config`
    maps a config, :data:`PUBLISHED_CIFAR10_NET` is the published one. ``resamp_with_conv``,
    ``fir_kernel``, ``progressive_combine``, ``fourier_scale`` and ``conv_size`` are accepted
    but do not change this configuration's network (as in the original).
    ``beta_min``/``beta_max`` give the VP-SDE of :meth:`ScoreSdeEpsilon.score`; ``sigma_min``,
    ``sigma_max`` and ``num_scales`` the ``sigmas`` buffer (float64, geometric, largest first).
    """

    def __init__(
        self,
        *,
        image_size: int = 32,
        num_channels: int = 3,
        centered: bool = True,
        nf: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 8,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        resamp_with_conv: bool = True,
        conditional: bool = True,
        fir: bool = False,
        fir_kernel: Sequence[int] = (1, 3, 3, 1),
        skip_rescale: bool = True,
        resblock_type: str = "biggan",
        progressive: str = "none",
        progressive_input: str = "none",
        progressive_combine: str = "sum",
        attention_type: str = "ddpm",
        init_scale: float = 0.0,
        embedding_type: str = "positional",
        fourier_scale: float = 16.0,
        conv_size: int = 3,
        normalization: str = "GroupNorm",
        nonlinearity: str = "swish",
        scale_by_sigma: bool = False,
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        num_scales: int = 1000,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
    ) -> None:
        super().__init__()
        chosen = {
            "fir": fir,
            "resblock_type": resblock_type,
            "progressive": progressive,
            "progressive_input": progressive_input,
            "attention_type": attention_type,
            "embedding_type": embedding_type,
            "normalization": normalization,
            "nonlinearity": nonlinearity,
        }
        for key, required in _FIXED_OPTIONS.items():
            if _casefolded(chosen[key]) != _casefolded(required):
                raise ConfigError(
                    f"diffusion.net.{key}",
                    f"{chosen[key]!r} is not implemented (advpure's NCSN++ covers the DDPM++ configuration)",
                    f"set {key}: {required!r}",
                )
        num_levels = len(ch_mult)
        if num_levels < 1 or image_size % 2 ** (num_levels - 1):
            raise ConfigError(
                "diffusion.net.image_size",
                f"{image_size} cannot be halved {num_levels - 1} times (ch_mult {list(ch_mult)})",
                "use an image_size divisible by 2 ** (len(ch_mult) - 1)",
            )
        for key, value in (("nf", nf), ("num_res_blocks", num_res_blocks), ("num_scales", num_scales)):
            if value < 1:
                raise ConfigError(f"diffusion.net.{key}", f"{value!r} is out of range", "set an integer >= 1")
        self.nf = nf
        self.num_res_blocks = num_res_blocks
        self.centered = centered
        self.conditional = conditional
        self.scale_by_sigma = scale_by_sigma
        self.beta_min = beta_min
        self.beta_max = beta_max
        self.register_buffer(
            "sigmas",
            torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), num_scales, dtype=torch.float64)),
        )
        resolutions = [image_size // 2**level for level in range(num_levels)]
        self.level_has_attention = [resolution in attn_resolutions for resolution in resolutions]

        embedding_dim = 4 * nf
        block_options = {
            "embedding_dim": embedding_dim,
            "dropout": dropout,
            "skip_rescale": skip_rescale,
            "init_scale": init_scale,
        }

        def resblock(in_channels: int, out_channels: int | None = None, resample: str = "none") -> BigGANResBlock:
            return BigGANResBlock(in_channels, out_channels, resample=resample, **block_options)

        def attention(channels: int) -> AttentionBlock:
            return AttentionBlock(channels, skip_rescale=skip_rescale, init_scale=init_scale)

        # The order below is the original's: it fixes every ``all_modules.<i>`` index and the
        # order of named_parameters() (which the released EMA shadow_params follow).
        layers: list[nn.Module] = []
        if conditional:
            layers += [_dense(nf, embedding_dim), _dense(embedding_dim, embedding_dim)]
        layers.append(_conv(num_channels, nf, 3))
        skip_widths = [nf]
        width = nf
        for level in range(num_levels):
            for _ in range(num_res_blocks):
                layers.append(resblock(width, nf * ch_mult[level]))
                width = nf * ch_mult[level]
                if self.level_has_attention[level]:
                    layers.append(attention(width))
                skip_widths.append(width)
            if level != num_levels - 1:
                layers.append(resblock(width, resample="down"))
                skip_widths.append(width)
        layers += [resblock(width), attention(width), resblock(width)]
        for level in reversed(range(num_levels)):
            for _ in range(num_res_blocks + 1):
                layers.append(resblock(width + skip_widths.pop(), nf * ch_mult[level]))
                width = nf * ch_mult[level]
            if self.level_has_attention[level]:
                layers.append(attention(width))
            if level != 0:
                layers.append(resblock(width, resample="up"))
        layers += [_group_norm(width), _conv(width, num_channels, 3, init_scale=init_scale)]
        self.all_modules = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, H, W) in [-1, 1] (``centered``) or [0, 1]; ``labels``: (B,) in [0, num_scales)
        -> (B, C, H, W), the network's output (a noise prediction for the VP-SDE model)."""
        layers = iter(self.all_modules)
        temb = None
        if self.conditional:
            temb = next(layers)(sinusoidal_embedding(labels, self.nf).to(x.dtype))
            temb = next(layers)(F.silu(temb))
        h = x if self.centered else 2 * x - 1
        skips = [next(layers)(h)]
        num_levels = len(self.level_has_attention)
        for level in range(num_levels):
            for _ in range(self.num_res_blocks):
                h = next(layers)(skips[-1], temb)
                if self.level_has_attention[level]:
                    h = next(layers)(h)
                skips.append(h)
            if level != num_levels - 1:
                skips.append(next(layers)(skips[-1], temb))
        h = next(layers)(skips[-1], temb)
        h = next(layers)(h)
        h = next(layers)(h, temb)
        for level in reversed(range(num_levels)):
            for _ in range(self.num_res_blocks + 1):
                h = next(layers)(torch.cat([h, skips.pop()], dim=1), temb)
            if self.level_has_attention[level]:
                h = next(layers)(h)
            if level != 0:
                h = next(layers)(h, temb)
        h = F.silu(next(layers)(h))
        h = next(layers)(h)
        if self.scale_by_sigma:
            h = h / self.sigmas[labels.long()].to(h.dtype)[:, None, None, None]
        return h


class ScoreSdeEpsilon(NCSNpp):
    """NCSN++ behind advpure's backbone signature; same keywords, state dict and parameters as :class:`NCSNpp`.

    ``forward(x, t)``: ``x`` (B, C, H, W) in [-1, 1], ``t`` (B,) or scalar in [0, 1] -> eps
    (B, C, H, W): the network called with labels ``999 t`` (what DiffPure's score function does
    for this continuous VP model).
    """

    def network_output(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The original network's call: ``x`` (B, C, H, W) in [-1, 1], ``labels`` (B,) -> (B, C, H, W)."""
        x = x if self.centered else (x + 1) / 2
        return super().forward(x, labels)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``x``: (B, C, H, W) in [-1, 1]; ``t``: (B,) or scalar in [0, 1] -> eps (B, C, H, W)."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        labels = (t * LABEL_SCALE).expand(x.shape[0]) if t.ndim == 0 else t * LABEL_SCALE
        return self.network_output(x, labels)

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """VP-SDE score ``-eps / std(t)``, ``std(t) = sqrt(1 - alpha_bar(t))`` with this model's betas;
        shapes as :meth:`forward`."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        std = VPSchedule(self.beta_min, self.beta_max).sigma(t)
        return -self(x, t) / std[:, None, None, None]
