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

Every file is validated when it is reused: a batch file must be a JSON object with the planned
indices and one well-formed record per image, the panel a readable safetensors file with the
panel's tensors, a finished ``results.json`` a results object of this result key. A damaged file
(truncated, edited, valid JSON of the wrong shape) is never fatal: it is logged as a warning naming
the file, removed, and its work is recomputed (a damaged panel makes batch 0, which draws it, be
recomputed).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from advpure.fingerprints import RUN_NEUTRAL_KEYS, fingerprint, work_key
from advpure.io import JsonFileError, read_json, write_atomic, write_json_atomic

log = logging.getLogger(__name__)

# Config keys that cannot change an evaluation's numbers (dotted; a group name drops the group).
NUMBER_NEUTRAL_KEYS = (*RUN_NEUTRAL_KEYS, "task.n_images", "task.n_panel")
PANEL_KEYS = ("clean", "adversarial", "purified", "label", "prediction")
PANEL_IMAGES = ("clean", "adversarial", "purified")
# Integer columns every stored record has (predictions are -1 where a number was not finite), and
# the columns of space-separated integer draws.
RECORD_INTEGERS = (
    "index",
    "label",
    "undefended_clean_pred",
    "undefended_adv_pred",
    "defended_clean_pred",
    "defended_adv_pred",
)
RECORD_DRAWS = ("defended_clean_draws", "defended_adv_draws")


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
        """The stored batch if it holds exactly ``indices`` and is well formed; else ``None`` (a
        damaged file is logged and removed; see the module docstring)."""
        path = self.batch_path(batch_id)
        if not path.is_file():
            return None
        try:
            stored = read_json(path, dict)
        except JsonFileError as error:  # atomic writes make a damaged file a foreign or edited one
            return self._damaged(path, error.problem)
        if stored.get("indices") != list(indices):
            return None  # another plan's batch (other images): recomputed and replaced
        problem = batch_problem(stored)
        if problem is not None:
            return self._damaged(path, problem)
        if batch_id == 0 and self._discard_damaged_panel():
            return None  # batch 0 draws the panel: recompute it
        return stored

    def save(self, batch_id: int, payload: dict[str, Any]) -> Path:
        """Write one finished batch atomically (``payload`` holds ``indices`` and ``records``)."""
        return write_json_atomic(self.batch_path(batch_id), {"batch": batch_id, **payload})

    def save_panel(self, panel: dict[str, torch.Tensor]) -> None:
        """Keep batch 0's image panel (safetensors) so a resumed run can still draw it."""
        tensors = {k: panel[k].detach().cpu().clone() for k in PANEL_KEYS}
        write_atomic(self.folder / "panel.safetensors", lambda tmp: save_file(tensors, str(tmp)))

    def load_panel(self) -> dict[str, torch.Tensor] | None:
        """Batch 0's image panel, or ``None`` (none stored, or a damaged one: logged and removed)."""
        path = self.folder / "panel.safetensors"
        if not path.is_file():
            return None
        try:
            panel = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            return self._damaged(path, f"not a readable safetensors file ({error})")
        problem = panel_problem(panel)
        return panel if problem is None else self._damaged(path, problem)

    def _discard_damaged_panel(self) -> bool:
        """Whether a stored panel was damaged (and is now removed)."""
        return (self.folder / "panel.safetensors").is_file() and self.load_panel() is None

    def result_key(self, n_images: int, n_panel: int) -> str:
        """The key of one job's result files: the store's fingerprint plus what it leaves out but a
        results file depends on (the image count and the panel size)."""
        return fingerprint({"evaluation": fingerprint(self.key), "n_images": n_images, "n_panel": n_panel})

    def finished_folder(self, result_key: str) -> Path:
        return self.folder / "finished" / result_key

    def load_finished(self, result_key: str) -> Path | None:
        """The folder of a finished job with this key, or ``None`` (none, or a damaged
        ``results.json``: logged and removed, so the job runs again, reusing its batches)."""
        folder = self.finished_folder(result_key)
        path = folder / "results.json"
        if not path.is_file():
            return None
        try:
            results = read_json(path, dict)
        except JsonFileError as error:
            return self._damaged(path, error.problem)
        problem = results_problem(results, result_key)
        return folder if problem is None else self._damaged(path, problem)

    @staticmethod
    def _damaged(path: Path, problem: str) -> None:
        """Log that the store's file ``path`` is damaged and remove it (its work is recomputed)."""
        log.warning("evaluation store: ignoring damaged file %s (%s); its work is recomputed", path, problem)
        try:
            path.unlink(missing_ok=True)
        except OSError as error:  # a read-only store: the next write reports it
            log.warning("evaluation store: cannot remove %s (%s)", path, error)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def batch_problem(stored: dict[str, Any]) -> str | None:
    """What is wrong with a stored batch object (its ``indices`` already checked), or ``None``:
    ``records`` must be one object per index, in order, with the same columns, integer labels and
    predictions, and draws as space-separated integers."""
    indices, records = stored["indices"], stored.get("records")
    if not isinstance(records, list) or len(records) != len(indices):
        return f"'records' is not a list of {len(indices)} records (one per image)"
    if not all(isinstance(record, dict) for record in records):
        return "a record is not a JSON object"
    columns = set(records[0]) if records else set()
    for position, (index, record) in enumerate(zip(indices, records, strict=True)):
        if set(record) != columns:
            return f"record {position} has other columns than record 0"
        missing = [key for key in (*RECORD_INTEGERS, *RECORD_DRAWS) if key not in record]
        if missing:
            return f"record {position} lacks {missing}"
        if not all(_is_int(record[key]) for key in RECORD_INTEGERS):
            return f"record {position} has a non-integer label or prediction"
        if record["index"] != index:
            return f"record {position} is of image {record['index']!r}, not {index}"
        for key in RECORD_DRAWS:
            draws = record[key]
            if not isinstance(draws, str) or not draws.split() or not all(_integer_text(d) for d in draws.split()):
                return f"record {position}'s {key} is not space-separated integers"
    if not isinstance(stored.get("attack_checks", {}), dict | None):
        return "'attack_checks' is not a JSON object"
    if not isinstance(stored.get("computed_in", ""), str):
        return "'computed_in' is not a string"
    return None


