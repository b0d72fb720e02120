"""Train an epsilon-prediction DDPM with EMA; write the EMA weights and a PNG grid of samples."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from advpure.checkpoints import save_checkpoint
from advpure.diffusion.schedule import DiscreteSchedule
from advpure.errors import AdvpureError, ConfigError
from advpure.fingerprints import package_versions
from advpure.instantiate import build
from advpure.io import write_atomic
from advpure.purifiers.sampling import sample_images
from advpure.tasks.components import (
    build_classifier,
    fit_resumable,
    group_weights,
    net_config,
    training_start,
)
from advpure.tasks.context import RunContext
from advpure.training.diffusion import DiffusionModule

log = logging.getLogger(__name__)


def train_diffusion(cfg: DictConfig, context: RunContext) -> dict[str, Any]:
    """Fit ``diffusion.net`` on ``dataset``; checkpoint the EMA weights; save samples.png beside them."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build(cfg.dataset, key="dataset")
    if cfg.diffusion.pretrained is not None:
        raise ConfigError(
            "diffusion.pretrained",
            f"is set ({cfg.diffusion.pretrained}), but training starts from diffusion.net",
            "set diffusion.pretrained=null; to fine-tune, convert the weights to an advpure checkpoint and set "
            "task.init_from=<its path without extension>",
        )
    backbone = build(cfg.diffusion.net, key="diffusion.net")
    started_from = training_start(backbone, cfg.task.init_from, cfg.diffusion.net, group_weights(cfg, "diffusion"))
    task = cfg.task
    schedule = DiscreteSchedule(task.beta_start, task.beta_end, task.num_train_timesteps)
    module = DiffusionModule(backbone, schedule, lr=task.lr, warmup_steps=task.warmup_steps, ema_decay=task.ema_decay)
    trainer, resume = fit_resumable(
        cfg,
        context,
        module,
        datamodule,
        max_steps=task.max_steps,
        gradient_clip_val=task.grad_clip,
        check_val_every_n_epoch=25,
    )
    if not trainer.is_global_zero:
        return {}

    ema = module.ema.shadow.cpu()
    summary: dict[str, Any] = {
        "task": "train_diffusion",
        "steps": task.max_steps,
        "started_from": started_from,
        "schedule": {
            "beta_start": task.beta_start,
            "beta_end": task.beta_end,
            "T": task.num_train_timesteps,
        },
        "ema_decay": task.ema_decay,
        "seed": cfg.seed,
        "resume": resume.summary(),
        "dataset": context.choices.get("dataset"),
        "command": context.command,
        "versions": package_versions(),
    }
    if task.n_samples > 0:
        torch.manual_seed(cfg.seed)
        samples = sample_images(ema, task.n_samples, tuple(datamodule.image_shape), dt=task.sample_dt)
        summary["samples"] = _sample_quality(cfg, samples)
        _write_grid(context.run_dir / "samples.png", samples)
    targets = [context.run_dir / "diffusion"]
    if task.export_to:
        targets.append(Path(task.export_to))
    for target in targets:
        save_checkpoint(ema, target, net=net_config(cfg.diffusion.net), metadata=summary)
        if task.n_samples > 0 and target != targets[0]:
            _write_grid(target.with_name(target.name + "_samples.png"), samples)
    print(
        f"diffusion checkpoint: {targets[-1]}.safetensors  samples: {summary.get('samples')}",
        flush=True,
    )
    return summary


def _sample_quality(cfg: DictConfig, samples: torch.Tensor) -> dict[str, Any]:
    """How the configured classifier (if trained) sees the samples: confidence and class spread."""
    try:
        classifier = build_classifier(cfg.classifier, require_weights=True).eval()
    except AdvpureError as error:
        log.info("no classifier to score samples with (%s)", error)
        return {"n": samples.shape[0]}
    with torch.no_grad():
        probs = classifier(samples).softmax(1)
    counts = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).float()
    share = counts / counts.sum()
    entropy = float(-(share[share > 0] * share[share > 0].log()).sum() / math.log(probs.shape[1]))
    return {
        "n": samples.shape[0],
        "classifier_mean_confidence": float(probs.max(1).values.mean()),
        "classifier_confident_share": float((probs.max(1).values > 0.9).float().mean()),
        "predicted_class_counts": [int(c) for c in counts],
        "class_entropy_normalized": entropy,
    }


def _write_grid(path: Path, samples: torch.Tensor) -> None:
    from torchvision.utils import make_grid, save_image

    nrow = max(1, int(math.sqrt(samples.shape[0])))
    grid = make_grid(
        torch.nn.functional.interpolate(samples, scale_factor=4, mode="nearest"),
        nrow=nrow,
        padding=2,
    )
    write_atomic(path, lambda tmp: save_image(grid, str(tmp), format="png"))
