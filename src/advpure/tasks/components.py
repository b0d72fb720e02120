"""Build the models, logger and Trainer a task needs from its config groups (all through ``build``)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from torch import nn

from advpure.checkpoints import checkpoint_paths, load_weights
from advpure.config.enums import Accelerator
from advpure.diffusion.acceleration import accelerated
from advpure.diffusion.backbone import EpsilonBackbone, UNetEpsilon
from advpure.diffusion.precision import with_precision
from advpure.diffusion.published_weights import load_published_weights
from advpure.errors import ConfigError
from advpure.instantiate import build
from advpure.models.classifier_weights import load_classifier_weights
from advpure.purifiers.protocol import Purifier, capabilities
from advpure.purifiers.resize import resized
from advpure.training.progress import ProgressBar
from advpure.training.resume import Resume, fit, prepare_resume

log = logging.getLogger(__name__)


def net_config(node: DictConfig) -> dict[str, Any]:
    """A ``net`` node as a plain dict (what a checkpoint's JSON records)."""
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def build_classifier(
    cfg: DictConfig, *, require_weights: bool, key: str = "classifier", trained_by: str = "train_classifier"
) -> nn.Module:
    """A classifier node's network (``net`` + ``checkpoint`` or ``weights``: the ``classifier`` group,
    or AGDM's ``purifier.auxiliary``), with its advpure checkpoint or published weights file loaded
    if one is set. ``key`` and ``trained_by`` name the node and the task that trains it in errors."""
    net = build(cfg.net, key=f"{key}.net")
    if cfg.checkpoint is not None:
        load_weights(net, cfg.checkpoint, net=net_config(cfg.net))
    elif cfg.get("weights") is not None:
        load_classifier_weights(net, cfg.weights, key=f"{key}.weights")
    elif require_weights:
        raise ConfigError(
            f"{key}.checkpoint",
            "is null, but this task needs trained weights",
            f"train some with task={trained_by}, then set {key}.checkpoint=<run folder>/{trained_by.split('_', 1)[1]}"
            f" (or set {key}.weights=<published weights file>: RobustBench, torchvision, timm or your own state dict)",
        )
    return net


def training_start(net: nn.Module, init_from: str | None, net_node: DictConfig, ignored: dict[str, Any]) -> str:
    """Where a training task's network starts: ``"random initialization"`` unless ``init_from`` (the
    task's ``task.init_from``: an advpure checkpoint of the same ``net_node``) is set, which is then
    loaded into ``net``. ``ignored``: the group's weight keys a training does not load
    (``{"classifier.checkpoint": value, ...}``); a set one is logged, naming ``task.init_from``."""
    for key, value in ignored.items():
        if value is not None and init_from is None:
            log.info(
                "training starts from a random initialization; %s=%s is not loaded (task.init_from=%s fine-tunes it)",
                key,
                value,
                value,
            )
    if init_from is None:
        return "random initialization"
    if not str(init_from).strip():
        raise ConfigError(
            "task.init_from", "is an empty path", "name an advpure checkpoint (path without extension) or null"
        )
    load_weights(net, init_from, net=net_config(net_node))
    return str(init_from)


def group_weights(cfg: DictConfig, group: str) -> dict[str, Any]:
    """The weight keys of a model group (``classifier``, ``diffusion``) that a training does not
    load, for :func:`training_start`: ``{"<group>.checkpoint": ..., "<group>.weights": ...}``."""
    node = cfg[group]
    return {f"{group}.checkpoint": node.get("checkpoint"), f"{group}.weights": node.get("weights")}


def build_backbone(cfg: DictConfig, *, require_weights: bool) -> nn.Module:
    """The ``diffusion`` group's noise predictor, from a checkpoint, a diffusers folder, a published
    model's own file (``weights``, read by its class's reader: :mod:`advpure.diffusion.published_weights`),
    or fresh."""
    if cfg.pretrained is not None:
        return UNetEpsilon.from_pretrained(cfg.pretrained)
    net = build(cfg.net, key="diffusion.net")
    if cfg.checkpoint is not None:
        load_weights(net, cfg.checkpoint, net=net_config(cfg.net))
    elif cfg.get("weights") is not None:
        load_published_weights(net, cfg.weights)
    elif require_weights:
        raise ConfigError(
            "diffusion.checkpoint",
            "is null, but this task needs trained weights",
            "train some with task=train_diffusion, or set diffusion.pretrained=<diffusers folder>"
            " (diffusion.weights=<checkpoint_8.pth> for diffusion=score_sde_cifar10,"
            " diffusion.weights=<256x256_diffusion_uncond.pt> for diffusion=guided_imagenet256)",
        )
    return net


def build_purifier(cfg: DictConfig, diffusion_cfg: DictConfig, threat_eps: float | None = None) -> Purifier:
    """The ``purifier`` group's purifier (and its ``surrogate``, if any, on the same backbone);
    the backbone is loaded only if the purifier uses one. ``threat_eps`` fills a null
    ``guide_eps`` (GDMP's guidance scale is set from the perturbation budget). The backbone
    computes in ``diffusion.precision``, in the memory format and compiled as
    ``diffusion.channels_last`` and ``diffusion.compile`` say (:mod:`advpure.diffusion.acceleration`);
    with ``diffusion.image_size`` set, the purifier works at that size and inputs of another size
    are resized to it and back (:mod:`advpure.purifiers.resize`)."""
    if not capabilities(get_class(cfg._target_)).uses_backbone:
        return purifier_on(cfg, None, threat_eps)
    backbone = purification_backbone(diffusion_cfg)
    return resized(purifier_on(cfg, backbone, threat_eps), diffusion_cfg.get("image_size"))


def purification_backbone(diffusion_cfg: DictConfig) -> EpsilonBackbone:
    """The ``diffusion`` group's noise predictor as a purifier calls it: trained weights loaded,
    in the memory format and compiled as ``diffusion.channels_last`` and ``diffusion.compile`` say,
    computing in ``diffusion.precision``; ``(x in [-1, 1], t in [0, 1]) -> eps`` of x's shape and dtype."""
    backbone = build_backbone(diffusion_cfg, require_weights=True)
    backbone = accelerated(backbone, diffusion_cfg.get("channels_last", False), diffusion_cfg.get("compile", "off"))
    return with_precision(backbone, diffusion_cfg.get("precision") or "fp32")


def purifier_on(cfg: DictConfig, backbone: Any, threat_eps: float | None = None) -> Purifier:
    """The ``purifier`` node built on a given backbone; its ``surrogate`` node (if any) is built
    first, on the same backbone, and handed over, as is its ``auxiliary`` network (AGDM's c_phi,
    loaded from its checkpoint)."""
    extra: dict[str, Any] = {}
    if cfg.get("auxiliary") is not None:
        extra["auxiliary"] = build_classifier(
            cfg.auxiliary, require_weights=True, key="purifier.auxiliary", trained_by="train_agdm_aux"
        )
        warn_if_beyond_training_levels(cfg)
    if "guide_eps" in cfg and cfg.guide_eps is None and threat_eps is not None:
        extra["guide_eps"] = threat_eps
    if cfg.get("surrogate") is not None:
        extra["surrogate"] = build(cfg.surrogate, key="purifier.surrogate", backbone=backbone)
    return build(cfg, key="purifier", backbone=backbone, **extra)


def warn_if_beyond_training_levels(cfg: DictConfig) -> str | None:
    """Warn (and return the warning) when AGDM's ``t_star`` lies above the diffusion levels its
    auxiliary network was trained on (``noise_levels.t_max`` in the checkpoint's JSON, written by
    ``task=train_agdm_aux``); the guidance then reads states c_phi never saw."""
    config_path = checkpoint_paths(cfg.auxiliary.checkpoint)[1]
    levels = json.loads(config_path.read_text()).get("metadata", {}).get("noise_levels", {})
    t_max = levels.get("t_max")
    if t_max is None or float(cfg.t_star) <= float(t_max):
        return None
    message = (
        f"purifier.t_star={cfg.t_star} lies above the diffusion levels the auxiliary network "
        f"{config_path} was trained on (t_max={t_max}); retrain it with task=train_agdm_aux "
        f"task.noise.t_max={cfg.t_star} or lower purifier.t_star"
    )
    log.warning(message)
    return message


def build_logger(cfg: DictConfig, run_dir: Path, config: DictConfig | None = None, sweep: str | None = None) -> Any:
    """The ``logger`` group's Lightning logger writing under ``run_dir`` (``False`` for none),
    with the whole resolved ``config`` recorded as the run's hyperparameters. Jobs of one sweep
    share a W&B group named after the sweep folder (``sweep``) unless ``logger.group`` is set."""
    if cfg.get("_target_") is None:
        return False
    extra = {"group": sweep} if sweep is not None and "group" in cfg and cfg.group is None else {}
    logger = build(cfg, key="logger", save_dir=str(run_dir), **extra)
    if config is not None:
        logger.log_hyperparams(OmegaConf.to_container(config, resolve=True, enum_to_str=True))
    return logger


def build_trainer(hardware: DictConfig, logger: Any, run_dir: Path, **kwargs: Any) -> pl.Trainer:
    """A Trainer placed by the ``hardware`` group; ``kwargs`` are task-specific Trainer arguments."""
    placement = OmegaConf.to_container(hardware, resolve=True, enum_to_str=True)
    placement.pop("slurm", None)  # type: ignore[union-attr]  # the launcher's business, not the Trainer's
    callbacks = [ProgressBar(), *kwargs.pop("callbacks", [])]
    return pl.Trainer(
        **placement,  # type: ignore[arg-type]
        logger=logger,
        default_root_dir=str(run_dir),
        enable_model_summary=False,
        callbacks=callbacks,
        **kwargs,
    )


def one_device(hardware: DictConfig, task: str) -> torch.device:
    """The one device a single-process task (certify, audit) runs on: ``hardware.accelerator``
    (cpu, gpu, auto: CUDA when there is one) and one device of ``hardware.devices``."""
    devices = hardware.devices
    if OmegaConf.is_list(devices) and len(devices) == 1:
        ordinal = int(devices[0])
    elif devices in (1, "1", "auto"):
        ordinal = 0
    else:
        raise ConfigError(
            "hardware.devices",
            f"{devices} devices: {task} runs in one process on one device",
            f"set hardware.devices=1; run several {task} settings at once as a multirun (-m), one job per device",
        )
    accelerator = Accelerator(hardware.accelerator)
    if accelerator == Accelerator.gpu or (accelerator == Accelerator.auto and torch.cuda.is_available()):
        return torch.device("cuda", ordinal)
    return torch.device("cpu")


@dataclass
class Defense:
    """What an evaluation attacks, built from a composed config (:func:`build_defense`)."""

    datamodule: pl.LightningDataModule
    classifier: nn.Module
    purifier: Purifier
    attack: Any
    eps: float
    attack_node: DictConfig

    def attack_factory(self) -> Any:
        """``make(**overrides)``: a new attack from the ``attack`` group with this threat model's eps
        unless overridden."""
        node, eps = self.attack_node, self.eps

        def make(**overrides: Any) -> Any:
            return build(node, key="attack", **{"eps": eps, **overrides})

        return make


def build_defense(cfg: DictConfig) -> Defense:
    """The dataset (test split set up), the classifier and purifier (frozen: attacks differentiate
    the input only), the threat model's eps (``attack.eps``, else the dataset's standard one) and
    the attack, from ``cfg``'s dataset, classifier, purifier, diffusion and attack groups."""
    datamodule = build(cfg.dataset, key="dataset")
    classifier = build_classifier(cfg.classifier, require_weights=True)
    eps = cfg.attack.eps if cfg.attack.eps is not None else datamodule.standard_eps[cfg.attack.norm]
    purifier = build_purifier(cfg.purifier, cfg.diffusion, threat_eps=eps)
    classifier.requires_grad_(False)
    purifier.requires_grad_(False)
    attack = build(cfg.attack, key="attack", eps=eps)
    datamodule.setup("test")
    return Defense(datamodule, classifier, purifier, attack, float(eps), cfg.attack)


def fit_resumable(
    cfg: DictConfig, context: Any, module: pl.LightningModule, datamodule: Any, **trainer_kwargs: Any
) -> tuple[pl.Trainer, Resume]:
    """Fit ``module`` with the trainer of ``cfg.hardware`` and ``cfg.logger``: an identical training
    interrupted earlier continues from its last finished epoch (``task.resume``;
    :mod:`advpure.training.resume`); Lightning's own checkpointing is off. Returns the trainer and the resume state."""
    resume = prepare_resume(cfg)
    trainer = build_trainer(
        cfg.hardware,
        build_logger(cfg.logger, context.run_dir, cfg, sweep=context.sweep),
        context.run_dir,
        enable_checkpointing=False,
        callbacks=[resume.callback],
        **trainer_kwargs,
    )
    fit(trainer, module, datamodule, resume.ckpt)
    return trainer, resume
