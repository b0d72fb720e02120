"""Train AGDM's auxiliary network c_phi (TRADES on diffused inputs) and report how robust it is.

Writes ``agdm_aux.safetensors`` + ``.json`` in the run folder (and at ``task.export_to``) and
``auxiliary_report.json`` / ``.md``: clean, PGD-robust and diffused accuracy on the test split
of c_phi and of the ``classifier`` group's network (a standardly trained one, when it has
weights), under the same attack.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from advpure.checkpoints import save_checkpoint
from advpure.config.enums import Norm
from advpure.fingerprints import package_versions
from advpure.instantiate import build
from advpure.io import write_json_atomic, write_text_atomic
from advpure.tasks.components import build_classifier, fit_resumable, net_config, training_start
from advpure.tasks.context import RunContext
from advpure.training.auxiliary import AuxiliaryModule, DiffusionLevels
from advpure.training.pgd import pgd_attack

log = logging.getLogger(__name__)


def measure_robustness(
    net: nn.Module, loader: Any, levels: DiffusionLevels, adversary: dict[str, Any], steps: int, seed: int
) -> dict[str, float]:
    """Accuracy of ``net`` on ``loader``'s images: clean, under PGD (cross-entropy, ``steps``
    steps of ``adversary``'s norm, eps and step size, random start), and on the images diffused to
    the top training level (seeded noise). Both networks compared see the same random draws."""
    net.eval()
    torch.manual_seed(seed)
    noise = torch.Generator().manual_seed(seed)
    top = levels.alpha_bars[-1].item()
    correct = {"clean_accuracy": 0, "pgd_robust_accuracy": 0, "diffused_accuracy": 0}
    total = 0
    for x, y in loader:
        adversarial = pgd_attack(net, x, y, **{**adversary, "steps": steps})
        z = torch.randn(x.shape, generator=noise, dtype=x.dtype)
        with torch.no_grad():
            for name, images in (
                ("clean_accuracy", x),
                ("pgd_robust_accuracy", adversarial),
                ("diffused_accuracy", DiffusionLevels.apply(x, torch.tensor(top, dtype=x.dtype), z)),
            ):
                correct[name] += int((net(images).argmax(1) == y).sum())
        total += len(y)
    return {**{name: count / total for name, count in correct.items()}, "n_images": total}


def _report_markdown(report: dict[str, Any]) -> str:
    attack = report["attack"]
    lines = [
        "# AGDM auxiliary network: robustness on the test split",
        "",
        f"- PGD: {attack['norm']}, eps = {attack['eps']:.4g}, {attack['steps']} steps of {attack['step_size']:.4g}, "
        "cross-entropy, random start",
        f"- diffused: the images diffused to level {report['top_level']} (the top training level), seeded noise",
        "",
        "| network | clean | PGD robust | diffused | images |",
        "|---|---|---|---|---|",
    ]
    for name, row in report["networks"].items():
        lines.append(
            f"| {name} | {100 * row['clean_accuracy']:.2f}% | {100 * row['pgd_robust_accuracy']:.2f}% "
            f"| {100 * row['diffused_accuracy']:.2f}% | {row['n_images']} |"
        )
    if report.get("standard_note"):
        lines += ["", report["standard_note"]]
    return "\n".join(lines) + "\n"


def train_agdm_aux(cfg: DictConfig, context: RunContext) -> dict[str, Any]:
    """Fit ``task.net`` with TRADES on diffused inputs; write the checkpoint and the report."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    task = cfg.task
    datamodule = build(cfg.dataset, key="dataset")
    net = build(task.net, key="task.net")
    started_from = training_start(net, task.init_from, task.net, {})
    norm = Norm(task.trades.norm)
    eps = float(task.trades.eps) if task.trades.eps is not None else datamodule.standard_eps[norm]
    step_size = float(task.trades.step_size) if task.trades.step_size is not None else eps / 4
    adversary = {"norm": norm, "eps": eps, "step_size": step_size, "steps": int(task.trades.steps)}
    noise = task.noise
    levels = DiffusionLevels(noise.t_max, noise.beta_start, noise.beta_end, noise.num_timesteps)
    module = AuxiliaryModule(
        net, levels, task.trades.trades_lambda, adversary, task.eval_steps, lr=task.lr, weight_decay=task.weight_decay
    )
    trainer, resume = fit_resumable(
        cfg,
        context,
        module,
        datamodule,
        max_epochs=task.max_epochs,
        inference_mode=False,  # the per-epoch robust accuracy runs PGD inside validation
    )
    if not trainer.is_global_zero:
        return {}

    networks = {"auxiliary (TRADES on diffused inputs)": net}
    note = None
    standard = build_classifier(cfg.classifier, require_weights=False) if cfg.classifier.checkpoint else None
    if standard is None:
        note = "No standard network compared: the classifier group has no checkpoint."
    else:
        same = net_config(cfg.classifier.net) == net_config(task.net)
        networks[f"standard ({cfg.classifier.checkpoint})"] = standard
        if not same:
            note = "The standard network's architecture differs from the auxiliary network's."
    loader = datamodule.test_dataloader()
    rows = {
        name: measure_robustness(model, loader, levels, adversary, task.eval_steps, cfg.seed)
        for name, model in networks.items()
    }
    report = {
        "attack": {**adversary, "norm": norm.value, "steps": task.eval_steps},
        "top_level": levels.max_level,
        "networks": rows,
        "standard_note": note,
    }
    summary = {
        "task": "train_agdm_aux",
        "epochs": task.max_epochs,
        "started_from": started_from,
        "trades": {"lambda": task.trades.trades_lambda, **report["attack"], "steps": adversary["steps"]},
        "noise_levels": {**OmegaConf.to_container(noise, resolve=True), "max_level": levels.max_level},
        "report": report,
        "seed": cfg.seed,
        "resume": resume.summary(),
        "dataset": context.choices.get("dataset"),
        "command": context.command,
        "versions": package_versions(),
    }
    write_json_atomic(context.run_dir / "auxiliary_report.json", report)
    write_text_atomic(context.run_dir / "auxiliary_report.md", _report_markdown(report))
    targets = [context.run_dir / "agdm_aux"]
    if task.export_to:
        targets.append(Path(task.export_to))
    for target in targets:
        save_checkpoint(net, target, net=net_config(task.net), metadata=summary)
    print(_report_markdown(report), flush=True)
    print(f"checkpoint: {targets[-1]}.safetensors", flush=True)
    return summary
