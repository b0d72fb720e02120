"""The attack-failure audit as run.py runs it: after an evaluation (``task.audit=true``) and on its
own (``python run.py task=audit``).

``task=audit`` audits a setting without re-running its whole evaluation, in one of two ways:

- ``task.run_dir=<a finished evaluate run folder>``: the setting is that run's
  ``.hydra/config.yaml`` (models and attack rebuilt from it, as the code and checkpoints are now),
  the evaluation's numbers its ``results.json`` (records, attack cost); the first ``task.n_images``
  of its evaluated images are audited;
- ``task.run_dir=null``: the setting is the composed config (``python run.py task=audit
  purifier=gdmp ...``); its first ``task.n_images`` test images are evaluated in one batch (as
  ``task=evaluate`` evaluates a batch: same seeds, same scoring, ``n_vote`` / ``n_worst`` draws),
  then audited.

Either way the run folder gets ``audit.md``, ``audit.json`` and a ``results.json`` (the audited
evaluation's metrics, settings and ``audit``: its verdict line and the names by verdict), and the
summary table and audit table are printed. Nothing is written to the batch store.

An audited evaluation keeps its batch store: the audit's keys (``task.audit``, ``audit_images``,
``audit_options``) do not change an evaluation's numbers, so they are left out of the store's key
(:func:`store_config`) and folded into the result key only (:func:`audited_result_key`): adding
``task.audit=true`` to a finished evaluation's command reuses every batch and runs only the audit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from advpure.attacks.base import Attack
from advpure.audit.base import AuditContext
from advpure.audit.settings import AuditSchema
from advpure.audit.verdicts import AuditReport, compare_cost, format_audit, run_audit, write_audit
from advpure.errors import ConfigError
from advpure.evaluation.batches import BatchPlan
from advpure.evaluation.compute import forward_equivalents
from advpure.evaluation.module import EvaluationModule
from advpure.evaluation.subsets import dataset_labels, select_subset
from advpure.evaluation.tables import format_table, summarize
from advpure.fingerprints import fingerprint, package_versions
from advpure.io import JsonFileError, read_json, write_json_atomic
from advpure.tasks.components import build_defense, one_device
from advpure.tasks.context import RunContext

log = logging.getLogger(__name__)

AUDIT_TASK_KEYS = ("audit", "audit_images", "audit_options")
"""The evaluate task's audit keys: they change no number of the evaluation itself."""


def store_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (resolved, plain) without the task's audit keys: what the batch store is keyed by."""
    task = {key: value for key, value in config.get("task", {}).items() if key not in AUDIT_TASK_KEYS}
    return {**config, "task": task}


def audited_result_key(result_key: str, config: dict[str, Any]) -> str:
    """An evaluation's result key, with its audit settings folded in when ``task.audit`` is set
    (an audited run's result files differ from an unaudited one's: audit.md, audit.json)."""
    task = config.get("task", {})
    if not task.get("audit"):
        return result_key
    return fingerprint({"results": result_key, "audit": {key: task.get(key) for key in AUDIT_TASK_KEYS}})


