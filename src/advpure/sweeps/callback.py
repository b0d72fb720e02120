"""Hydra callback: at the end of every multirun, write the sweep report into the sweep folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from advpure.sweeps.summary import write_sweep_report

log = logging.getLogger(__name__)


class SweepReportCallback(Callback):
    """Writes sweep.md / .csv / .json / .png (see :mod:`advpure.sweeps.summary`) after the last job."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        paths = write_sweep_report(sweep_dir)
        print("\n" + paths["md"].read_text(), flush=True)
        log.info("sweep report: %s", paths["md"])
