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
import datetime
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torchsde

from advpure.diffusion.backbone import UNetEpsilon
from advpure.profiling.roofline import Roofline, bf16_roofline, flops_per_call

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_paths import DT, PATHS, PATHS_BY_NAME, PREDICTIONS, ROOT, T_STAR, cifar_unet, device_kind
from bench_tables import Report, megabytes, table_head
from bench_timing import (
    Measurement,
    backbone_call_seconds,
    measure_batch,
    measure_gradient_iteration,
    time_make_run,
)


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
