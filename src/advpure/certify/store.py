"""Finished certificates on disk, one file per image, in the evaluation store's folders.

The store is :class:`advpure.evaluation.store.BatchStore`'s: ``<paths.evaluations>/<fingerprint>/``
with ``key.json`` (what the fingerprint hashes) and one atomically written JSON file per unit of
work; here a unit is one image, ``batch_<dataset index>.json`` holding ``indices: [index]``, its
one record and the run folder that computed it (``origin``). A file is reused only if it is a
well-formed certificate of that image; anything else is logged and recomputed (the new file
replaces it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from advpure.evaluation.store import BatchStore

log = logging.getLogger(__name__)

# Every stored certificate record's fields and their JSON types.
RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "index": (int,),
    "label": (int,),
    "prediction": (int,),
    "selected": (int,),
    "count_a": (int,),
    "n": (int,),
    "radius": (int, float),
    "p_a_lower": (int, float),
    "time_s": (int, float),
    "correct": (bool,),
}


def record_problem(stored: Any, index: int) -> str | None:
    """What keeps ``stored`` (a parsed file) from being image ``index``'s certificate, or ``None``."""
    if not isinstance(stored, dict) or stored.get("indices") != [index]:
        return f"it is not the certificate file of image {index}"
    records = stored.get("records")
    if not isinstance(records, list) or len(records) != 1 or not isinstance(records[0], dict):
        return "'records' is not a list of one record"
    record = records[0]
    for key, types in RECORD_TYPES.items():
        value = record.get(key)
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            return f"its record's {key!r} is {value!r}"
    if record["index"] != index:
        return f"its record is of image {record['index']}"
    return None


class CertificateStore:
    """One certification's finished images (see the module docstring).

    Args:
        root: ``paths.evaluations``.
        key: what changes a certificate (:func:`advpure.fingerprints.work_key` of the config).
    """

    def __init__(self, root: str | Path, key: dict[str, Any]) -> None:
        self.batches = BatchStore(root, key)
        self.folder = self.batches.folder

    def load(self, index: int) -> tuple[dict[str, Any], str] | None:
        """(record, origin) of image ``index`` if finished and well formed; else ``None``."""
        path = self.batches.batch_path(index)
        if not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            stored, problem = None, f"unreadable ({error})"
        else:
            problem = record_problem(stored, index)
        if problem is not None:
            log.warning("certificate store: ignoring %s (%s); the image is recomputed", path, problem)
            return None
        return stored["records"][0], str(stored.get("origin", "unknown"))

    def save(self, index: int, record: dict[str, Any], origin: str) -> Path:
        """Write image ``index``'s record atomically."""
        return self.batches.save(index, {"indices": [index], "records": [record], "origin": origin})
