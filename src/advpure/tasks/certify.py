"""Certify: randomized smoothing with the diffusion model as the denoiser (``python run.py task=certify``).

The base classifier is ``classifier(denoiser(x + sigma delta))`` (Carlini et al. 2023, DDS), the
denoiser one x0 prediction (``task.denoiser=one_shot``) or the ``purifier`` group's reverse process
(``multistep``, with DensePure's majority vote of ``task.n_votes`` runs); the diffusion time for
sigma comes from the purifier's noise schedule. Cohen et al.'s CERTIFY runs on every chosen test
image (:mod:`advpure.certify.smoothing`).

Each finished image is stored at once under ``paths.evaluations`` (the evaluation store's folders,
one file per dataset index: :mod:`advpure.certify.store`), keyed by everything
that changes its numbers (config, advpure's code, package versions, checkpoint files) but not by
which images are chosen: re-running the command after an interruption, or with more or other
images, reuses every finished image. An image's randomness is seeded from (seed, dataset index)
alone, so a reused image equals a recomputed one.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from advpure.certify.denoisers import (
    DenoisedClassifier,
    DiffusionLevel,
    MultistepDenoiser,
    OneShotDenoiser,
    dds_level,
    schedule_of,
)
from advpure.certify.results import (
    PUBLISHED_N,
    PUBLISHED_N0,
    correct_radii,
    format_markdown,
    summarize,
    write_run_files,
)
from advpure.certify.smoothing import certify as certify_input
from advpure.certify.store import CertificateStore
from advpure.config.schema.certify import DenoiserKind
from advpure.errors import ConfigError
from advpure.evaluation.batches import stream_seed
from advpure.evaluation.subsets import dataset_labels, select_subset
from advpure.fingerprints import RUN_NEUTRAL_KEYS, package_versions, work_key
from advpure.instantiate import build
from advpure.io import require_writable
from advpure.purifiers.protocol import capabilities
from advpure.tasks.components import build_classifier, build_logger, one_device, purification_backbone, purifier_on
from advpure.tasks.context import RunContext

log = logging.getLogger(__name__)

# Config keys that cannot change one image's certificate: what runs where, which images are
# chosen, how results are summarized, and the attack group (certify runs no attack).
NUMBER_NEUTRAL_KEYS = (
    *RUN_NEUTRAL_KEYS,
    "attack",
    "task.n_images",
    "task.image_stride",
    "task.subset_seed",
    "task.subset_index",
    "task.class_balanced",
    "task.radii",
)
PROGRESS_MIN_BATCHES = 20  # an image of at least this many batches gets its own progress bar


@dataclass
class SmoothedSetup:
    """What certify builds from the config: the base classifier, its denoiser and diffusion level."""

    base: DenoisedClassifier
    denoiser: nn.Module
    level: DiffusionLevel


def certify(cfg: DictConfig, context: RunContext) -> dict[str, Any]:
    """Certify ``task.n_images`` test images; write certify.csv / .md / .png and results.json."""
    task = cfg.task
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    require_writable(cfg.paths.evaluations, "paths.evaluations")
    device = one_device(cfg.hardware, "certify")
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    store = CertificateStore(cfg.paths.evaluations, work_key(config, NUMBER_NEUTRAL_KEYS))  # type: ignore[arg-type]

    datamodule = build(cfg.dataset, key="dataset")
    datamodule.setup("test")
    num_classes = int(datamodule.num_classes)
    setup = build_smoothed_classifier(cfg, num_classes, device)
    chosen = choose_images(datamodule.test_set, task)
    log.info(
        "certifying %d images, sigma %g, %s denoiser at t = %.4g; store %s",
        len(chosen),
        task.sigma,
        setup.denoiser.name,
        setup.level.t,
        store.folder,
    )

    records: list[dict[str, Any]] = []
    origins: list[str] = []
    bar = tqdm(chosen, desc=f"certify sigma={task.sigma:g} {setup.denoiser.name}", unit="image", dynamic_ncols=True)
    for index in bar:
        stored = store.load(index) if task.resume else None
        if stored is not None:
            record, origin = stored
        else:
            x, label = datamodule.test_set[index]
            record = certify_image(setup.base, x.to(device), int(label), index, cfg, num_classes)
            origin = str(context.run_dir)
            store.save(index, record, origin)
        records.append(record)
        origins.append(origin)
        certified = sum(bool(r["correct"]) for r in records)
        bar.set_postfix(correct_certified=f"{certified}/{len(records)}", last_radius=f"{record['radius']:.3f}")
    bar.close()

    results = assemble_results(cfg, context, setup, records, origins, store, config, device)
    paths = write_run_files(context.run_dir, results, records)
    print("\n" + format_markdown(results), flush=True)
    print(f"results: {paths['results.json']}", flush=True)
    _log_metrics(cfg, context, results)
    return results


def build_smoothed_classifier(cfg: DictConfig, num_classes: int, device: torch.device) -> SmoothedSetup:
    """The base classifier ``classifier(denoiser(.))`` of ``cfg`` on ``device``, frozen, in eval
    mode; the diffusion time for ``task.sigma`` from the purifier's noise schedule."""
    task = cfg.task
    if cfg.diffusion.get("image_size") is not None:
        raise ConfigError(
            "diffusion.image_size",
            f"is {cfg.diffusion.image_size}: certify denoises at the data's size (the noise level is in its pixels)",
            "set diffusion.image_size=null and a diffusion model trained at the data's size",
        )
    if not capabilities(get_class(cfg.purifier._target_)).uses_backbone:
        raise ConfigError(
            "purifier",
            "uses no diffusion model, so it has no noise schedule for sigma",
            "select a diffusion purifier: purifier=diffpure, diffpure_ddpm or diffpure_ode",
        )
    classifier = build_classifier(cfg.classifier, require_weights=True)
    backbone = purification_backbone(cfg.diffusion)
    try:
        level = dds_level(schedule_of(purifier_on(cfg.purifier, backbone)), float(task.sigma))
    except ConfigError as error:
        raise (error.with_prefix("task") if error.key == "sigma" else error) from None
    if DenoiserKind(task.denoiser) == DenoiserKind.multistep:
        node = copy.deepcopy(cfg.purifier)
        node.t_star = level.t
        denoiser: nn.Module = MultistepDenoiser(purifier_on(node, backbone), level)
    else:
        denoiser = OneShotDenoiser(backbone, level)
        if task.n_votes > 1 and level.top_up == 0.0:
            log.warning(
                "task.n_votes=%d with the one-shot denoiser on a continuous schedule: it is deterministic, "
                "so every vote is the same label (use task.denoiser=multistep for DensePure)",
                task.n_votes,
            )
    base = DenoisedClassifier(classifier, denoiser, int(task.n_votes), num_classes)
    base = base.to(device).eval().requires_grad_(False)
    return SmoothedSetup(base, denoiser, level)


