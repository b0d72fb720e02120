"""Schema of ``task=certify`` (randomized smoothing with the diffusion model as denoiser).

Listed as ``schema/task/certify`` by :mod:`advpure.config.schema`; the range checks of the
smoothing parameters are :func:`advpure.certify.smoothing.check_smoothing_parameters`' (one
source), run once at start-up by validation (errors name ``task.<key>``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from advpure.config.checks import require_at_least
from advpure.config.enums import TaskName
from advpure.config.schema_base import TaskSchema


class DenoiserKind(str, Enum):
    """How certify denoises a noisy image: ``one_shot`` (Carlini et al.'s DDS: one x0 prediction at
    the diffusion time matching sigma) or ``multistep`` (the purifier's reverse process from that
    time to 0; with ``n_votes`` > 1, DensePure's majority vote)."""

    one_shot = "one_shot"
    multistep = "multistep"


@dataclass
class CertifyTaskSchema(TaskSchema):
    """Certify the smoothed classifier g(x) = argmax_c P(f(x + sigma delta) = c) on test images,
    with f = classifier(denoiser(.)) (Cohen et al. 2019; Carlini et al. 2023; DensePure).

    ``sigma``: smoothing noise in pixel units ([0, 1] images); ``n0``/``n``: selection and
    estimation samples; ``alpha``: failure probability; ``batch``: noisy copies per call;
    ``n_votes``: denoisings per noisy copy (majority vote); ``n_images`` test images, every
    ``image_stride``-th of the test split (Cohen et al.'s ``--skip``), or a seeded subset as in
    ``task=evaluate``; ``radii``: where certified accuracy is reported; ``resume``: reuse the
    finished images of an identical certification from ``paths.evaluations``."""

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
    subset_seed: int | None = None
    subset_index: int = 0
    class_balanced: bool = False
    radii: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    resume: bool = True

    def __post_init__(self) -> None:
        from advpure.certify.smoothing import check_smoothing_parameters
        from advpure.errors import ConfigError

        check_smoothing_parameters(self.sigma, self.n0, self.n, self.alpha, self.batch)
        require_at_least("n_votes", self.n_votes, 1)
        require_at_least("n_images", self.n_images, 1)
        require_at_least("image_stride", self.image_stride, 1)
        require_at_least("subset_index", self.subset_index, 0)
        if self.class_balanced and self.subset_seed is None:
            raise ConfigError("class_balanced", "needs a seeded subset", "set task.subset_seed=<int>")
        if not self.radii or any(r < 0 for r in self.radii):
            raise ConfigError("radii", f"{list(self.radii)!r} is not a list of radii >= 0", "set e.g. [0,0.25,0.5]")