def _integer_text(text: str) -> bool:
    return text.lstrip("-").isdigit()


def panel_problem(panel: dict[str, torch.Tensor]) -> str | None:
    """What is wrong with a stored panel, or ``None``: images (K, C, H, W) floating point of one
    shape, labels and predictions (K,) integers."""
    missing = [key for key in PANEL_KEYS if key not in panel]
    if missing:
        return f"it lacks the tensors {missing}"
    shape = panel["clean"].shape
    for key in PANEL_IMAGES:
        if panel[key].ndim != 4 or panel[key].shape != shape or not panel[key].is_floating_point():
            return f"'{key}' is not a floating-point (K, C, H, W) image batch like 'clean' {tuple(shape)}"
    for key in ("label", "prediction"):
        tensor = panel[key]
        if tensor.ndim != 1 or len(tensor) != shape[0] or tensor.is_floating_point() or tensor.dtype == torch.bool:
            return f"'{key}' is not {shape[0]} integers"
    return None


def results_problem(results: dict[str, Any], result_key: str) -> str | None:
    """What keeps a finished ``results.json`` object from being reused for ``result_key``, or ``None``."""
    from advpure.evaluation.tables import format_table

    if results.get("result_key") != result_key:
        return f"its result_key is {results.get('result_key')!r}, not {result_key!r}"
    metrics = results.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        return "'metrics' is not a JSON object of metrics"
    for name, metric in metrics.items():
        if not isinstance(metric, dict) or not all(
            isinstance(metric.get(field), int | float) and not isinstance(metric.get(field), bool)
            for field in ("value", "ci_low", "ci_high", "n")
        ):
            return f"metric {name!r} lacks a numeric value, ci_low, ci_high or n"
    for entry in ("attack", "purifier"):
        if not isinstance(results.get(entry), dict):
            return f"'{entry}' is not a JSON object"
    try:  # what a re-run prints from it
        format_table(results)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        return f"its summary table cannot be drawn ({type(error).__name__}: {error})"
    return None