def choose_images(test_set: Any, task: DictConfig) -> list[int]:
    """Dataset indices to certify: every ``image_stride``-th test image, of which the first
    ``n_images`` or a seeded (class-balanced) subset, as :func:`select_subset` chooses."""
    total = len(test_set)
    candidates = list(range(0, total, int(task.image_stride)))
    labels = dataset_labels(test_set) if task.class_balanced else [0] * total
    try:
        picked = select_subset(
            [labels[i] for i in candidates], task.n_images, task.subset_seed, task.subset_index, task.class_balanced
        )
    except ConfigError as error:
        if task.image_stride == 1:
            raise
        raise ConfigError(
            error.key, f"{error.problem} (every {task.image_stride}-th image: {len(candidates)})", error.fix
        ) from None
    return [candidates[i] for i in picked]


def certify_image(
    base: DenoisedClassifier, x: torch.Tensor, label: int, index: int, cfg: DictConfig, num_classes: int
) -> dict[str, Any]:
    """CERTIFY one image x (C, H, W) in [0, 1]; its smoothing noise and the denoiser's own
    randomness are seeded from (seed, dataset index) alone. Returns the image's record."""
    task = cfg.task
    torch.manual_seed(stream_seed(cfg.seed, index, "certify denoiser"))
    generator = torch.Generator(device=x.device)
    generator.manual_seed(stream_seed(cfg.seed, index, "certify noise"))
    total = task.n0 + task.n
    inner = None
    if math.ceil(total / task.batch) >= PROGRESS_MIN_BATCHES:
        inner = tqdm(total=total, desc=f"image {index}", unit="sample", leave=False, dynamic_ncols=True)
    start = time.perf_counter()
    certificate = certify_input(
        base,
        x,
        float(task.sigma),
        int(task.n0),
        int(task.n),
        float(task.alpha),
        int(task.batch),
        num_classes,
        generator,
        progress=inner.update if inner is not None else None,
    )
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    elapsed = time.perf_counter() - start
    if inner is not None:
        inner.close()
    return {
        "index": int(index),
        "label": int(label),
        **certificate.as_dict(),
        "correct": certificate.prediction == label,
        "time_s": elapsed,
    }


