"""``python -m advpure.report <multirun sweep folder>``: (re)write a sweep's report.

The report (``sweep.md``, ``.csv``, ``.json``, ``.png``: one row per job) is written
automatically after every multirun; this command rewrites it by hand, e.g. after re-running a
job or for a sweep that was killed before its end. See :mod:`advpure.sweeps.summary`.
"""

from __future__ import annotations

import sys

from advpure.sweeps.summary import main

if __name__ == "__main__":
    sys.exit(main())
