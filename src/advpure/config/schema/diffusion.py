"""Schemas of the ``diffusion`` group, and the linear DDPM schedule's keys every group that
follows the model's schedule shares (:class:`LinearBetas`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from advpure.config.checks import require_at_least, require_interval, require_path
from advpure.config.enums import CompileMode, Precision
from advpure.config.networks import Network
from advpure.config.schema.classifier import ModelSchema
from advpure.config.schema.signature import defaults_from
from advpure.diffusion.schedule import DiscreteSchedule


def check_linear_betas(beta_start: float, beta_end: float, num_timesteps: int, steps_key: str) -> None:
    """0 < beta_start < 1, beta_start <= beta_end < 1, and at least 2 steps (key ``steps_key``)."""
    require_interval("beta_start", beta_start, 0.0, 1.0, low_open=True, high_open=True)
    require_interval("beta_end", beta_end, beta_start, 1.0, high_open=True)
    require_at_least(steps_key, num_timesteps, 2)


@dataclass
@defaults_from(DiscreteSchedule)
class LinearBetas:
    """Linear betas from ``beta_start`` to ``beta_end`` over ``num_timesteps`` steps (the DDPM
    schedule, :class:`advpure.diffusion.schedule.DiscreteSchedule`)."""

    beta_start: float
    beta_end: float
    num_timesteps: int

    def check_betas(self) -> None:
        check_linear_betas(self.beta_start, self.beta_end, self.num_timesteps, "num_timesteps")


@dataclass
class NoiseScheduleSchema(LinearBetas):
    """The VP noise schedule the diffusion model was trained with: linear betas from ``beta_start``
    to ``beta_end`` over ``num_timesteps`` steps (the continuous VP-SDE's beta_min = beta_start T,
    beta_max = beta_end T). It lives with the model (the ``diffusion`` group); purifiers and training
    tasks interpolate it, and it is checked against a checkpoint's recorded schedule at start-up."""

    def __post_init__(self) -> None:
        self.check_betas()


@dataclass
class DiffusionSchema(ModelSchema):
    """Noise-prediction backbone behind the one signature (x in [-1, 1], t in [0, 1]) -> eps.

    ``pretrained``: a local diffusers-format folder (``config.json`` +
    ``diffusion_pytorch_model.safetensors``) or, on an online machine, a hub id; read with
    ``from_pretrained(use_safetensors=True)``. ``weights``: a file in a published model's own
    format, read at load by its class's reader (:mod:`advpure.diffusion.published_weights`: score_sde's
    NCSN++ checkpoint, e.g. DiffPure's CIFAR-10 ``checkpoint_8.pth``, EMA weights; guided-diffusion's
    ``256x256_diffusion_uncond.pt``), read with ``torch.load(weights_only=True)``. Set at most
    one of ``checkpoint``, ``pretrained`` and ``weights``.

    ``precision``: what the backbone computes in during purification (``fp16``/``bf16``: input
    and output stay float32; see :mod:`advpure.diffusion.precision`). ``image_size``: the side
    the purifier works at; inputs of another size are resized to it (bilinear) and back (see
    :mod:`advpure.purifiers.resize`); null works at the data's size. ``channels_last`` and
    ``compile``: how the backbone executes (NHWC memory order; ``torch.compile`` mode), not what it
    computes (see :mod:`advpure.diffusion.acceleration`).
    """

    pretrained: str | None = None
    weights: str | None = None
    schedule: NoiseScheduleSchema = field(default_factory=NoiseScheduleSchema)
    precision: Precision = Precision.fp32
    image_size: int | None = None
    channels_last: bool = False
    compile: CompileMode = CompileMode.off

    def networks(self, key: str) -> list[Network]:
        """The backbone under config key ``key``, at ``image_size``, unless a ``pretrained`` folder
        or hub id brings its own architecture (nothing to check then)."""
        return [] if self.pretrained is not None else [Network(key, self.net, self.checkpoint, self.image_size)]

    def __post_init__(self) -> None:
        if self.image_size is not None:
            require_at_least("image_size", self.image_size, 1)
        sources = {"checkpoint": self.checkpoint, "pretrained": self.pretrained, "weights": self.weights}
        for key, path in sources.items():
            require_path(key, path)
        chosen = [key for key, path in sources.items() if path is not None]
        if len(chosen) > 1:
            from advpure.errors import ConfigError

            raise ConfigError(
                chosen[-1],
                f"is set together with {chosen[0]!r}",
                "set only one of checkpoint, pretrained and weights (null the others)",
            )


@dataclass
class GuidedDiffusionSchema(DiffusionSchema):
    """A backbone built by the original guided-diffusion code (the optional ``published`` extra):
    start-up fails, naming the install command, when that package is missing."""

    def __post_init__(self) -> None:
        super().__post_init__()
        from advpure.diffusion.guided import require_guided_diffusion

        require_guided_diffusion(key="net._target_")  # validation prefixes the group: diffusion.net._target_


DIFFUSION_SCHEMAS: dict[str, type[DiffusionSchema]] = {"base": DiffusionSchema, "guided": GuidedDiffusionSchema}