def device_text(device: torch.device) -> str:
    """``cpu, 1 thread`` or the GPU's name: what the times were measured on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu, {threads} thread{'s' if threads > 1 else ''}"


def assemble_results(
    cfg: DictConfig,
    context: RunContext,
    setup: SmoothedSetup,
    records: list[dict[str, Any]],
    origins: list[str],
    store: CertificateStore,
    config: Any,
    device: torch.device,
) -> dict[str, Any]:
    """results.json: settings, certified accuracy at ``task.radii`` with intervals, timing, provenance."""
    task = cfg.task
    here = str(context.run_dir)
    computed_now = [r for r, o in zip(records, origins, strict=True) if o == here]
    return {
        "task": "certify",
        "dataset": context.choices.get("dataset", cfg.dataset._target_),
        "classifier": context.choices.get("classifier", cfg.classifier.net._target_),
        "classifier_checkpoint": cfg.classifier.checkpoint,
        "diffusion": context.choices.get("diffusion"),
        "purifier": context.choices.get("purifier", cfg.purifier._target_),
        "seed": cfg.seed,
        "certify": {
            "sigma": float(task.sigma),
            "denoiser": setup.denoiser.name,
            "n0": int(task.n0),
            "n": int(task.n),
            "alpha": float(task.alpha),
            "batch": int(task.batch),
            "n_votes": int(task.n_votes),
            "num_classes": setup.base.num_classes,
            "level": setup.level.as_dict(),
            "denoiser_settings": setup.denoiser.settings(),
            "noise": "smoothing noise sigma * N(0, I) in pixel units, added to x in [0, 1] (not clipped)",
        },
        "subset": {
            "n_images": int(task.n_images),
            "image_stride": int(task.image_stride),
            "subset_seed": task.subset_seed,
            "subset_index": int(task.subset_index),
            "class_balanced": bool(task.class_balanced),
            "indices": [int(r["index"]) for r in records],
        },
        "budget": cfg.get("budget"),
        "reduced_budget": task.n < PUBLISHED_N or task.n0 < PUBLISHED_N0,
        "metrics": summarize(records, list(task.radii)),
        "correct_radii": correct_radii(records),
        "timing": {
            "mean_s_per_image": sum(r["time_s"] for r in records) / max(len(records), 1),
            "total_s": sum(r["time_s"] for r in records),
            "computed_now_s": sum(r["time_s"] for r in computed_now),
            "device": device_text(device),
        },
        "images": {
            "n_images": len(records),
            "computed_now": len(computed_now),
            "reused": len(records) - len(computed_now),
            "reused_from": sorted({o for o in origins if o != here}),
            "store": str(store.folder),
        },
        "command": context.command,
        "run_dir": here,
        "versions": package_versions(),
        "config": config,
    }


def _log_metrics(cfg: DictConfig, context: RunContext, results: dict[str, Any]) -> None:
    """Send the final certified accuracies to the ``logger`` group's logger, if any."""
    logger = build_logger(cfg.logger, context.run_dir, cfg, sweep=context.sweep)
    if not logger:
        return
    logger.log_metrics({f"final/{name}": metric["value"] for name, metric in results["metrics"].items()})
    logger.save()
