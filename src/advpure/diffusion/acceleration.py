"""Faster execution of a backbone without changing what it computes: channels_last and torch.compile.

``diffusion.channels_last``: weights and inputs in NHWC memory order, the layout tensor cores'
convolution kernels prefer (on a GPU, typically a gain for convolution-heavy UNets under
bf16/fp16; on a CPU, oneDNN's choice). ``diffusion.compile``: ``torch.compile`` of the network
(``default``: fused kernels; ``reduce-overhead``: the same, each call replayed as a CUDA graph, which
removes the per-kernel launch cost of a fixed-shape step loop; ``max-autotune``: also searches
matmul/convolution kernels). Outputs equal the plain network's up to floating-point reassociation
(tests compare them). Every wrapped backbone keeps the signature ``(x in [-1, 1], t in [0, 1]) ->
eps`` and returns eps in the standard contiguous layout.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advpure.config.enums import CompileMode
from advpure.diffusion.backbone import EpsilonBackbone, backbone_settings


class AcceleratedBackbone(nn.Module):
    """``backbone`` in channels_last memory order and/or compiled by ``torch.compile``.

    Args:
        backbone: ``(x (B, C, H, W) in [-1, 1], t (B,) in [0, 1]) -> eps (B, C, H, W)``; converted
            to channels_last in place when ``channels_last``.
        channels_last: NHWC weights and inputs.
        compile_mode: ``off`` or a ``torch.compile`` mode. Compilation happens at the first call
            of each input shape (seconds to minutes); later calls of that shape reuse it.
    """

    def __init__(self, backbone: EpsilonBackbone, channels_last: bool, compile_mode: CompileMode | str) -> None:
        super().__init__()
        self.backbone = backbone
        self.channels_last = bool(channels_last)
        self.compile_mode = CompileMode(compile_mode)
        if self.channels_last and isinstance(backbone, nn.Module):
            backbone.to(memory_format=torch.channels_last)
        call = backbone
        if self.compile_mode != CompileMode.off:
            call = torch.compile(backbone, mode=self.compile_mode.value, fullgraph=False)
        object.__setattr__(self, "_call", call)  # not a submodule: the weights are backbone's

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.compile_mode == CompileMode.reduce_overhead:
            # Each call is a new CUDA-graph step; its output buffer is reused by the next replay,
            # so the caller gets a copy (a purification step keeps eps while computing the update).
            torch.compiler.cudagraph_mark_step_begin()
            return self._call(x, t).clone(memory_format=torch.contiguous_format)
        return self._call(x, t).contiguous()

    def settings(self) -> dict[str, Any]:
        """What a result file records: the memory format and the compile mode."""
        inner = backbone_settings(self.backbone)
        return {**inner, "channels_last": self.channels_last, "compile": self.compile_mode.value}


def accelerated(
    backbone: EpsilonBackbone, channels_last: bool = False, compile_mode: CompileMode | str = CompileMode.off
) -> EpsilonBackbone:
    """``backbone`` itself when neither option is on (unchanged), else :class:`AcceleratedBackbone`."""
    if not channels_last and CompileMode(compile_mode) == CompileMode.off:
        return backbone
    return AcceleratedBackbone(backbone, channels_last, compile_mode)
