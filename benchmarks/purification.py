"""make bench: DiffPure purification and exact-gradient attack iterations, against DiffPure's reference path.

On whatever device it finds (CUDA if present, else the CPU) it measures, prints and writes to
``benchmarks/RESULTS.md`` (device, versions, date):

1. the backbone: the DDPM CIFAR-10 UNet (diffusers UNet2DModel, conf/diffusion/ddpm_cifar10.yaml,
   random weights), its parameters and FLOPs per image per call, and the device's bf16 roofline;
2. purification at t* = 0.1, dt = 1e-3 (100 steps) for several batch sizes: the reference path
   (torchsde ``sdeint``, Euler, fp32, as DiffPure runs it) and advpure's paths, each adding one
   change (own loop, bf16, channels_last, torch.compile, CUDA graphs): images/s, achieved
   TFLOP/s, % of roofline, peak memory (GPU), speed-up over the reference in the same run;
3. one attack iteration (forward + exact gradient, ``full`` checkpointed and ``adjoint``) at 20,
   100 and 200 steps: time as a ratio to one purification forward, and peak memory;
4. on the CPU: the wall time of ``make run`` (the default evaluation).

Each change's predicted gain (``PREDICTIONS``, written before it was measured) is printed with
the measured gain. Every row is written to the output file as it is measured (a run stopped early
keeps its rows). Usage: ``python benchmarks/purification.py [--batch-sizes 1 4] [--skip-run]
[--deadline-s 400] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchsde
from omegaconf import OmegaConf

from advpure.config.enums import Precision
from advpure.diffusion.acceleration import accelerated
from advpure.diffusion.backbone import UNetEpsilon
from advpure.diffusion.precision import slow_on_this_cpu, with_precision
from advpure.io import write_text_atomic
from advpure.profiling.memory import GradMemoryCase, measure_gradient
from advpure.profiling.roofline import Roofline, bf16_roofline, flops_per_call
from advpure.purifiers.diffpure import DiffPure
from advpure.purifiers.noise import GlobalNoise

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


def table_head(title: str, columns: tuple[str, ...], note: str = "") -> list[str]:
    """A Markdown section heading, an optional note, and a table header."""
    header = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    return ["", title, "", *([note, ""] if note else []), *header]


def megabytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


class Report:
    """The benchmark's Markdown, printed line by line and rewritten to ``path`` after every addition,
    so a run stopped early (a time limit, a crash) keeps every row it measured; until
    :meth:`finish`, the file ends with a line saying it is incomplete.

    ``deadline_s``: seconds after which :meth:`out_of_time` is true (measurements not yet started
    are then listed as skipped rather than run); ``None``: no limit.
    """

    INCOMPLETE = "_Incomplete: the run stopped, or is still running, after the line above._"

    def __init__(self, path: Path, deadline_s: float | None = None) -> None:
        self.path = path
        self.deadline_s = deadline_s
        self.started = time.perf_counter()
        self.lines: list[str] = []
        self.skipped: list[str] = []

    def add(self, *lines: str) -> None:
        self.lines += lines
        print("\n".join(lines), flush=True)
        write_text_atomic(self.path, "\n".join([*self.lines, "", self.INCOMPLETE]) + "\n")

    def out_of_time(self, what: str) -> bool:
        """Whether the deadline has passed; if so, ``what`` is recorded as skipped."""
        late = self.deadline_s is not None and time.perf_counter() - self.started > self.deadline_s
        if late:
            self.skipped.append(what)
        return late

    def finish(self) -> None:
        if self.skipped:
            self.add(
                "",
                f"Skipped after the {self.deadline_s:.0f} s deadline (--deadline-s): " + "; ".join(self.skipped) + ".",
            )
        write_text_atomic(self.path, "\n".join(self.lines) + "\n")
        print(f"\nwritten: {self.path}")


def device_kind(device: torch.device) -> str:
    """cuda, cpu (no bf16 instructions: bf16 emulated) or cpu+bf16 (AVX512-BF16 / AMX): the keys of
    PREDICTIONS."""
    if device.type == "cpu" and slow_on_this_cpu(Precision.bf16) is None:
        return "cpu+bf16"
    return device.type


@dataclass
class Bench:
    """What every section of one benchmark run shares: options, device, backbone and its cost."""

    args: argparse.Namespace
    device: torch.device
    unet: UNetEpsilon
    flops: int
    roofline: Roofline
    report: Report
    kind: str  # device_kind(device)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def purification_section(bench: Bench) -> None:
    """Purification at t* = 0.1, 100 steps, by each path and batch size; the fastest path per batch
    size; each change's predicted and measured gain."""
    args, report, steps, flops = bench.args, bench.report, round(T_STAR / DT), bench.flops
    report.add(
        "",
        f"## Purification at t* = {T_STAR}, dt = {DT} ({steps} steps), no gradient",
        "",
        "reference = torchsde.sdeint, Euler, fp32 (DiffPure's path). Each other row adds one change "
        "to the row named in 'base' (see the table of changes below); speed-up is against the reference "
        f"at the same batch size. Time: the fastest of {args.repeats} rounds in which every path runs once "
        "in turn (interleaved, so a slow spell of a shared machine falls on all paths), after a one-step "
        "warm-up. Peak memory: extra CUDA memory of one call (not measured on CPU).",
        "",
        "| path | batch | s / purification | images/s | TFLOP/s | % of roofline | peak MB | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    )
    results: dict[tuple[str, int], Measurement] = {}
    chosen = set(args.paths or [p.name for p in PATHS]) | {"reference"}
    available = [p for p in PATHS if (bench.cuda or not p.cuda_only) and p.name in chosen]
    paths = [p for p in available if p.runs_in_full(bench.kind)]
    per_call = {p.name for p in available if p not in paths}
    for batch in args.batch_sizes:
        for name, m in measure_batch(paths, bench.unet, batch, bench.device, args.repeats, report).items():
            results[(name, batch)] = m
            tflops = batch * steps * flops / m.seconds / 1e12
            reference = results.get(("reference", batch))
            speedup = f"{reference.seconds / m.seconds:.2f}x" if reference else "-"
            report.add(
                f"| {name} | {batch} | {m.seconds:.3f} | {m.images_per_second:.3g} | {tflops:.2f} | "
                f"{100 * tflops / bench.roofline.bf16_tflops:.1f} | {megabytes(m.peak_bytes)} | {speedup} |"
            )

    fastest_lines = table_head(
        "### Fastest advpure path per batch size",
        ("batch", "fastest path", "images/s", "% of roofline", "speed-up over reference"),
    )
    for batch in args.batch_sizes:
        measured = [results[(p.name, batch)] for p in paths if p.name != "reference" and (p.name, batch) in results]
        if not measured or ("reference", batch) not in results:
            continue
        best = max(measured, key=lambda m: m.images_per_second)
        percent = 100 * batch * steps * flops / best.seconds / 1e12 / bench.roofline.bf16_tflops
        speedup = results[("reference", batch)].seconds / best.seconds
        fastest_lines.append(
            f"| {batch} | {best.path.name} | {best.images_per_second:.3g} | {percent:.1f} | {speedup:.2f}x |"
        )
    report.add(*fastest_lines)

    prediction_lines = table_head(
        "### Each change: predicted gain (written before measuring) and measured gain",
        ("change", "base -> path", "predicted", "measured (per batch size)"),
    )
    call_batch = max(args.batch_sizes)
    for path in available:
        if path.base is None or path.base not in chosen:
            continue
        if path.name in per_call:
            if report.out_of_time(f"{path.name} per backbone call"):
                continue
            base_seconds = backbone_call_seconds(PATHS_BY_NAME[path.base], bench.unet, call_batch, bench.device)
            ratio = base_seconds / backbone_call_seconds(path, bench.unet, call_batch, bench.device)
            gains = f"{ratio:.3f}x per backbone call @ {call_batch} (100-step run skipped on this device)"
        else:
            gains = ", ".join(
                f"{results[(path.base, b)].seconds / results[(path.name, b)].seconds:.2f}x @ {b}"
                for b in args.batch_sizes
                if (path.base, b) in results and (path.name, b) in results
            )
        prediction_lines.append(
            f"| {path.change} | {path.base} -> {path.name} | {PREDICTIONS[path.change][bench.kind]} | {gains or '-'} |"
        )
    report.add(*prediction_lines)


def attack_section(bench: Bench) -> None:
    """One attack iteration (forward + gradient), ``full`` and ``adjoint``, at each step count."""
    args, report = bench.args, bench.report
    report.add(
        "",
        f"## One attack iteration: forward + exact gradient (batch {args.attack_batch}, fp32 loop)",
        "",
        "full = autograd through the loop, checkpointed per step (forward, recompute, input-only backward: "
        "~3x a forward in FLOPs); adjoint = torchsde.sdeint_adjoint (approximate gradient). ratio = time / one "
        "purification forward at the same steps. Peak memory: "
        + (
            "extra CUDA memory of the call."
            if bench.cuda
            else "growth of the process high-water mark in a fresh process, from after the weights were built "
            "(includes a 1-step warm-up on one image)."
        ),
        "",
        "| mode | steps | s / iteration | ratio to forward | peak MB |",
        "|---|---|---|---|---|",
    )
    memory: dict[tuple[str, int], int | None] = {}
    for mode in ("full", "adjoint"):
        for n in args.attack_steps:
            if report.out_of_time(f"{mode} @ {n} steps"):
                continue
            r = measure_gradient_iteration(mode, n, bench.unet, args.attack_batch, bench.device)
            memory[(mode, n)] = r["peak"]
            report.add(f"| {mode} | {n} | {r['seconds']:.2f} | {r['ratio']:.2f}x | {megabytes(r['peak'])} |")
    low, high = min(args.attack_steps), max(args.attack_steps)
    if memory.get(("full", low)) and memory.get(("full", high)) is not None:
        flat = memory[("full", high)] / memory[("full", low)]
        report.add(f"\nfull: peak memory at {high} steps is {flat:.2f}x that at {low} steps (target <= 1.5x).")


def make_run_section(bench: Bench) -> None:
    """The wall time of make run's evaluation on this machine."""
    if bench.report.out_of_time("make run's evaluation"):
        return
    seconds, last = time_make_run()
    bench.report.add(
        "",
        "## The CPU default: `make run`'s evaluation",
        "",
        "run.py with its defaults (digits, DiffPure 10 steps, AutoAttack rand, 64 images), W&B off, "
        "stored batches not reused; wall time including start-up.",
        "",
        "| threads | wall time (s) | target |",
        "|---|---|---|",
        f"| {torch.get_num_threads()} | {seconds:.0f} | <= 300 |",
    )
    print(f"(last line of run.py: {last})")


SECTIONS = {"purification": purification_section, "attack": attack_section, "run": make_run_section}


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256, 1024] if cuda else [1, 4])
    parser.add_argument("--repeats", type=int, default=3 if cuda else 2)
    parser.add_argument("--attack-steps", type=int, nargs="+", default=[20, 100, 200])
    parser.add_argument("--attack-batch", type=int, default=64 if cuda else 1)
    parser.add_argument("--paths", nargs="+", choices=list(PATHS_BY_NAME), default=None, help="a subset of the paths")
    parser.add_argument(
        "--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS), help="what to measure, in this order"
    )
    parser.add_argument("--skip-run", action="store_true", help="do not time make run's evaluation (section run)")
    parser.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help="start no measurement after this many seconds; what is left is listed as skipped",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()

    device = torch.device("cuda" if cuda else "cpu")
    report = Report(args.out, args.deadline_s)
    unet = cifar_unet(device)
    parameters = sum(p.numel() for p in unet.parameters())
    flops = flops_per_call(unet, torch.zeros(1, 3, 32, 32, device=device), torch.zeros(1, device=device))
    roofline = bf16_roofline(device)
    import diffusers

    report.add(
        "# advpure benchmarks",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- device: {roofline.device}",
        f"- roofline: {roofline.bf16_tflops:.2f} TFLOP/s ({roofline.source})",
        f"- versions: python {platform.python_version()}, torch {torch.__version__}, torchsde "
        f"{torchsde.__version__}, diffusers {diffusers.__version__}",
        f"- backbone: DDPM CIFAR-10 UNet (diffusers UNet2DModel, conf/diffusion/ddpm_cifar10.yaml), "
        f"{parameters / 1e6:.1f}M parameters, {flops / 1e9:.2f} GFLOP per image per call (torch flop counter)",
        f"- command: `python benchmarks/purification.py {' '.join(sys.argv[1:])}`".rstrip(),
    )
    bench = Bench(args, device, unet, flops, roofline, report, device_kind(device))
    for section in args.sections:
        if not (section == "run" and args.skip_run):
            SECTIONS[section](bench)
    report.finish()


if __name__ == "__main__":
    main()
