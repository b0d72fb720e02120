"""Schemas of the ``classifier`` group (and of networks configured like it, e.g. AGDM's auxiliary)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from advpure.config.checks import require_path
from advpure.config.networks import Network


@dataclass
class ModelSchema:
    """A network (``net``: ``_target_`` + constructor arguments) and optional weights.

    ``checkpoint`` is an advpure checkpoint (``<path>.safetensors`` + ``<path>.json``);
    its JSON names the architecture, which must equal ``net``.
    """

    net: Any = MISSING
    checkpoint: str | None = None

    def network(self, key: str) -> Network:
        """This network under config key ``key``, as start-up validation checks it against the data."""
        return Network(key, self.net, self.checkpoint)


@dataclass
class ClassifierSchema(ModelSchema):
    """Classifier: (B, C, H, W) in [0, 1] -> logits (B, num_classes); normalizes inside.

    ``weights``: a published weights file in the network's own key layout (RobustBench, torchvision,
    timm, or a user's ``torch.save(model.state_dict())``; ``.pt``/``.pth`` read with
    ``torch.load(weights_only=True)``, or ``.safetensors``), loaded by
    :func:`advpure.models.classifier_weights.load_classifier_weights`. Set at most one of
    ``checkpoint`` and ``weights``.
    """

    weights: str | None = None

    def __post_init__(self) -> None:
        require_path("checkpoint", self.checkpoint)
        require_path("weights", self.weights)
        if self.checkpoint is not None and self.weights is not None:
            from advpure.errors import ConfigError

            raise ConfigError(
                "weights",
                "is set together with 'checkpoint'",
                "set only one of checkpoint (an advpure checkpoint) and weights (a published file); null the other",
            )


CLASSIFIER_SCHEMAS: dict[str, type[ClassifierSchema]] = {"base": ClassifierSchema}
