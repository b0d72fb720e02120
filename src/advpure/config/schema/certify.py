"""Schema of ``task=certify`` (randomized smoothing with the diffusion model as denoiser).

The range checks of the smoothing parameters are
:func:`advpure.certify.smoothing.check_smoothing_parameters`' (one source), run once at start-up
by validation (errors name ``task.<key>``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from advpure.config.checks import require_at_least
from advpure.config.enums import TaskName
from advpure.config.schema.task import ImageSubset, TaskSchema


class DenoiserKind(str, Enum):
    """How certify denoises a noisy image: ``one_shot`` (Carlini et al.'s DDS: one x0 prediction at
    the diffusion time t with sqrt((1 - alpha_bar_t) / alpha_bar_t) = 2 sigma) or ``multistep``
    (the purifier's reverse process from that time to 0; with ``n_votes`` > 1, DensePure's
    majority vote)."""

    one_shot = "one_shot"
    multistep = "multistep"


@dataclass
class CertifyTaskSchema(ImageSubset, TaskSchema):
    """Certify the smoothed classifier g(x) = argmax_c P(f(x + sigma delta) = c) on test images,
    with f = classifier(denoiser(.)) (Cohen et al. 2019; Carlini et al. 2023; DensePure).

    ``sigma``: smoothing noise in pixel units ([0, 1] images; Carlini et al.'s CIFAR-10 values:
    0.25, 0.5, 1.0); ``n0``/``n``: selection and estimation samples, ``alpha``: failure
    probability (Cohen et al.'s CERTIFY: n0 samples select the class, n samples bound p_A at level
    alpha by a one-sided Clopper-Pearson interval; radius = sigma * Phi^-1(p_A lower bound); abstain
    below 1/2); ``batch``: noisy copies per call of the denoiser and classifier (memory);
    ``n_votes``: denoisings per noisy copy (majority vote); ``n_images`` test images, every
    ``image_stride``-th of the test split (Cohen et al.'s ``--skip``), or a seeded subset as in
    ``task=evaluate``; ``radii``: where certified accuracy (L2, pixel units) is reported with its
    95% interval; ``resume``: reuse the finished images of an identical certification from
    ``paths.evaluations`` (false: recompute and overwrite)."""

    name: TaskName = TaskName.certify
    denoiser: DenoiserKind = DenoiserKind.one_shot
    sigma: float = 0.5
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch: int = 1000
    n_votes: int = 1
    n_images: int = 500
    image_stride: int = 1
    radii: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    resume: bool = True

    def __post_init__(self) -> None:
        from advpure.certify.smoothing import check_smoothing_parameters
        from advpure.errors import ConfigError

        check_smoothing_parameters(self.sigma, self.n0, self.n, self.alpha, self.batch)
        require_at_least("n_votes", self.n_votes, 1)
        require_at_least("n_images", self.n_images, 1)
        require_at_least("image_stride", self.image_stride, 1)
        self.check_subset()
        if not self.radii or any(r < 0 for r in self.radii):
            raise ConfigError("radii", f"{list(self.radii)!r} is not a list of radii >= 0", "set e.g. [0,0.25,0.5]")
