"""Evaluate: attack the undefended and the purified classifier; write results files and print a table."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from advpure.errors import ConfigError
from advpure.evaluation.batches import STREAMS, BatchPlan
from advpure.evaluation.compute import BACKWARD_COST, forward_equivalents
from advpure.evaluation.module import EvaluationModule
from advpure.evaluation.store import BatchStore, evaluation_key
from advpure.evaluation.subsets import dataset_labels, select_subset
from advpure.evaluation.tables import format_table, summarize, write_results
from advpure.fingerprints import package_versions
from advpure.io import write_atomic, write_json_atomic
from advpure.sweeps.objective import objective_value
from advpure.tasks.audit import (
    audit_evaluation,
    audit_metrics,
    audited_result_key,
    note_audit,
    store_config,
)
from advpure.tasks.components import build_defense, build_logger, build_trainer
from advpure.tasks.context import RunContext

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig, context: RunContext) -> dict[str, Any]:
    """Build everything (so bad paths and weights fail first), then run the Lightning test loop.
    The result files are written into the batch store (``finished/<result_key>/``), then copied
    into the run folder.

    A job whose results already exist for the same resolved config (``task.resume``, the default)
    is not run again: its result files are copied into this run's folder."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    store = BatchStore(cfg.paths.evaluations, evaluation_key(store_config(config)))  # type: ignore[arg-type]
    result_key = audited_result_key(store.result_key(cfg.task.n_images, cfg.task.n_panel), config)  # type: ignore[arg-type]
    finished = store.load_finished(result_key) if cfg.task.resume else None
    if finished is not None:
        return reuse_finished(finished, context, result_key)
    defense = build_defense(cfg)
    datamodule, classifier, purifier, attack = defense.datamodule, defense.classifier, defense.purifier, defense.attack
    subset_seed = cfg.task.subset_seed
    labels = dataset_labels(datamodule.test_set) if cfg.task.class_balanced else [0] * len(datamodule.test_set)
    chosen = select_subset(labels, cfg.task.n_images, subset_seed, cfg.task.subset_index, cfg.task.class_balanced)
    plan = BatchPlan.cut(chosen, cfg.task.batch_size)

    module = EvaluationModule(
        classifier,
        purifier,
        attack,
        datamodule.test_set,
        plan,
        store,
        seed=cfg.seed,
        n_panel=cfg.task.n_panel,
        n_draws=max(cfg.task.n_vote, cfg.task.n_worst),
        resume=cfg.task.resume,
        origin=str(context.run_dir),
        on_nonfinite=cfg.task.on_nonfinite,
    )
    trainer = build_trainer(
        cfg.hardware,
        build_logger(cfg.logger, context.run_dir, cfg, sweep=context.sweep),
        context.run_dir,
        inference_mode=False,
        use_distributed_sampler=False,  # the module shards whole planned batches itself
    )
    if len(plan) < trainer.world_size:
        raise ConfigError(
            "task.batch_size",
            f"{cfg.task.n_images} images in batches of {cfg.task.batch_size} make {len(plan)} batches for "
            f"{trainer.world_size} processes",
            f"use at most {cfg.task.n_images // trainer.world_size} images per batch, or fewer hardware.devices",
        )
    log.info(
        "evaluating %d images in %d batches of %d; batch store %s",
        len(chosen),
        len(plan),
        cfg.task.batch_size,
        store.folder,
    )
    started = time.perf_counter()
    trainer.test(module, verbose=False)
    evaluation_seconds = time.perf_counter() - started
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
        "seeds": {
            "seed": cfg.seed,
            "subset_seed": subset_seed,
            "attack_seed": attack.settings().get("seed"),
            "purifier_seed": purifier_settings.get("seed"),
            "batch_streams": {
                stream: f"torch.manual_seed(stream_seed({cfg.seed}, batch, {stream!r}))" for stream in STREAMS
            },
        },
        "batches": {
            "batch_size": cfg.task.batch_size,
            "n_batches": len(plan),
            "computed_now": sum(origin == str(context.run_dir) for origin in module.origins),
            "reused": sum(origin != str(context.run_dir) for origin in module.origins),
            "reused_from": sorted({o for o in module.origins if o != str(context.run_dir)}),
            "store": str(store.folder),
        },
        "budget": cfg.get("budget"),
        "result_key": result_key,
        "metrics": summarize(module.records, cfg.task.n_vote, cfg.task.n_worst),
        "attack": {**attack.settings(), "grad_mode": purifier_settings["grad_mode"]},
        "purifier": purifier_settings,
        "grad_mode": purifier_settings["grad_mode"],
        "gradient_is_approximation": purifier_settings["gradient_is_approximation"],
        "command": context.command,
        "run_dir": str(context.run_dir),
        "versions": package_versions(),
        "attack_checks": module.attack_checks,
        "attack_cost": attack_cost(module.attack_checks, len(module.records)),
        "nonfinite": {
            "policy": str(cfg.task.on_nonfinite.value),
            "events": [event for checks in module.attack_checks for event in (checks or {}).get("nonfinite", [])],
        },
        "config": config,
    }
    if cfg.task.get("objective") is not None:
        objective = cfg.task.objective
        results["objective"] = objective_value(results["metrics"], str(objective.metric.value), objective.clean_floor)
    # The store's copy first: a job whose results.json exists is then always skipped on a re-run.
    finished = store.finished_folder(result_key)
    if cfg.task.get("audit", False):  # audit.md / audit.json go with the other result files
        all_computed = results["batches"]["reused"] == 0
        factory = defense.attack_factory()
        device = trainer.strategy.root_device
        seconds = evaluation_seconds if all_computed else None
        results["audit"] = audit_evaluation(cfg, module, factory, chosen, results, seconds, finished, device)
    write_results(finished, results, module.records, module.panel)
    paths = copy_result_files(finished, context.run_dir)
    table = format_table(results)
    print("\n" + table, flush=True)
    print(f"results: {paths['results.json']}", flush=True)
    _log_results(trainer, results, module.records, paths.get("panel.png"))
    return results


