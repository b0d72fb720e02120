"""Backbones computing in half precision (``diffusion.precision``): fp16 or bf16 inside, float32 outside.

One wrapper for every backbone. The purifier's state (x_t, the SDE/DDPM updates, guidance
terms) stays float32; only the network runs in the low-precision format, and its eps is
returned as float32 (the dtype of its input). How the network computes in it:

- a backbone with its own mixed-precision mode (a ``compute_in(dtype)`` method, e.g.
  :class:`advpure.diffusion.guided.GuidedEpsilon`, which reproduces guided-diffusion's
  ``use_fp16``) is converted once and called as is: results equal the original's in that format;
- any other backbone runs under ``torch.autocast`` (convolutions and matmuls in the format,
  normalizations and softmax in float32, weights kept float32 and cast per call).

Gradients flow through either (attacks differentiate the purifier in the chosen format). On a
CPU, float16 convolutions are supported but many times slower than float32; bf16 is the CPU
choice only on CPUs with bf16 instructions (AVX512-BF16, AMX; elsewhere it is emulated and much
slower, and a warning says so), fp16 the GPU one (it is what the guided-diffusion ImageNet model
ran in).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from advpure.config.enums import Precision
from advpure.diffusion.backbone import EpsilonBackbone, backbone_settings

log = logging.getLogger(__name__)

DTYPES: dict[Precision, torch.dtype] = {
    Precision.fp32: torch.float32,
    Precision.fp16: torch.float16,
    Precision.bf16: torch.bfloat16,
}


@runtime_checkable
class NativePrecision(Protocol):
    """A backbone that converts itself to compute in a low precision (guided-diffusion's own fp16
    torso: :meth:`advpure.diffusion.guided.GuidedEpsilon.compute_in`) instead of running under autocast."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def compute_in(self, dtype: torch.dtype) -> None: ...


class LowPrecisionBackbone(nn.Module):
    """``backbone`` computing in ``precision`` (fp16 or bf16); x and the returned eps keep x's dtype.

    Args:
        backbone: ``(x in [-1, 1], t in [0, 1]) -> eps``, with weights already loaded (a backbone
            with ``compute_in`` is converted here, in place).
        precision: ``fp16`` or ``bf16``.
    """

    def __init__(self, backbone: EpsilonBackbone, precision: Precision | str) -> None:
        super().__init__()
        self.precision = Precision(precision)
        if self.precision == Precision.fp32:
            raise ValueError("LowPrecisionBackbone is for fp16/bf16; use the backbone itself for fp32")
        self.backbone = backbone
        self.dtype = DTYPES[self.precision]
        self.native = isinstance(backbone, NativePrecision)
        if isinstance(backbone, NativePrecision):
            backbone.compute_in(self.dtype)
        self._warned_cpu = False

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and not self._warned_cpu:
            self._warned_cpu = True
            slow = slow_on_this_cpu(self.precision)
            if slow:
                log.warning(slow)
        if self.native:
            eps = self.backbone(x, t)
        else:
            with torch.autocast(device_type=x.device.type, dtype=self.dtype):
                eps = self.backbone(x, t)
        return eps.to(x.dtype)

    def settings(self) -> dict[str, Any]:
        """What a result file records: the format and how it is applied."""
        inner = backbone_settings(self.backbone)
        return {**inner, "precision": self.precision.value, "mode": "native" if self.native else "autocast"}


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            line = next((line for line in info if line.startswith("flags")), "")
    except OSError:
        return set()
    return set(line.split(":", 1)[-1].split())


def slow_on_this_cpu(precision: Precision, flags: set[str] | None = None) -> str | None:
    """Why ``precision`` is a poor CPU choice here, or None: fp16 convolutions are always slow on a
    CPU; bf16 ones without AVX512-BF16 or AMX-BF16 (``make bench`` measured 36x slower than fp32
    on an AVX2-only AMD EPYC)."""
    flags = cpu_flags() if flags is None else flags
    if precision == Precision.fp16:
        return (
            "diffusion.precision=fp16 on a CPU: float16 convolutions run many times slower there than "
            "float32; set diffusion.precision=fp32 for CPU runs"
        )
    if precision == Precision.bf16 and flags and not flags & {"avx512_bf16", "amx_bf16"}:
        return (
            "diffusion.precision=bf16 on a CPU without bf16 instructions (no avx512_bf16 / amx_bf16): bf16 "
            "is emulated, ~36x slower than float32 here; set diffusion.precision=fp32 for CPU runs"
        )
    return None


def with_precision(backbone: EpsilonBackbone, precision: Precision | str) -> EpsilonBackbone:
    """``backbone`` itself for fp32 (unchanged, bit for bit), else wrapped in :class:`LowPrecisionBackbone`."""
    precision = Precision(precision)
    return backbone if precision == Precision.fp32 else LowPrecisionBackbone(backbone, precision)
