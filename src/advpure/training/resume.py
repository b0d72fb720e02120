"""Epoch-level resume of a training task: a killed run loses at most the epoch in flight.

A training run's state lives in ``<paths.training>/<fingerprint>/``, the fingerprint hashing
everything that changes the trained weights (:func:`advpure.fingerprints.work_key`: the resolved
config minus logger, paths and export target, advpure's source, the package versions and the
weights files the config names), so re-running the same command finds it
whatever run folder Hydra picks. After every training epoch :class:`EpochCheckpoint` writes
``last.ckpt`` (Lightning's full training state: weights, optimizer and scheduler, loop counters,
and the random generators' states, so the resumed epochs draw what the uninterrupted run would
have drawn) and then ``last.json`` (``{"epoch", "global_step"}``), each atomically.

Trust boundary: ``last.ckpt`` is a ``torch.save`` file (a pickle container). advpure writes it
itself, in a folder named by a hash of the config, and reads it back only with
``torch.load(weights_only=True)`` (PyTorch's restricted unpickler: tensors and plain containers,
never code), so even a file planted there cannot run code; it can only be refused. A checkpoint
that does not load is reported with its path and the fix (delete the folder, or ``task.resume=false``).
"""

from __future__ import annotations

import json
import os
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from advpure.errors import CheckpointError
from advpure.fingerprints import fingerprint, work_key
from advpure.io import write_json_atomic

# Config keys that cannot change the trained weights (dotted; a group name drops the group).
WEIGHT_NEUTRAL_KEYS = ("logger", "paths", "hydra", "budget", "task.export_to", "task.resume")
LAST = "last.ckpt"
LAST_INFO = "last.json"


def training_folder(root: str | Path, config: dict[str, Any]) -> Path:
    """``<root>/<task name>-<16 hex digits>``: where this training's resume state lives."""
    key = work_key(config, WEIGHT_NEUTRAL_KEYS)
    task = str(config.get("task", {}).get("name", "train"))
    folder = Path(root) / f"{task}-{fingerprint(key)}"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "key.json").exists():
        write_json_atomic(folder / "key.json", key)
    return folder


def rng_state() -> dict[str, Any]:
    """Every global random generator's state, as tensors and plain containers (weights-only loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["kind"], keys, numpy["pos"], numpy["has_gauss"], numpy["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class EpochCheckpoint(pl.Callback):
    """Write the whole training state to ``folder/last.ckpt`` after every training epoch."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @property
    def state_key(self) -> str:
        return "advpure.EpochCheckpoint"

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Restored before the fit loop creates its first data iterator (the sanity check runs in
        # an isolated RNG scope), so the resumed epoch shuffles and draws as the uninterrupted run.
        set_rng_state(state_dict["rng"])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        tmp = self.folder / f".{LAST}.{os.getpid()}.tmp"
        trainer.save_checkpoint(tmp, weights_only=False)  # the full training state; process 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, self.folder / LAST)
            write_json_atomic(
                self.folder / LAST_INFO,
                {"epoch": trainer.current_epoch + 1, "global_step": trainer.global_step},
            )


def resume_path(folder: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from: ``folder/last.ckpt`` if ``resume`` and it exists, else ``None``."""
    path = folder / LAST
    return path if resume and path.is_file() else None


def last_epochs(folder: Path) -> int:
    """Epochs finished by the run whose state is in ``folder`` (0 if none)."""
    info = folder / LAST_INFO
    try:
        return int(json.loads(info.read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):  # a damaged file: as if none
        return 0


def fit(trainer: pl.Trainer, module: pl.LightningModule, datamodule: Any, ckpt: Path | None) -> None:
    """``trainer.fit`` from ``ckpt`` (if any), read only with ``torch.load(weights_only=True)``."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as error:
        if ckpt is None or not _is_load_error(error):
            raise
        raise CheckpointError(
            f"cannot resume from {ckpt}: {type(error).__name__}: {str(error).splitlines()[0]}. It is read only "
            f"with torch.load(weights_only=True) and never fully unpickled. Fix: delete {ckpt.parent}, or set "
            "task.resume=false to train from scratch"
        ) from None


def _is_load_error(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, (pickle.UnpicklingError, EOFError)) or any(
        needle in text for needle in ("weights only", "pytorchstreamreader", "zip archive", "unpickl", "ckpt")
    )


@dataclass
class Resume:
    """A training task's resume state: ``callback`` to hand the Trainer, ``ckpt`` to fit from
    (``None``: from scratch), ``epochs_done``: epochs the checkpoint had finished."""

    folder: Path
    callback: EpochCheckpoint
    ckpt: Path | None
    epochs_done: int

    def summary(self) -> dict[str, Any]:
        """What a task's summary records about it."""
        return {"state": str(self.folder), "resumed_after_epochs": self.epochs_done}


def prepare_resume(cfg: DictConfig) -> Resume:
    """The resume state of the training task ``cfg`` describes (``paths.training``, ``task.resume``)."""
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    folder = training_folder(cfg.paths.training, config)  # type: ignore[arg-type]
    ckpt = resume_path(folder, bool(cfg.task.get("resume", True)))
    return Resume(folder, EpochCheckpoint(folder), ckpt, last_epochs(folder) if ckpt else 0)