def attack_cost(attack_checks: list[dict[str, Any]], n_images: int) -> dict[str, Any]:
    """The defended attack's cost over all batches (:mod:`advpure.evaluation.compute`): images through
    the purifier with a graph and forward only, and per image in purifier forwards."""
    totals = {"with_graph": 0, "forward_only": 0}
    for checks in attack_checks:
        counts = ((checks or {}).get("purifications") or {}).get("defended") or {}
        for name in totals:
            totals[name] += int(counts.get(name, 0))
    return {
        "purifier_images_with_graph": totals["with_graph"],
        "purifier_images_forward_only": totals["forward_only"],
        "forwards_per_image": forward_equivalents(totals) / max(n_images, 1),
        "unit": f"one purifier forward; a forward+backward counts {BACKWARD_COST:g}",
    }


def copy_result_files(folder: Path, run_dir: Path, results: dict[str, Any] | None = None) -> dict[str, Path]:
    """Copy an evaluation's result files from the store's ``folder`` into ``run_dir``, each
    atomically and ``results.json`` last (written from ``results`` when given); ``{name: path}``."""
    paths = {}
    for source in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if source.name != "results.json":
            paths[source.name] = write_atomic(run_dir / source.name, lambda tmp, s=source: shutil.copyfile(s, tmp))
    if results is None:
        paths["results.json"] = write_atomic(
            run_dir / "results.json", lambda tmp: shutil.copyfile(folder / "results.json", tmp)
        )
    else:
        paths["results.json"] = write_json_atomic(run_dir / "results.json", results)
    return paths


def reuse_finished(folder: Path, context: RunContext, result_key: str) -> dict[str, Any]:
    """Copy a finished job's result files into this run's folder instead of running it again;
    ``results.json`` gains ``skipped`` (where the numbers come from)."""
    results = json.loads((folder / "results.json").read_text())
    results["skipped"] = {
        "reason": "an identical job (same result_key) had finished; nothing was recomputed",
        "results_from": results.get("run_dir"),
        "first_run_command": results.get("command"),
        "result_key": result_key,
        "finished_folder": str(folder),
    }
    results["command"], results["run_dir"] = context.command, str(context.run_dir)
    copy_result_files(folder, context.run_dir, results)
    print(f"\nskipped: an identical job finished before (results from {folder})", flush=True)
    print("\n" + format_table(results), flush=True)
    print(f"results: {context.run_dir / 'results.json'}", flush=True)
    return results


def _log_results(trainer: pl.Trainer, results: dict[str, Any], records: list[dict[str, Any]], panel: Any) -> None:
    """Send the final metrics to every logger (W&B summary, CSV row), and to loggers that take
    them (W&B) the per-example table and the image panel."""
    flat = {f"final/{name}": m["value"] for name, m in results["metrics"].items()}
    for logger in trainer.loggers:
        logger.log_metrics({**flat, **audit_metrics(results.get("audit"))})
        note_audit(logger, results.get("audit"))
        if hasattr(logger, "log_table") and records:
            logger.log_table(key="records", columns=list(records[0]), data=[list(r.values()) for r in records])
        if hasattr(logger, "log_image") and panel is not None:
            logger.log_image(key="panel", images=[str(panel)], caption=["clean / adversarial / purified"])
        logger.save()
