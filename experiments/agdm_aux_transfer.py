"""AGDM on digits: adversarial examples made against the auxiliary network alone, then purified.

AGDM's class term pulls the chain toward y_hat = argmax c_phi(x_in). An argmax has a zero
derivative, so exact-gradient attacks on the purified classifier never see how moving x_in
changes y_hat. This script asks whether that choice is where the robustness comes from: PGD
(cross-entropy, Linf) against c_phi alone, then AGDM's purification and the classifier on the
result, scored like the evaluation task (single draw, majority vote, worst of N).

    python experiments/agdm_aux_transfer.py --scale 1000 --n-images 32

Writes a Markdown table to --out (default: outputs/agdm_aux_transfer.md) and prints it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from advpure.api import compose_config
from advpure.checkpoints import load_weights
from advpure.config.enums import Norm
from advpure.data.digits import DigitsDataModule
from advpure.io import write_text_atomic
from advpure.models.digits_cnn import DigitsCNN
from advpure.purifiers.agdm import AGDM
from advpure.tasks.components import build_backbone
from advpure.training.pgd import pgd_attack

ROOT = Path(__file__).resolve().parents[1]


def _shipped(name: str) -> DigitsCNN:
    stem = ROOT / "checkpoints" / "digits" / name
    net = DigitsCNN()
    load_weights(net, stem, net=json.loads(stem.with_suffix(".json").read_text())["net"])
    return net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, nargs="+", default=[1.0, 1000.0], help="distance and class scale")
    parser.add_argument("--n-images", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200, help="PGD steps against c_phi")
    parser.add_argument("--eps", type=float, default=0.15)
    parser.add_argument("--draws", type=int, default=10, help="purifications per image (N and K)")
    parser.add_argument("--stride", type=int, default=10, help="DDPM stride (10: the cpu_quick budget)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "agdm_aux_transfer.md")
    args = parser.parse_args()

    torch.manual_seed(0)
    backbone = build_backbone(compose_config().diffusion, require_weights=True).eval()
    classifier, auxiliary = _shipped("classifier"), _shipped("agdm_aux")
    data = DigitsDataModule()
    data.setup()
    x, y = (t[: args.n_images] for t in data.test_set.tensors)
    adversarial = pgd_attack(auxiliary, x, y, norm=Norm.Linf, eps=args.eps, step_size=args.eps / 4, steps=args.steps)
    with torch.no_grad():
        aux_robust = (auxiliary(adversarial).argmax(1) == y).float().mean().item()
    lines = [
        f"PGD against c_phi alone: {args.steps} Linf steps of {args.eps / 4:.4g}, eps {args.eps}, CE; "
        f"first {args.n_images} test digits; c_phi's own accuracy on them: {100 * aux_robust:.2f}%.",
        "",
        "| scales (distance = class) | purified clean, single draw | purified adversarial: single draw "
        f"| majority of {args.draws} | worst of {args.draws} |",
        "|---|---|---|---|---|",
    ]
    for scale in args.scale:
        purifier = AGDM(backbone, auxiliary, distance_scale=scale, class_scale=scale, stride=args.stride)
        with torch.no_grad():
            clean = classifier(purifier(x)).argmax(1) == y
            votes = torch.stack([classifier(purifier(adversarial)).argmax(1) for _ in range(args.draws)])
        correct = votes == y
        counts = torch.nn.functional.one_hot(votes, 10).sum(0)  # (B, 10)
        top2 = counts.topk(2, dim=1).values
        majority = (counts.argmax(1) == y) & (top2[:, 0] > top2[:, 1])
        lines.append(
            f"| {scale:g} | {100 * clean.float().mean():.2f}% | {100 * correct[0].float().mean():.2f}% "
            f"| {100 * majority.float().mean():.2f}% | {100 * correct.all(0).float().mean():.2f}% |"
        )
    text = "\n".join(lines) + "\n"
    write_text_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
