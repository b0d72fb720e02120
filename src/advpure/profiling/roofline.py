"""FLOPs of a backbone call and the bf16 roofline of the device, for throughput tables.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add, matmuls
and convolutions only: what tensor cores execute). The roofline is the device's dense bf16
peak: for known GPUs the vendor's dense (no sparsity) figure; for a CPU or an unknown GPU the
throughput of a large bf16 matmul measured on the spot, named as measured (a CPU without bf16
instructions, where bf16 is emulated, gets its measured fp32 matmul peak instead, and says so).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from advpure.config.enums import Precision
from advpure.diffusion.precision import slow_on_this_cpu

# Dense bf16 tensor-core peaks (TFLOP/s), from the vendors' data sheets, matched on the CUDA device
# name; first match wins (so the more specific names come first).
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.4),
    ("H100 PCIe", 756.5),
    ("H100 NVL", 835.5),
    ("H100", 989.4),  # SXM5
    ("GH200", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("A10G", 70.0),
    ("RTX 4090", 165.2),
)


@dataclass(frozen=True)
class Roofline:
    """A device's bf16 peak in TFLOP/s and where the figure comes from."""

    device: str
    bf16_tflops: float
    source: str


def device_name(device: torch.device) -> str:
    """The CUDA device's name, or the CPU's model name with its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = "CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model} ({torch.get_num_threads()} threads)"


def flops_per_call(fn, *inputs: torch.Tensor) -> int:
    """FLOPs of ``fn(*inputs)`` as counted by torch's flop counter (forward only)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*inputs)
    return int(counter.get_total_flops())


def data_sheet_peak(gpu_name: str) -> tuple[str, float] | None:
    """(matched key, dense bf16 TFLOP/s) for a known GPU name, else None."""
    return next(((key, peak) for key, peak in BF16_PEAK_TFLOPS if key in gpu_name), None)


def measured_matmul_tflops(device: torch.device, dtype: torch.dtype = torch.bfloat16, size: int = 2048) -> float:
    """Achieved TFLOP/s of repeated ``size`` x ``size`` matmuls in ``dtype`` (at least ~1 s of work)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    flops = 2 * size**3
    a @ b  # warm-up
    _sync(device)
    repeats, elapsed = 1, 0.0
    while elapsed < 1.0:
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed < 1.0:
            repeats *= 2
    return flops * repeats / elapsed / 1e12


def bf16_roofline(device: torch.device) -> Roofline:
    """The device's dense bf16 peak: the data-sheet figure for a known GPU, else a measured matmul."""
    name = device_name(device)
    sheet = data_sheet_peak(name) if device.type == "cuda" else None
    if sheet is not None:
        return Roofline(name, sheet[1], f"data sheet (dense bf16, matched {sheet[0]!r})")
    if device.type != "cpu":
        return Roofline(name, measured_matmul_tflops(device), "measured: 2048x2048 bf16 matmul throughput")
    if slow_on_this_cpu(Precision.bf16) is None:  # AVX512-BF16 / AMX: bf16 matmuls at full size
        return Roofline(name, measured_matmul_tflops(device), "measured: 2048x2048 bf16 matmul throughput")
    # A CPU without bf16 hardware emulates bf16 at ~1/100 of fp32: small sizes.
    bf16 = measured_matmul_tflops(device, torch.bfloat16, size=512)
    fp32 = measured_matmul_tflops(device, torch.float32, size=2048)
    if fp32 > bf16:
        return Roofline(
            name, fp32, f"measured: 2048x2048 fp32 matmul; bf16 matmul (512x512) runs at only {bf16 * 1e3:.1f} GFLOP/s"
        )
    return Roofline(name, bf16, "measured: 512x512 bf16 matmul throughput")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
