"""make bench's measurements: timed calls, a purification batch, one backbone call, one attack
iteration, the wall time of make run."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from bench_paths import PATHS, PATHS_BY_NAME, ROOT, T_STAR, PathSpec, purifier_for, unet_config
from bench_tables import Report

from advpure.diffusion.backbone import UNetEpsilon
from advpure.profiling.memory import GradMemoryCase, measure_gradient
from advpure.purifiers.diffpure import DiffPure
from advpure.purifiers.noise import GlobalNoise


@dataclass
class Measurement:
    path: PathSpec
    batch: int
    seconds: float
    peak_bytes: int | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.batch / self.seconds


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup=None) -> tuple[float, int | None]:
    """(fastest of ``repeats`` calls of ``fn`` in seconds, peak extra CUDA memory), after one call of
    ``warmup`` (default ``fn``: loads kernels, compiles, captures graphs)."""
    (warmup or fn)()
    sync(device)
    peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - baseline
    return min(times), peak


def measure_batch(
    paths: list[PathSpec], unet: UNetEpsilon, batch: int, device: torch.device, repeats: int, report: Report
) -> dict[str, Measurement]:
    """Every path on one batch of ``batch`` random images: each is built and warmed up (one step on
    the same shapes: loads kernels, compiles, records CUDA graphs), then all are timed in
    ``repeats`` interleaved rounds (A, B, C, A, B, C, ...), so that a slow spell of a shared
    machine falls on every path alike; each keeps its fastest round and the largest extra CUDA
    memory of its calls. A path whose warm-up would start after the report's deadline is skipped."""
    x = torch.rand(batch, 3, 32, 32, device=device)

    def call(purifier: DiffPure) -> None:
        with torch.no_grad():
            purifier(x, GlobalNoise())
        sync(device)

    ready: dict[str, DiffPure] = {}
    for path in paths:
        if report.out_of_time(f"{path.name} @ {batch}"):
            continue
        purifier = purifier_for(path, unet)
        call(DiffPure(purifier.backbone, t_star=T_STAR, dt=T_STAR, solver=path.solver))
        ready[path.name] = purifier
    seconds: dict[str, list[float]] = {name: [] for name in ready}
    peaks: dict[str, int | None] = dict.fromkeys(ready)
    for _ in range(repeats):
        for name, purifier in ready.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                baseline = torch.cuda.memory_allocated(device)
            start = time.perf_counter()
            call(purifier)
            seconds[name].append(time.perf_counter() - start)
            if device.type == "cuda":
                peaks[name] = max(peaks[name] or 0, torch.cuda.max_memory_allocated(device) - baseline)
    return {name: Measurement(PATHS_BY_NAME[name], batch, min(seconds[name]), peaks[name]) for name in ready}


def backbone_call_seconds(path: PathSpec, unet: UNetEpsilon, batch: int, device: torch.device) -> float:
    """Seconds of one backbone call of ``path`` on ``batch`` 32x32 images (after a warm-up call)."""
    backbone = purifier_for(path, unet).backbone
    x = torch.randn(batch, 3, 32, 32, device=device)
    t = torch.full((batch,), 0.05, device=device)

    def call() -> None:
        with torch.no_grad():
            backbone(x, t)

    return timed(call, device, 1)[0]


def measure_gradient_iteration(
    mode: str, steps: int, unet: UNetEpsilon, batch: int, device: torch.device
) -> dict[str, Any]:
    """Seconds and peak memory of one forward + exact gradient at ``steps`` steps, and the ratio to
    one purification forward (fp32 loop, no graph) at the same steps."""
    forward_path = PATHS[1]
    if device.type == "cpu":  # memory: the process high-water mark, in a fresh process per case
        config = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in unet_config().items())
        case = GradMemoryCase(steps, True, batch, T_STAR, mode, config, torch.get_num_threads(), include_warmup=True)
        peak, seconds = measure_gradient(case)
    else:
        purifier = purifier_for(forward_path, unet, dt=T_STAR / steps, grad_mode=mode)
        x = torch.rand(batch, 3, 32, 32, device=device)

        def gradient() -> None:
            xg = x.clone().requires_grad_(True)
            torch.autograd.grad(purifier(xg, GlobalNoise()).sum(), xg)

        seconds, peak = timed(gradient, device, 1)
    forward = purifier_for(forward_path, unet, dt=T_STAR / steps)
    x = torch.rand(batch, 3, 32, 32, device=device)

    def call(chosen: DiffPure = forward) -> None:
        with torch.no_grad():
            chosen(x, GlobalNoise())

    one_step = DiffPure(forward.backbone, t_star=T_STAR, dt=T_STAR)
    forward_seconds, _ = timed(call, device, 1, warmup=lambda: call(one_step))
    return {"mode": mode, "steps": steps, "seconds": seconds, "ratio": seconds / forward_seconds, "peak": peak}


def time_make_run() -> tuple[float, str]:
    """Wall seconds of the default evaluation (``run.py``, as ``make run`` runs it, W&B off, no reuse
    of stored batches) and the last line of its output."""
    with tempfile.TemporaryDirectory() as folder:
        command = [
            sys.executable,
            str(ROOT / "run.py"),
            "logger=none",
            "task.resume=false",
            f"hydra.run.dir={folder}/run",
            f"paths.evaluations={folder}/evaluations",
        ]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"run.py failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, (done.stdout.strip().splitlines() or [""])[-1]
