"""make bench's purification paths (DiffPure's reference and each change), the predictions written
before measuring them, and the backbone they run."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from advpure.config.enums import Precision
from advpure.diffusion.acceleration import accelerated
from advpure.diffusion.backbone import UNetEpsilon
from advpure.diffusion.precision import slow_on_this_cpu, with_precision
from advpure.purifiers.diffpure import DiffPure

ROOT = Path(__file__).resolve().parents[1]
T_STAR, DT = 0.1, 1e-3


@dataclass(frozen=True)
class PathSpec:
    """One purification path: solver, backbone precision and execution options, and the path it
    adds one change to (``base``), whose measured ratio is that change's gain."""

    name: str
    solver: str = "loop"
    precision: str = "fp32"
    channels_last: bool = False
    compile: str = "off"
    base: str | None = None
    change: str = ""
    cuda_only: bool = False

    def runs_in_full(self, kind: str) -> bool:
        """Whether its 100-step purifications are run on a device of this kind. bf16 on a CPU without
        bf16 instructions is ~36x slower than fp32 (measured per backbone call on an AVX2 EPYC):
        there the change is measured on one backbone call instead."""
        return not (kind == "cpu" and self.precision == "bf16")


PATHS = (
    PathSpec("reference", solver="torchsde"),
    PathSpec("loop", base="reference", change="advpure's Euler-Maruyama loop instead of torchsde.sdeint"),
    PathSpec(
        "loop+bf16",
        precision="bf16",
        base="loop",
        change="bf16 autocast backbone, fp32 state",
    ),
    PathSpec(
        "loop+bf16+nhwc",
        precision="bf16",
        channels_last=True,
        base="loop+bf16",
        change="channels_last",
    ),
    PathSpec(
        "loop+bf16+nhwc+compile",
        precision="bf16",
        channels_last=True,
        compile="default",
        base="loop+bf16+nhwc",
        change="torch.compile (inductor)",
        cuda_only=True,  # on a CPU: measured in fp32 (loop+compile)
    ),
    PathSpec(
        "loop+bf16+nhwc+cudagraphs",
        precision="bf16",
        channels_last=True,
        compile="reduce-overhead",
        base="loop+bf16+nhwc+compile",
        change="CUDA graphs (torch.compile reduce-overhead)",
        cuda_only=True,
    ),
    PathSpec("loop+nhwc", channels_last=True, base="loop", change="channels_last (fp32)"),
    PathSpec("loop+compile", compile="default", base="loop", change="torch.compile (fp32)"),
)

PATHS_BY_NAME = {p.name: p for p in PATHS}

# Predicted gain of each change (ratio of images/s to its base), per device kind (cuda; cpu: no bf16
# instructions; cpu+bf16: AVX512-BF16/AMX), written down before the change was measured; RESULTS.md
# sets the measured ratio next to it. The cpu+bf16 predictions were written on 2026-12-01, on an
# Intel Xeon with AMX, after one smoke run had measured bf16 at 1.24x fp32 per backbone call (batch 1).
PREDICTIONS: dict[str, dict[str, str]] = {
    "advpure's Euler-Maruyama loop instead of torchsde.sdeint": {
        "cuda": "1.1-1.3x: the same kernels; torchsde's per-step Python work (Brownian interval tree "
        "queries, tuple bookkeeping) is hidden behind large batches, visible at small ones",
        "cpu": "1.0-1.05x: the backbone's convolutions dominate every step",
        "cpu+bf16": "1.0-1.05x: the backbone's convolutions dominate every step",
    },
    "bf16 autocast backbone, fp32 state": {
        "cuda": "2-3x: tensor-core bf16 against TF32-less fp32 convolutions and matmuls",
        "cpu": "0.3-0.8x: without AVX512-BF16/AMX bf16 convolutions are emulated",
        "cpu+bf16": "1.1-1.5x: AMX bf16 convolutions, but autocast's casts and the fp32 GroupNorm/SiLU stay",
    },
    "channels_last": {
        "cuda": "1.1-1.3x on top of bf16: cuDNN's NHWC tensor-core kernels avoid layout transposes",
        "cpu": "0.9-1.1x",
        "cpu+bf16": "1.2-2x: oneDNN's AMX bf16 convolutions want NHWC (blocked) layouts",
    },
    "torch.compile (inductor)": {
        "cuda": "1.2-1.5x: GroupNorm+SiLU and the attention block fused, fewer memory round trips",
        "cpu": "1.0-1.3x",
        "cpu+bf16": "1.0-1.3x",
    },
    "CUDA graphs (torch.compile reduce-overhead)": {
        "cuda": "1.5-3x at batch <= 16 (launch-bound), ~1.0x at >= 256 (compute-bound)",
        "cpu": "n/a",
        "cpu+bf16": "n/a",
    },
    "channels_last (fp32)": {
        "cuda": "1.0-1.1x (fp32 has no tensor cores)",
        "cpu": "0.9-1.1x",
        "cpu+bf16": "0.9-1.3x (the AMD EPYC measured 1.30x)",
    },
    "torch.compile (fp32)": {"cuda": "1.1-1.3x", "cpu": "1.0-1.3x", "cpu+bf16": "1.0-1.3x"},
}


def unet_config() -> dict[str, Any]:
    """The UNet2DModel keywords of conf/diffusion/ddpm_cifar10.yaml."""
    net = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/diffusion/ddpm_cifar10.yaml").net)
    net.pop("_target_")
    return net


def cifar_unet(device: torch.device) -> UNetEpsilon:
    """The DDPM CIFAR-10 UNet of conf/diffusion/ddpm_cifar10.yaml, random weights, eval mode."""
    torch.manual_seed(0)
    return UNetEpsilon(**unet_config()).to(device).eval().requires_grad_(False)


def purifier_for(path: PathSpec, unet: UNetEpsilon, dt: float = DT, **kwargs: Any) -> DiffPure:
    backbone = accelerated(copy.deepcopy(unet), path.channels_last, path.compile)
    backbone = with_precision(backbone, path.precision)
    return DiffPure(backbone, t_star=T_STAR, dt=dt, solver=path.solver, **kwargs)


def device_kind(device: torch.device) -> str:
    """cuda, cpu (no bf16 instructions: bf16 emulated) or cpu+bf16 (AVX512-BF16 / AMX): the keys of
    PREDICTIONS."""
    if device.type == "cpu" and slow_on_this_cpu(Precision.bf16) is None:
        return "cpu+bf16"
    return device.type
