"""Tasks run by ``run.py``: one function per ``TaskName``, each ``(cfg, context) -> summary dict``."""
