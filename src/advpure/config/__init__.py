"""Config: the vocabulary every layer shares, and what run.py checks before any work.

- :mod:`advpure.config.enums` and :mod:`advpure.config.checks`: categorical values and range
  checks, imported by every layer (they import nothing of advpure's but errors).
- :mod:`advpure.config.schema` (one module per config group): one typed schema per option;
  :mod:`advpure.config.validate`: start-up validation of a composed config;
  :mod:`advpure.config.catalog` and :mod:`advpure.config.resolvers`: conf/'s groups and the
  resolvers its files use; :func:`advpure.config.registry.register_config` makes Hydra know the
  schemas and resolvers (run.py, the Python API and the tests call it before composing).

This ``__init__`` imports nothing: importing ``advpure.config.enums`` loads the enums only.
"""
