"""Train a classifier (standard or PGD adversarial training) and write a safetensors + JSON checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from advpure.checkpoints import save_checkpoint
from advpure.fingerprints import package_versions
from advpure.instantiate import build
from advpure.tasks.components import fit_resumable, group_weights, net_config, training_start
from advpure.tasks.context import RunContext
from advpure.training.classifier import ClassifierModule

log = logging.getLogger(__name__)


def train_classifier(cfg: DictConfig, context: RunContext) -> dict[str, Any]:
    """Fit ``classifier.net`` on ``dataset``; the checkpoint lands in the run folder (and ``task.export_to``).
    Training starts from a random initialization, or from ``task.init_from`` (recorded as ``started_from``).

    An identical training interrupted earlier continues from its last finished epoch (``task.resume``)."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build(cfg.dataset, key="dataset")
    net = build(cfg.classifier.net, key="classifier.net")
    started_from = training_start(net, cfg.task.init_from, cfg.classifier.net, group_weights(cfg, "classifier"))
    adversarial = None
    if cfg.task.adversarial.enabled:
        adversarial = OmegaConf.to_container(cfg.task.adversarial, enum_to_str=True)
        adversarial.pop("enabled")
    module = ClassifierModule(net, lr=cfg.task.lr, weight_decay=cfg.task.weight_decay, adversarial=adversarial)
    trainer, resume = fit_resumable(
        cfg,
        context,
        module,
        datamodule,
        max_epochs=cfg.task.max_epochs,
    )
    test_acc = float(trainer.test(module, datamodule=datamodule, verbose=False)[0]["test/acc"])
    summary = {
        "task": "train_classifier",
        "test_accuracy": test_acc,
        "epochs": cfg.task.max_epochs,
        "started_from": started_from,
        "adversarial": adversarial,
        "seed": cfg.seed,
        "resume": resume.summary(),
        "dataset": context.choices.get("dataset"),
        "command": context.command,
        "versions": package_versions(),
    }
    if trainer.is_global_zero:
        targets = [context.run_dir / "classifier"]
        if cfg.task.export_to:
            targets.append(Path(cfg.task.export_to))
        for target in targets:
            save_checkpoint(net, target, net=net_config(cfg.classifier.net), metadata=summary)
        log.info("test accuracy %.4f; checkpoint %s", test_acc, targets[-1])
        print(
            f"test accuracy: {100 * test_acc:.2f}%  checkpoint: {targets[-1]}.safetensors",
            flush=True,
        )
    return summary
