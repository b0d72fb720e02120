"""Peak memory of DiffPure's exact gradient (forward + backward) against the number of solver steps.

Prints a Markdown table and writes it to benchmarks/results/grad_memory_<device>.md.
Usage: python benchmarks/grad_memory.py [--steps 20 50 100 200] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import torch

from advpure.io import write_text_atomic
from advpure.profiling.memory import GradMemoryCase, peak_memory_growth
from advpure.profiling.roofline import device_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50, 100, 200])
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    lines = [
        "### Exact-gradient memory vs solver steps (DiffPure, digits UNet 0.65M, 8x8, "
        f"batch {args.batch_size}, CPU: {device_name(torch.device('cpu'))}, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d})",
        "",
        "Growth of the process high-water mark during one forward + backward, in a fresh process "
        f"running {GradMemoryCase(1).threads} thread(s).",
        "",
        "| steps | checkpointed per step (MB) | plain autograd (MB) | ratio "
        "| checkpointed wall time incl. process start (s) |",
        "|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for n in args.steps:
        start = time.perf_counter()
        checkpointed = peak_memory_growth(GradMemoryCase(n, True, args.batch_size))
        elapsed = time.perf_counter() - start
        plain = peak_memory_growth(GradMemoryCase(n, False, args.batch_size))
        line = (
            f"| {n} | {checkpointed / 2**20:.1f} | {plain / 2**20:.1f} | {plain / checkpointed:.1f}x | {elapsed:.1f} |"
        )
        lines.append(line)
        print(line, flush=True)
    out = Path(__file__).parent / "results" / "grad_memory_cpu.md"
    write_text_atomic(out, "\n".join(lines) + "\n")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
