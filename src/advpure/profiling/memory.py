"""Peak resident memory of one purification's forward and backward pass, measured in a fresh process.

The process high-water mark (VmHWM) only grows, so each measurement runs in its own
spawned interpreter: it builds the model, runs one warm-up step on a single image, records the high-water mark,
runs the measured call, and reports the growth. This is what the machine actually had to hold
(weights are in the baseline; activations, stored states and gradients are in the growth).
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DIGITS_UNET = {
    "sample_size": 8,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": (32, 64),
    "down_block_types": ("DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D"),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "attention_head_dim": 8,
}


@dataclass(frozen=True)
class GradMemoryCase:
    """One measurement: DiffPure with ``n_steps`` steps at t* = 0.1 on a batch of images.

    ``unet``: the ``UNet2DModel`` keywords (``None``: the digits UNet, 8x8 grey images);
    ``grad_mode``: ``full`` (the loop, checkpointed per step if ``checkpoint_steps``) or ``adjoint``;
    ``include_warmup``: measure from before the one-image warm-up (for a batch so small that the
    warm-up alone would reach the measured call's high-water mark).
    """

    n_steps: int
    checkpoint_steps: bool = True
    batch_size: int = 32
    t_star: float = 0.1
    grad_mode: str = "full"
    unet: tuple[tuple[str, Any], ...] | None = None
    threads: int = 1
    include_warmup: bool = False

    def unet_kwargs(self) -> dict[str, Any]:
        return dict(self.unet) if self.unet is not None else dict(DIGITS_UNET)


def _max_rss_bytes() -> int:
    """This process's resident high-water mark. On Linux, VmHWM of the process's own memory map
    (``ru_maxrss`` would carry over the parent's mark through fork + exec)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _measure(case: GradMemoryCase, queue: Any) -> None:
    import torch

    from advpure.diffusion.backbone import UNetEpsilon
    from advpure.purifiers.diffpure import DiffPure
    from advpure.purifiers.noise import SeededNoise

    torch.set_num_threads(case.threads)
    torch.manual_seed(0)
    unet = case.unet_kwargs()
    backbone = UNetEpsilon(**unet).eval().requires_grad_(False)
    side = unet["sample_size"]
    x = torch.rand(case.batch_size, unet["in_channels"], side, side, requires_grad=True)
    settings = {"checkpoint_steps": case.checkpoint_steps, "grad_mode": case.grad_mode}
    # Warm up on one image (loads kernels) so the high-water mark stays near the baseline.
    before_warmup = _max_rss_bytes()
    warmup = DiffPure(backbone, t_star=case.t_star, dt=case.t_star, **settings)
    warmup(x[:1].detach().requires_grad_(True), SeededNoise(0)).sum().backward()
    purifier = DiffPure(backbone, t_star=case.t_star, dt=case.t_star / case.n_steps, **settings)
    before = _max_rss_bytes()
    start = time.perf_counter()
    purifier(x, SeededNoise(0)).sum().backward()
    queue.put((_max_rss_bytes() - (before_warmup if case.include_warmup else before), time.perf_counter() - start))


def peak_memory_growth(case: GradMemoryCase) -> int:
    """Bytes by which the process high-water mark grew during one forward + backward of ``case``."""
    return measure_gradient(case)[0]


def measure_gradient(case: GradMemoryCase) -> tuple[int, float]:
    """(bytes of high-water-mark growth, seconds) of one forward + backward of ``case``, in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(case, queue))
    process.start()
    process.join(timeout=900)
    if process.exitcode != 0:
        process.kill()
        raise RuntimeError(f"memory measurement of {case} failed (exit code {process.exitcode})")
    growth, seconds = queue.get(timeout=10)
    return int(growth), float(seconds)
