"""Evaluate: attack the undefended and the purified classifier; write results files and print a table."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from advpure.data.base import IndexedDataset
from advpure.evaluation.module import EvaluationModule
from advpure.evaluation.report import format_table, summarize, write_results
from advpure.evaluation.subsets import dataset_labels, select_subset
from advpure.instantiate import build
from advpure.tasks.components import build_classifier, build_logger, build_purifier, build_trainer
from advpure.tasks.context import RunContext, package_versions

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig, context: RunContext) -> dict[str, Any]:
    """Build everything (so bad paths and weights fail first), then run the Lightning test loop."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build(cfg.dataset, key="dataset")
    classifier = build_classifier(cfg.classifier, require_weights=True)
    purifier = build_purifier(cfg.purifier, cfg.diffusion)
    # Attacks need gradients with respect to the input only.
    classifier.requires_grad_(False)
    purifier.requires_grad_(False)
    norm = cfg.attack.norm
    eps = cfg.attack.eps if cfg.attack.eps is not None else datamodule.standard_eps[norm]
    attack = build(cfg.attack, key="attack", eps=eps)

    datamodule.setup("test")
    subset_seed = cfg.task.subset_seed
    labels = dataset_labels(datamodule.test_set) if cfg.task.class_balanced else [0] * len(datamodule.test_set)
    chosen = select_subset(labels, cfg.task.n_images, subset_seed, cfg.task.subset_index, cfg.task.class_balanced)
    images = IndexedDataset(datamodule.test_set, chosen)
    loader = DataLoader(images, batch_size=cfg.task.batch_size, shuffle=False, num_workers=datamodule.num_workers)

    n_draws = max(cfg.task.n_vote, cfg.task.n_worst)
    module = EvaluationModule(classifier, purifier, attack, n_panel=cfg.task.n_panel, n_draws=n_draws)
    trainer = build_trainer(
        cfg.hardware,
        build_logger(cfg.logger, context.run_dir, cfg),
        context.run_dir,
        inference_mode=False,
    )
    log.info("evaluating %d images in batches of %d", cfg.task.n_images, cfg.task.batch_size)
    trainer.test(module, dataloaders=loader, verbose=False)
    if not trainer.is_global_zero:
        return {}

    purifier_settings = purifier.settings()
    results = {
        "task": "evaluate",
        "dataset": context.choices.get("dataset", cfg.dataset._target_),
        "classifier": context.choices.get("classifier", cfg.classifier.net._target_),
        "classifier_checkpoint": cfg.classifier.checkpoint,
        "diffusion": context.choices.get("diffusion"),
        "seed": cfg.seed,
        "subset": {
            "n_images": cfg.task.n_images,
            "subset_seed": subset_seed,
            "subset_index": cfg.task.subset_index,
            "class_balanced": cfg.task.class_balanced,
        },
        "budget": cfg.get("budget"),
        "metrics": summarize(module.records, cfg.task.n_vote, cfg.task.n_worst),
        "attack": {**attack.settings(), "grad_mode": purifier_settings["grad_mode"]},
        "purifier": purifier_settings,
        "grad_mode": purifier_settings["grad_mode"],
        "gradient_is_approximation": purifier_settings["gradient_is_approximation"],
        "command": context.command,
        "versions": package_versions(),
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
    }
    paths = write_results(context.run_dir, results, module.records, module.panel)
    table = format_table(results)
    print("\n" + table, flush=True)
    print(f"results: {paths['results']}", flush=True)
    _log_summary(trainer, results)
    return results


def _log_summary(trainer: pl.Trainer, results: dict[str, Any]) -> None:
    """Send the final metrics to the run's logger (W&B summary, CSV row)."""
    if not trainer.loggers:
        return
    flat = {f"final/{name}": m["value"] for name, m in results["metrics"].items()}
    for logger in trainer.loggers:
        logger.log_metrics(flat)
        logger.save()
