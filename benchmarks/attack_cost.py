"""The cost of one N-draw attack iteration: DiffHammer's gradient grafting against full EOT.

Both iterations see ``N`` purifications of the same batch (DiffPure on the DDPM CIFAR-10 UNet, fp32
loop, exact ``full`` gradients) behind a small classifier:

- full EOT: one batched call on N copies with autograd, gradient summed over the copies (N
  purifier backward passes);
- grafted: DiffHammer's N-evaluation (the N copies purified without a graph, each classified and
  differentiated in output space), its EM aggregation, and one purification + backward of the
  selected trajectory (:class:`advpure.attacks.diffhammer.DiffHammer`).

The prediction is written to the table before anything is measured. Output:
``benchmarks/results/attack_cost_<device>.md`` (``--out`` overrides). Run by ``make bench``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_paths import T_STAR, cifar_unet, device_kind  # noqa: E402

from advpure.attacks.diffhammer import DiffHammer  # noqa: E402
from advpure.attacks.losses import LOSSES  # noqa: E402
from advpure.config.enums import AttackLoss  # noqa: E402
from advpure.io import write_text_atomic  # noqa: E402
from advpure.purifiers.diffpure import DiffPure  # noqa: E402

# Predictions, written before measuring, in forward units F (one graph-free purification of the
# batch). Measured on this CPU (2026-12-02, 5 steps, batch 1 and 4) before this table existed: a
# checkpointed forward+backward of N copies costs ~3.1 N F (forward, recomputed forward, input-only
# backward), one graph-free purification of N copies N F. Full EOT is therefore ~3N F; grafting
# adds to its N-evaluation (N F) one replayed forward + backward (~3 F): (N + 3) / 3N. The
# N-evaluation alone is the floor of any method that looks at N draws per iteration: 1/3.
PREDICTION = {
    "grafted": "(N + 3) / 3N = 0.43x at N = 10",
    "floor": "N F / 3N F = 0.33x: the N graph-free purifications DiffHammer's iteration needs",
}


def small_classifier(device: torch.device) -> nn.Module:
    """A 10-class CNN for 3x32x32 inputs (its cost is negligible next to the UNet's)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 10)
    )
    return net.to(device).eval().requires_grad_(False)


def interleaved_seconds(fns: dict[str, Callable[[], None]], device: torch.device, repeats: int) -> dict[str, float]:
    """The fastest of ``repeats`` timed calls of each function after one warm-up each, timed in
    interleaved rounds (A, B, C, A, B, C, ...) so that a load change on a shared machine hits every
    function alike instead of whichever happened to run then."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=10, help="N: purifications per iteration")
    parser.add_argument("--steps", type=int, default=20, help="solver steps (t* = 0.1)")
    parser.add_argument("--batch", type=int, default=16 if cuda else 4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    kind = device_kind(device)
    out = args.out or ROOT / "benchmarks" / "results" / f"attack_cost_{'cuda' if cuda else 'cpu'}.md"

    unet = cifar_unet(device)
    purifier = DiffPure(unet, t_star=T_STAR, dt=T_STAR / args.steps).eval().requires_grad_(False)
    classifier = small_classifier(device)
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    n = args.draws
    lines = [
        "# One N-draw attack iteration: gradient grafting (DiffHammer) vs full EOT",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; device: {kind} "
        f"({torch.get_num_threads()} threads)",
        f"- DiffPure t* = {T_STAR}, {args.steps} steps, DDPM CIFAR-10 UNet, fp32 loop, grad_mode=full; "
        f"batch {args.batch}; N = {n}",
        f"- prediction (written before measuring): grafted {PREDICTION['grafted']}; N-evaluation alone "
        f"{PREDICTION['floor']}",
        f"- command: `python benchmarks/attack_cost.py {' '.join(sys.argv[1:])}`".rstrip(),
        "",
        "| iteration | purifier passes | s / iteration | ratio to full EOT |",
        "|---|---|---|---|",
    ]
    write_text_atomic(out, "\n".join(lines) + "\n\n(measuring...)\n")

    def full_eot() -> None:
        batch = x.repeat(n, 1, 1, 1).requires_grad_(True)
        loss = LOSSES[AttackLoss.ce](classifier(purifier(batch)), y.repeat(n)).sum()
        torch.autograd.grad(loss, batch)

    attack = DiffHammer(eps=8 / 255, n_eot=n)
    evaluation = attack.evaluate_draws(purifier, classifier, x, y, AttackLoss.ce)
    r, selected = attack.aggregate(evaluation)

    def n_evaluation() -> None:
        attack.evaluate_draws(purifier, classifier, x, y, AttackLoss.ce)

    def graft_only() -> None:
        attack.graft(purifier, x, r, evaluation, selected)

    def grafted() -> None:
        fresh = attack.evaluate_draws(purifier, classifier, x, y, AttackLoss.ce)
        direction, chosen = attack.aggregate(fresh)
        attack.graft(purifier, x, direction, fresh, chosen)

    timed = interleaved_seconds(
        {"full": full_eot, "grafted": grafted, "evaluation": n_evaluation, "graft": graft_only}, device, args.repeats
    )
    full_s, graft_s, evaluation_s, graft_only_s = (timed[k] for k in ("full", "grafted", "evaluation", "graft"))
    floor = evaluation_s / full_s
    lines += [
        f"| full EOT | {n} forward + {n} backward (per-step checkpointing) | {full_s:.2f} | 1.00x |",
        f"| grafted (DiffHammer) | {n} forward without graph + 1 forward + 1 backward | {graft_s:.2f} | "
        f"{graft_s / full_s:.2f}x |",
        f"| of which: N-evaluation | {n} forward without graph (+ classifier backward) | {evaluation_s:.2f} | "
        f"{floor:.2f}x |",
        f"| of which: graft | 1 forward + 1 backward of the selected trajectory | {graft_only_s:.2f} | "
        f"{graft_only_s / full_s:.2f}x |",
        "",
        f"Purifier backward passes per iteration: full EOT {n}, grafted 1. Iteration time: grafted "
        f"{graft_s / full_s:.2f}x full EOT. Its floor is the N-evaluation ({floor:.2f}x): DiffHammer classifies "
        f"{n} fresh purifications of every iterate (the draws its EM weighs and its N-evaluation scores), and "
        "no grafting removes those forwards. In forward units the ratio is (N + 3) / 3N, which falls toward the "
        "floor's 1/3 as N grows and never reaches it: a target below the floor (the issue asked <= 0.3x) is not "
        "reachable by this algorithm at any N.",
    ]
    write_text_atomic(out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
