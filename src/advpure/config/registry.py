"""What Hydra must know before composing conf/: the schemas and the resolvers, registered by one call.

:func:`register_config` stores the root schema and every option schema in Hydra's ConfigStore
(``advpure_schema``, ``schema/<group>/<name>``) and registers advpure's OmegaConf resolvers. It
is idempotent; run.py calls it at import (so launchers' worker processes have it too), the
Python API before composing, the tests once in conftest.py.
"""

from __future__ import annotations

from advpure.config.resolvers import register_resolvers
from advpure.config.schema import register_schemas


def register_config() -> None:
    """Register advpure's schemas and resolvers (a second call changes nothing)."""
    register_resolvers()
    register_schemas()
