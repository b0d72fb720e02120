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
    """One measurement: DiffPure with ``n_steps`` steps at t* = 0.1, batch of 8x8 digits-sized images."""

    n_steps: int
    checkpoint_steps: bool = True
    batch_size: int = 32
    t_star: float = 0.1


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

    torch.set_num_threads(1)
    torch.manual_seed(0)
    backbone = UNetEpsilon(**DIGITS_UNET).requires_grad_(False)
    x = torch.rand(case.batch_size, 1, 8, 8, requires_grad=True)
    # Warm up on one image (loads kernels) so the high-water mark stays near the baseline.
    warmup = DiffPure(backbone, t_star=case.t_star, dt=case.t_star, checkpoint_steps=case.checkpoint_steps)
    warmup(x[:1].detach().requires_grad_(True), SeededNoise(0)).sum().backward()
    purifier = DiffPure(
        backbone, t_star=case.t_star, dt=case.t_star / case.n_steps, checkpoint_steps=case.checkpoint_steps
    )
    before = _max_rss_bytes()
    purifier(x, SeededNoise(0)).sum().backward()
    queue.put(_max_rss_bytes() - before)


def peak_memory_growth(case: GradMemoryCase) -> int:
    """Bytes by which the process high-water mark grew during one forward + backward of ``case``."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(case, queue))
    process.start()
    process.join(timeout=900)
    if process.exitcode != 0:
        process.kill()
        raise RuntimeError(f"memory measurement of {case} failed (exit code {process.exitcode})")
    return int(queue.get(timeout=10))
