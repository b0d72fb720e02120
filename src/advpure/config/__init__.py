"""Structured-config schemas (one per config group option), resolvers and start-up validation."""

from advpure.config.resolvers import register_resolvers
from advpure.config.schema import register_schemas
from advpure.config.validate import validate_config

register_resolvers()
register_schemas()

__all__ = ["validate_config"]
