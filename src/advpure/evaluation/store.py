"""Completed evaluation batches on disk: what makes an evaluation resumable and gatherable.

An evaluation's store is the folder ``<paths.evaluations>/<fingerprint>/``; the fingerprint hashes
everything that changes its numbers: the resolved config (minus what cannot change a number:
logger, paths, process count, panel size, ``task.n_images``, ``task.resume``), advpure's own
source files, the versions of the packages that change numbers, and the size and modification
time of every checkpoint file the config names. Each finished batch is one JSON file written
atomically (``batch_00003.json``: its dataset indices and per-image records), so a killed run
loses at most the batch in flight, and re-running the same command (or the same evaluation with
more images, or on another number of DDP processes) reuses every finished batch. A batch file is
reused only if its indices equal the planned batch's. DDP processes write their own batches and
process 0 reads them all (the store must be on a filesystem every process sees).

A finished evaluation writes its result files under ``finished/<result key>/`` before its run
folder's (the result key adds the image count and panel size to the fingerprint); a
``results.json`` there marks it complete. Re-running a job whose results exist
for the same resolved config (e.g. an interrupted sweep, re-run with the same command) copies them
into the new run folder instead of starting any work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from advpure.fingerprints import fingerprint, work_key
from advpure.io import write_atomic, write_json_atomic

# Config keys that cannot change an evaluation's numbers (dotted; a group name drops the group).
NUMBER_NEUTRAL_KEYS = (
    "logger",
    "paths",
    "hydra",
    "budget",
    "hardware.devices",
    "hardware.strategy",
    "hardware.num_nodes",
    "task.n_images",
    "task.n_panel",
    "task.resume",
)
PANEL_KEYS = ("clean", "adversarial", "purified", "label", "prediction")


def evaluation_key(config: dict[str, Any]) -> dict[str, Any]:
    """What an evaluation store's fingerprint hashes (:func:`advpure.fingerprints.work_key`)."""
    return work_key(config, NUMBER_NEUTRAL_KEYS)


class BatchStore:
    """One evaluation's finished batches under ``root/<fingerprint>/``.

    Args:
        root: ``paths.evaluations``.
        key: :func:`evaluation_key` of the evaluation (written once as ``key.json`` for people).
    """

    def __init__(self, root: str | Path, key: dict[str, Any]) -> None:
        self.key = key
        self.folder = Path(root) / fingerprint(key)
        self.folder.mkdir(parents=True, exist_ok=True)
        key_file = self.folder / "key.json"
        if not key_file.exists():
            write_json_atomic(key_file, key)

    def batch_path(self, batch_id: int) -> Path:
        return self.folder / f"batch_{batch_id:05d}.json"

    def load(self, batch_id: int, indices: list[int]) -> dict[str, Any] | None:
        """The stored batch if it holds exactly ``indices``; else ``None``."""
        path = self.batch_path(batch_id)
        if not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # unreadable: recompute (atomic writes make this a foreign file)
        return stored if stored.get("indices") == list(indices) else None

    def save(self, batch_id: int, payload: dict[str, Any]) -> Path:
        """Write one finished batch atomically (``payload`` holds ``indices`` and ``records``)."""
        return write_json_atomic(self.batch_path(batch_id), {"batch": batch_id, **payload})

    def save_panel(self, panel: dict[str, torch.Tensor]) -> None:
        """Keep batch 0's image panel (safetensors) so a resumed run can still draw it."""
        tensors = {k: panel[k].detach().cpu().clone() for k in PANEL_KEYS}
        write_atomic(self.folder / "panel.safetensors", lambda tmp: save_file(tensors, str(tmp)))

    def load_panel(self) -> dict[str, torch.Tensor] | None:
        path = self.folder / "panel.safetensors"
        return load_file(str(path)) if path.is_file() else None

    def result_key(self, n_images: int, n_panel: int) -> str:
        """The key of one job's result files: the store's fingerprint plus what it leaves out but a
        results file depends on (the image count and the panel size)."""
        return fingerprint({"evaluation": fingerprint(self.key), "n_images": n_images, "n_panel": n_panel})

    def finished_folder(self, result_key: str) -> Path:
        return self.folder / "finished" / result_key

    def load_finished(self, result_key: str) -> Path | None:
        """The folder of a finished job with this key, or ``None`` (none, or an unreadable one)."""
        folder = self.finished_folder(result_key)
        try:
            json.loads((folder / "results.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return folder