def load_images(dataset: Dataset, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset's images (B, C, H, W) in [0, 1] and labels (B,) int64 at ``indices``."""
    pairs = [dataset[i] for i in indices]
    x = torch.stack([torch.as_tensor(image) for image, _ in pairs])
    return x, torch.tensor([int(label) for _, label in pairs], dtype=torch.int64)


def evaluation_forwards(attack_cost: dict[str, Any] | None, n_images: int, n_draws: int) -> float | None:
    """An evaluation's purifier forwards: its defended attack's (``results["attack_cost"]``) plus
    the scoring draws (``n_draws`` purifications of each clean and adversarial image)."""
    if not attack_cost:
        return None
    counts = {
        "with_graph": attack_cost["purifier_images_with_graph"],
        "forward_only": attack_cost["purifier_images_forward_only"],
    }
    return forward_equivalents(counts) + 2 * n_images * n_draws


def heading(results: dict[str, Any]) -> str:
    """``digits: digits_cnn behind diffpure (full gradients) vs autoattack``."""
    purifier, attack = results["purifier"], results["attack"]
    return (
        f"{results['dataset']}: {results['classifier']} behind {purifier['name']} "
        f"({purifier.get('grad_mode', 'full')} gradients) vs {attack['name']}"
    )


def audit_evaluation(
    cfg: DictConfig,
    module: EvaluationModule,
    make_attack: Callable[..., Attack],
    chosen: list[int],
    results: dict[str, Any],
    evaluation_seconds: float | None,
    folder: Path,
    device: torch.device,
) -> dict[str, Any]:
    """``task.audit=true``: audit the first ``task.audit_images`` images of a finished evaluation
    (``module`` after ``trainer.test``), write ``audit.md`` / ``audit.json`` into ``folder`` and
    return what ``results["audit"]`` holds (verdict line, names by verdict, images, cost)."""
    n = min(int(cfg.task.audit_images), len(module.records))
    records = module.records[:n]
    if [r["index"] for r in records] != list(chosen[:n]):
        raise RuntimeError("the evaluation's records are not in evaluation order")
    module.to(device)
    x, y = load_images(module.test_set, list(chosen[:n]))
    options: AuditSchema = OmegaConf.to_object(cfg.task.audit_options)  # type: ignore[assignment]
    context = AuditContext(
        module.classifier,
        module.purifier,
        module.attack,
        x.to(device),
        y.to(device),
        options,
        make_attack=make_attack,
        records=records,
        all_records=module.records,
        seed=int(cfg.seed),
        n_draws=module.n_draws,
    )
    log.info("auditing the evaluation on its first %d images", n)
    report = run_audit(context)
    forwards = evaluation_forwards(results.get("attack_cost"), len(module.records), module.n_draws)
    compare_cost(report, evaluation_seconds, forwards, len(module.records))
    write_audit(folder, report, heading(results))
    return audit_summary(report)


def audit_summary(report: AuditReport) -> dict[str, Any]:
    """What results carry of an audit: the verdict line, the names by verdict, images and cost."""
    return {**report.summary(), "images": report.images, "cost": report.cost}


def audit_metrics(audit: dict[str, Any] | None) -> dict[str, float]:
    """The audit as logger metrics (W&B summary, CSV row): counts of failed and warned indicators."""
    if not audit:
        return {}
    return {"final/audit_failed": float(len(audit["failed"])), "final/audit_warned": float(len(audit["warned"]))}


def note_audit(logger: Any, audit: dict[str, Any] | None) -> None:
    """Write the audit's verdict line into a W&B run's summary (loggers without one: nothing)."""
    if not audit:
        return
    summary = getattr(getattr(logger, "experiment", None), "summary", None)
    if summary is not None and hasattr(summary, "__setitem__"):
        summary["audit"] = audit["verdict"]


# ---------------------------------------------------------------------------- task=audit


def _finished_run(run_dir: Path) -> tuple[DictConfig, dict[str, Any]]:
    """A finished evaluate run folder's config and results (``ConfigError`` naming ``task.run_dir``)."""
    config_path, results_path = run_dir / ".hydra" / "config.yaml", run_dir / "results.json"
    if not config_path.is_file() or not results_path.is_file():
        raise ConfigError(
            "task.run_dir",
            f"{run_dir} is not a finished evaluation's run folder (it needs .hydra/config.yaml and results.json)",
            "give a folder a `python run.py` evaluation wrote (outputs/runs/<date>/<time>_evaluate)",
        )
    try:
        results = read_json(results_path, dict)
    except JsonFileError as error:
        raise ConfigError("task.run_dir", f"{results_path}: {error.problem}", "re-run that evaluation") from None
    if results.get("task", "evaluate") != "evaluate" or not results.get("records"):
        raise ConfigError(
            "task.run_dir",
            f"{results_path} holds no evaluation records (task {results.get('task')!r})",
            "give the folder of a task=evaluate run",
        )
    return OmegaConf.load(config_path), results  # type: ignore[return-value]


def audit(cfg: DictConfig, context: RunContext) -> dict[str, Any]:
    """``python run.py task=audit``: audit a finished run's setting (``task.run_dir``) or the
    composed one (see the module docstring). Returns the results written to ``results.json``."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    task = cfg.task
    run_dir = Path(task.run_dir).expanduser() if task.run_dir else None
    setting, finished = _finished_run(run_dir) if run_dir is not None else (cfg, None)
    device = one_device(cfg.hardware, "audit")
    defense = build_defense(setting)
    datamodule, classifier, purifier, attack = defense.datamodule, defense.classifier, defense.purifier, defense.attack
    seed = int(setting.seed)
    n_draws = max(int(task.n_vote), int(task.n_worst))
    module = EvaluationModule(
        classifier,
        purifier,
        attack,
        datamodule.test_set,
        BatchPlan.cut([], 1),
        store=None,  # type: ignore[arg-type]  # nothing is stored: one batch, no panel
        seed=seed,
        n_panel=0,
        n_draws=n_draws,
        resume=False,
        origin=str(context.run_dir),
        on_nonfinite=task.on_nonfinite,
    ).to(device)
    evaluation_seconds: float | None = None
    if finished is not None:
        all_records = finished["records"]
        n = min(int(task.n_images), len(all_records))
        indices = [int(r["index"]) for r in all_records[:n]]
        summary = {k: v for k, v in finished.items() if k not in ("records", "config", "attack_checks")}
        n_draws = len(all_records[0]["defended_adv_draws"].split())
        attack_cost, n_evaluated = finished.get("attack_cost"), len(all_records)
    else:
        labels = dataset_labels(datamodule.test_set) if task.class_balanced else [0] * len(datamodule.test_set)
        indices = select_subset(labels, int(task.n_images), task.subset_seed, task.subset_index, task.class_balanced)
        x, y = load_images(datamodule.test_set, list(indices))
        log.info("evaluating the %d images to audit in one batch", len(indices))
        started = time.perf_counter()
        evaluated = module.evaluate_batch(x.to(device), y.to(device), torch.tensor(indices), 0)
        evaluation_seconds = time.perf_counter() - started
        all_records, n, n_evaluated = evaluated["records"], len(indices), len(indices)
        counts = (evaluated["attack_checks"].get("purifications") or {}).get("defended") or {}
        attack_cost = {f"purifier_images_{key}": int(counts.get(key, 0)) for key in ("with_graph", "forward_only")}
        settings = purifier.settings()
        summary = {
            "dataset": context.choices.get("dataset", setting.dataset._target_),
            "classifier": context.choices.get("classifier", setting.classifier.net._target_),
            "seed": seed,
            "metrics": summarize(all_records, int(task.n_vote), int(task.n_worst)),
            "attack": {**attack.settings(), "grad_mode": settings["grad_mode"]},
            "purifier": settings,
            "grad_mode": settings["grad_mode"],
            "gradient_is_approximation": settings["gradient_is_approximation"],
        }
    x, y = load_images(datamodule.test_set, list(indices[:n]))
    options: AuditSchema = OmegaConf.to_object(task.audit_options)  # type: ignore[assignment]
    audit_context = AuditContext(
        classifier,
        purifier,
        attack,
        x.to(device),
        y.to(device),
        options,
        make_attack=defense.attack_factory(),
        records=all_records[:n],
        all_records=all_records,
        seed=seed,
        n_draws=n_draws,
    )
    report = run_audit(audit_context)
    compare_cost(report, evaluation_seconds, evaluation_forwards(attack_cost, n_evaluated, n_draws), n_evaluated)
    paths = write_audit(context.run_dir, report, heading(summary))
    results = {
        **summary,
        "task": "audit",
        "audited_run": str(run_dir) if run_dir is not None else None,
        "audit": audit_summary(report),
        "command": context.command,
        "run_dir": str(context.run_dir),
        "versions": package_versions(),
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
    }
    write_json_atomic(context.run_dir / "results.json", results)
    print("\n" + format_table(results), flush=True)
    print(format_audit(report, heading(summary)), flush=True)
    print(f"audit: {paths['audit.md']}", flush=True)
    return results
