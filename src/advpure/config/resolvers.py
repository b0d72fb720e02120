"""OmegaConf resolvers used by conf/: ``${advpure_root:}`` is the project folder."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf


def project_root() -> Path:
    """The folder holding conf/ and checkpoints/: $ADVPURE_ROOT, else the source checkout, else cwd."""
    if "ADVPURE_ROOT" in os.environ:
        return Path(os.environ["ADVPURE_ROOT"]).resolve()
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "conf" / "config.yaml").is_file():
        return checkout
    return Path.cwd()


def register_resolvers() -> None:
    """Register advpure's resolvers once (idempotent)."""
    if not OmegaConf.has_resolver("advpure_root"):
        OmegaConf.register_new_resolver("advpure_root", lambda: str(project_root()))
