"""AGDM (Lin et al., arXiv 2403.16067): DDPM purification guided by an adversarially trained
auxiliary network c_phi.

The input x_in is diffused to step n = round(T t*) (published CIFAR-10: 70 of 1000) and the DDPM
reverse chain of :class:`DiffPureDDPM` runs back to x_0, each step's mean shifted along

    mean_s = mu_theta(x_s) + Sigma_s * grad_{x_s} G(x_s),
    G(x_s) = - distance_scale * D(e(x_s), e(x_in)) + class_scale * log softmax(c_phi(x_s))[y_hat],

the paper's model p(x_{s-1} | x_s, y, x') ~ p_theta(x_{s-1} | x_s) p_phi(x' | x_s) p_phi(y | x_s)
with p_phi(x' | x_s) ~ exp(-D) and p_phi(y | x_s) = softmax(c_phi(x_s)), each term with its own
scale. Here e is c_phi's logits (default) or penultimate features, D a per-image distance (MSE by
default), and y_hat = argmax c_phi(x_in), c_phi's own prediction on the input: true labels are
never used. c_phi reads a model-space state x_s in [-1, 1] as the pixels (x_s + 1) / 2, not
clamped, at every step: it must be trained on diffused inputs (``task=train_agdm_aux``).

Choices the paper leaves open, and advpure's (all configurable):
- the scales: 1.0 each by default, the paper's product of densities without a temperature (its
  published values are not in advpure's sources); sweep them with ``purifier.distance_scale`` and
  ``purifier.class_scale``;
- Sigma_s: the variance of the chain's own step (``variance``; default ``beta``, the CIFAR-10
  DDPM's "fixedlarge", as GDMP);
- every step of the chain is guided, the last one (to x_0) included.

Gradients: ``full`` differentiates the guidance gradient itself (second order, through c_phi on
the state and on the input); ``guidance_blind`` treats it as a constant. c_phi's weights are frozen.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import Unpack

from advpure.config.enums import DdpmVariance, EmbeddingDistance, EmbeddingLayer
from advpure.diffusion.backbone import EpsilonBackbone
from advpure.errors import ConfigError
from advpure.purifiers.diffpure_ddpm import DdpmChainOptions, DiffPureDDPM
from advpure.purifiers.guidance import GuidedChain, StepConstants
from advpure.purifiers.noise import NoiseSource


def _cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-12)


EMBEDDING_DISTANCES: dict[EmbeddingDistance, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    EmbeddingDistance.mse: lambda a, b: (a - b).pow(2).flatten(1).mean(1),
    EmbeddingDistance.l1: lambda a, b: (a - b).abs().flatten(1).mean(1),
    EmbeddingDistance.cosine: _cosine_distance,
}
"""(B, D) x (B, D) -> (B,) distances between embeddings."""


@runtime_checkable
class PenultimateFeatures(Protocol):
    """An auxiliary network that also gives its penultimate features (``embedding=penultimate``)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in [0, 1] -> features (B, D)."""
        ...


class AGDM(GuidedChain, DiffPureDDPM):
    """DDPM purification guided by an auxiliary classifier's embedding distance and prediction.

    Args:
        backbone: ``(x in [-1, 1], t in [0, 1]) -> eps``.
        auxiliary: c_phi, ``(B, C, H, W) in [0, 1] -> logits (B, K)``; with
            ``embedding=penultimate`` it must also have ``penultimate(x) -> (B, D)``. Frozen and
            put in eval mode here.
        t_star: diffusion time; the chain starts at step round(T t*) (published: 70 of 1000).
        distance_scale: scale of -D(e(x_s), e(x_in)); 0 turns the term off.
        class_scale: scale of log p_phi(y_hat | x_s); 0 turns the term off.
        distance: ``mse``, ``l1`` or ``cosine``.
        embedding: ``logits`` or ``penultimate``.
        variance: the DDPM chain's, Sigma_s of the guidance (``beta``, as GDMP).
        stride, beta_start, beta_end, num_timesteps, grad_mode, seed, surrogate, checkpoint_steps:
            keyword options of the DDPM chain, see :class:`DiffPureDDPM`.

    Shapes: x (B, C, H, W) in [0, 1] -> (B, C, H, W) in [0, 1].
    """

    name = "agdm"

    def __init__(
        self,
        backbone: EpsilonBackbone,
        auxiliary: nn.Module,
        *,
        t_star: float = 0.07,
        distance_scale: float = 1.0,
        class_scale: float = 1.0,
        distance: EmbeddingDistance = EmbeddingDistance.mse,
        embedding: EmbeddingLayer = EmbeddingLayer.logits,
        variance: DdpmVariance = DdpmVariance.beta,
        **options: Unpack[DdpmChainOptions],
    ) -> None:
        super().__init__(backbone, t_star=t_star, variance=variance, **options)
        for key, value in (("distance_scale", distance_scale), ("class_scale", class_scale)):
            if not float(value) >= 0.0:
                raise ConfigError(f"purifier.{key}", f"{value!r} is out of range", "set a value >= 0 (0 turns it off)")
        self.embedding = EmbeddingLayer(embedding)
        if self.embedding == EmbeddingLayer.penultimate and not isinstance(auxiliary, PenultimateFeatures):
            raise ConfigError(
                "purifier.embedding",
                f"'penultimate' needs a penultimate(x) method, which {type(auxiliary).__name__} lacks",
                "use purifier.embedding=logits, or an auxiliary net with penultimate() (DigitsCNN, WideResNet)",
            )
        self.auxiliary = auxiliary.eval().requires_grad_(False)
        self.distance_scale = float(distance_scale)
        self.class_scale = float(class_scale)
        self.distance = EmbeddingDistance(distance)
        self.guided = self.distance_scale > 0.0 or self.class_scale > 0.0

    def train(self, mode: bool = True) -> AGDM:
        """The auxiliary network stays in eval mode (frozen batch statistics) whatever ``mode``."""
        super().train(mode)
        self.auxiliary.eval()
        return self

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, C, H, W), nominally [0, 1] -> c_phi's embedding (B, D)."""
        if self.embedding == EmbeddingLayer.penultimate:
            return self.auxiliary.penultimate(pixels)
        return self.auxiliary(pixels)

    def log_guidance(self, state: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """G per image, (B,): state (B, C, H, W) in model space, reference = e(x_in) (B, D),
        labels = y_hat (B,)."""
        pixels = (state + 1.0) * 0.5
        logits = self.auxiliary(pixels)
        embedded = logits if self.embedding == EmbeddingLayer.logits else self.embed(pixels)
        total = torch.zeros(state.shape[0], dtype=state.dtype, device=state.device)
        if self.distance_scale > 0.0:
            total = total - self.distance_scale * EMBEDDING_DISTANCES[self.distance](embedded, reference)
        if self.class_scale > 0.0:
            log_probs = F.log_softmax(logits, dim=1)
            total = total + self.class_scale * log_probs.gather(1, labels.view(-1, 1)).squeeze(1)
        return total

    def purify_signed(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        pixels = (x + 1.0) * 0.5
        reference = self.embed(pixels)
        with torch.no_grad():
            logits = reference if self.embedding == EmbeddingLayer.logits else self.auxiliary(pixels)
            labels = logits.argmax(1)
        return self.guided_reverse(self.diffuse(x, noise.normal(0, x)), reference, noise, labels)

    def guided_step(self, i: int, x: torch.Tensor, reference: torch.Tensor, constants: StepConstants) -> torch.Tensor:
        """Reverse step ``i`` with the mean moved by Sigma_s grad G. x, ``constants.z``:
        (B, C, H, W); reference: e(x_in) (B, D); ``constants.context``: y_hat (B,)."""
        z, _, labels = constants
        mean = self.step_mean(i, x)
        if self.guided:
            objective = partial(self.log_guidance, reference=reference, labels=labels)
            mean = mean + self.step_variances[i] * self.guidance_gradient(objective, x)
        out = mean if z is None else mean + self._steps[i][3] * z
        return out if torch.is_grad_enabled() else out.detach()

    def variant_settings(self) -> dict[str, Any]:
        return {
            **super().variant_settings(),
            "distance_scale": self.distance_scale,
            "class_scale": self.class_scale,
            "distance": self.distance.value,
            "embedding": self.embedding.value,
            "auxiliary": type(self.auxiliary).__name__,
            "process": "DDPM ancestral sampling, mean guided by the auxiliary network (AGDM)",
        }
