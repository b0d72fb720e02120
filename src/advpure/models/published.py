"""Published ImageNet classifiers (torchvision, timm) and users' own modules, behind one wrapper.

Every network here is :class:`NormalizedClassifier`: ``normalize`` (non-persistent mean/std
buffers) followed by ``model``, the unchanged third-party module. A published weights file
(``classifier.weights``) holds ``model``'s own state dict (torchvision's ``resnet50-0676ba61.pth``,
timm's ``deit_small_patch16_224`` weights, a user's ``torch.save(model.state_dict())``) and is
loaded into ``model`` by :func:`advpure.models.classifier_weights.load_classifier_weights`.
Architectures are always built without weights (``weights=None`` / ``pretrained=False``):
nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from advpure.models.normalize import Normalize

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: torchvision architectures offered by name (any ``torchvision.models`` builder also works).
TORCHVISION_ARCHS = ("resnet50", "wide_resnet50_2")


class NormalizedClassifier(nn.Module):
    """(B, C, H, W) in [0, 1] -> ``model((x - mean) / std)``; ``mean``/``std`` ``None``: no normalization.

    Args:
        model: the wrapped network (its state dict is what published files hold).
        mean, std: per-channel normalization applied before ``model``.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        if (mean is None) != (std is None):
            raise ValueError("set both mean and std (normalization inside the classifier), or neither")
        self.normalize = Normalize(mean, std) if mean is not None and std is not None else nn.Identity()
        self.model = model

    def weights_module(self) -> nn.Module:
        """The module a published weights file belongs to (the wrapped ``model``)."""
        return self.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


def torchvision_classifier(
    arch: str,
    num_classes: int = 1000,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    **model_kwargs: Any,
) -> NormalizedClassifier:
    """torchvision ``arch`` (e.g. ``resnet50``, ``wide_resnet50_2``) built with ``weights=None``,
    ImageNet normalization inside; ``model_kwargs`` go to torchvision's builder.
    Shapes: x (B, 3, 224, 224) in [0, 1] -> (B, num_classes)."""
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(arch)
    except ValueError:
        raise ValueError(
            f"torchvision has no classification model {arch!r}; e.g. {', '.join(TORCHVISION_ARCHS)}"
        ) from None
    return NormalizedClassifier(builder(weights=None, num_classes=num_classes, **model_kwargs), mean, std)


def timm_classifier(
    arch: str,
    num_classes: int = 1000,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    **model_kwargs: Any,
) -> NormalizedClassifier:
    """timm ``arch`` (e.g. ``deit_small_patch16_224``) built with ``pretrained=False``,
    normalization inside; ``model_kwargs`` go to ``timm.create_model``. Needs the ``published``
    extra (``pip install advpure[published]``).

    DeiT's released weights (``deit_small_patch16_224-cd65a155.pth``: ``{"model": state_dict}``)
    and timm's (a plain state dict) use the same key names (``cls_token``, ``pos_embed``,
    ``patch_embed.proj.*``, ``blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.*``,
    ``norm.*``, ``head.*``). DeiT uses ImageNet's mean/std (timm's default config for it).
    """
    try:
        import timm
    except ImportError:
        raise ImportError("timm classifiers need timm: pip install 'advpure[published]' (or timm)") from None
    if not timm.is_model(arch):
        raise ValueError(f"timm has no model {arch!r} (e.g. deit_small_patch16_224)")
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **model_kwargs)
    return NormalizedClassifier(model, mean, std)
