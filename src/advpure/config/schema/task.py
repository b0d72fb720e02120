"""Schemas of the ``task`` group (``task=certify``'s is in :mod:`.certify`): what run.py does.

Each task schema's :meth:`TaskSchema.check` runs the checks across groups that task needs (its
networks against the dataset, the attack's budget, the purifier's grad mode), so start-up
validation dispatches on the schema, never on the task's name. Keys several tasks share are
field groups (:class:`ImageSubset`, :class:`DrawScoring`, :class:`TrainingRun`, :class:`EpochTraining`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from advpure.audit.settings import AuditSchema
from advpure.config.checks import require_at_least, require_interval, require_path, require_seed
from advpure.config.enums import NonFinitePolicy, Norm, ObjectiveMetric, TaskName
from advpure.config.networks import Network, check_networks
from advpure.config.schema.diffusion import LinearBetas, check_linear_betas


@dataclass
class TaskSchema:
    """What run.py does; ``name`` selects the task function."""

    name: TaskName = MISSING

    def check(self, root: Any) -> None:
        """Checks across the groups of ``root`` (the typed config) that this task needs, after every
        group's own range checks and before anything is built; ``ConfigError`` naming the key."""
        check_networks(root, self.networks(root))

    def networks(self, root: Any) -> list[Network]:
        """The networks this task builds, checked against the dataset's images."""
        return []


# ------------------------------------------------------------------- shared field groups


@dataclass
class ImageSubset:
    """Which test images: ``subset_seed`` null takes the first ``n_images`` in test order; an int
    shuffles the test split once by that seed and takes subset ``subset_index`` (disjoint slices
    of ``n_images``); ``class_balanced`` interleaves the classes (needs a seed)."""

    subset_seed: int | None = None
    subset_index: int = 0
    class_balanced: bool = False

    def check_subset(self) -> None:
        require_at_least("subset_index", self.subset_index, 0)
        require_seed("subset_seed", self.subset_seed, allow_none=True)
        if self.class_balanced and self.subset_seed is None:
            from advpure.errors import ConfigError

            raise ConfigError("class_balanced", "needs a seeded subset", "set task.subset_seed=<int>")


@dataclass
class DrawScoring:
    """Defended accuracy is also scored by majority vote of ``n_vote`` and worst of ``n_worst``
    purifications (max(n_vote, n_worst) draws per image, clean and adversarial, in one batched call
    each). ``on_nonfinite``: NaN or Inf in a purifier's output, the classifier's logits or an
    attack's gradient/output stops the run (``stop``, an error naming the batch and the examples)
    or is recorded in records' nonfinite column (``skip``; those predictions count as wrong, never
    robust). ``audit_options``: the audit's budgets and thresholds, each with its rationale
    (:mod:`advpure.audit.settings`)."""

    n_vote: int = 10
    n_worst: int = 10
    on_nonfinite: NonFinitePolicy = NonFinitePolicy.stop
    audit_options: AuditSchema = field(default_factory=AuditSchema)

    def check_draws(self) -> None:
        require_at_least("n_vote", self.n_vote, 1)
        require_at_least("n_worst", self.n_worst, 1)


@dataclass
class TrainingRun:
    """Where a training starts and what it keeps: ``init_from`` an advpure checkpoint stem of the
    same net to fine-tune (null: a random initialization from ``seed``; recorded in the results and
    the exported checkpoint's JSON); ``export_to`` where the trained weights are also written;
    ``resume``: the full training state is kept under paths.training after every epoch (keyed by
    the config), and re-running the same command continues an interrupted training (false: start
    over)."""

    init_from: str | None = None
    export_to: str | None = None
    resume: bool = True


@dataclass
class EpochTraining:
    """Epochs, learning rate and weight decay of a classifier-style training."""

    max_epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 5e-4

    def check_epochs(self) -> None:
        require_at_least("max_epochs", self.max_epochs, 1)
        require_interval("lr", self.lr, 0.0, low_open=True)
        require_interval("weight_decay", self.weight_decay, 0.0)


# ------------------------------------------------------------------------- evaluate, audit


@dataclass
class ObjectiveSchema:
    """What an evaluation returns to a search (the Optuna sweeper): ``metric`` if the defended
    clean accuracy reaches ``clean_floor``, else a value below every feasible one (see
    :func:`advpure.sweeps.objective.objective_value`)."""

    metric: ObjectiveMetric = ObjectiveMetric.defended_robust
    clean_floor: float = 0.0

    def __post_init__(self) -> None:
        require_interval("clean_floor", self.clean_floor, 0.0, 1.0)


@dataclass
class EvaluateTaskSchema(ImageSubset, DrawScoring, TaskSchema):
    """Attack the undefended and the purified classifier on the first ``n_images`` test images;
    score the defended one by single draw, majority vote of ``n_vote`` and worst of ``n_worst``
    purifications (max(n_vote, n_worst) draws per image, clean and adversarial). ``resume``:
    every finished batch is stored under paths.evaluations, keyed by everything that changes
    numbers (config, advpure's code, package versions, checkpoint files); re-running the same
    command (after a crash, with more images, or on another number of DDP processes) reuses those
    batches (false: recompute and overwrite them). ``objective``: the number returned to a search
    over configs (Optuna sweeper), null for none. ``audit``: the attack-failure audit
    (advpure.audit) after the evaluation, on the first ``audit_images`` evaluated images, written
    to audit.md / audit.json with a verdict line in results; it changes no number of the
    evaluation (an audited re-run of a finished evaluation reuses its batches)."""

    name: TaskName = TaskName.evaluate
    n_images: int = 512
    batch_size: int = 64
    n_panel: int = 8
    resume: bool = True
    objective: ObjectiveSchema | None = None
    audit: bool = False
    audit_images: int = 16

    def __post_init__(self) -> None:
        self.check_subset()
        require_at_least("n_images", self.n_images, 1)
        require_at_least("batch_size", self.batch_size, 1)
        require_at_least("n_panel", self.n_panel, 0)
        self.check_draws()
        require_at_least("audit_images", self.audit_images, 1)

    def check(self, root: Any) -> None:
        root.attack.check_data(root.dataset.image_shape())
        root.purifier.check_capabilities()
        super().check(root)

    def networks(self, root: Any) -> list[Network]:
        networks = [root.classifier.network("classifier")]
        if root.purifier.uses_backbone():
            networks += root.diffusion.networks("diffusion")
        return networks + [model.network(f"purifier.{key}") for key, model in root.purifier.networks()]


@dataclass
class AuditTaskSchema(ImageSubset, DrawScoring, TaskSchema):
    """Audit an evaluation's setting (advpure.audit) without re-running the evaluation: ``run_dir``
    a finished evaluate run folder (its ``.hydra/config.yaml`` gives the setting, its
    ``results.json`` the records), or null to audit the composed config's setting, whose first
    ``n_images`` test images (``subset_*``, ``class_balanced`` as in task=evaluate) are then
    evaluated in one batch (``n_vote`` / ``n_worst`` draws) and audited."""

    name: TaskName = TaskName.audit
    run_dir: str | None = None
    n_images: int = 16

    def __post_init__(self) -> None:
        require_path("run_dir", self.run_dir)
        require_at_least("n_images", self.n_images, 1)
        self.check_draws()
        self.check_subset()


# -------------------------------------------------------------------------------- training


@dataclass
class AdversarialTrainingSchema:
    """PGD adversarial training (Madry et al.); off unless ``enabled``."""

    enabled: bool = False
    norm: Norm = Norm.Linf
    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10

    def __post_init__(self) -> None:
        require_interval("eps", self.eps, 0.0, 1.0)
        require_interval("step_size", self.step_size, 0.0, low_open=True)
        require_at_least("steps", self.steps, 1)


@dataclass
class TrainClassifierTaskSchema(TrainingRun, EpochTraining, TaskSchema):
    """Train the ``classifier`` on ``dataset``; writes ``classifier.safetensors`` + ``.json``;
    ``adversarial.enabled=true`` for PGD adversarial training."""

    name: TaskName = TaskName.train_classifier
    adversarial: AdversarialTrainingSchema = field(default_factory=AdversarialTrainingSchema)

    def __post_init__(self) -> None:
        self.check_epochs()

    def networks(self, root: Any) -> list[Network]:
        return [root.classifier.network("classifier")]


@dataclass
class TrainDiffusionTaskSchema(TrainingRun, TaskSchema):
    """Train an epsilon-prediction DDPM on ``diffusion.schedule`` (linear betas; conf/ interpolates
    ``beta_start``, ``beta_end`` and ``num_train_timesteps`` from it) with EMA weights."""

    name: TaskName = TaskName.train_diffusion
    max_steps: int = 20000
    lr: float = 2e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    beta_start: float = LinearBetas.beta_start
    beta_end: float = LinearBetas.beta_end
    num_train_timesteps: int = LinearBetas.num_timesteps
    grad_clip: float = 1.0
    n_samples: int = 64
    sample_dt: float = 1e-3

    def __post_init__(self) -> None:
        require_at_least("max_steps", self.max_steps, 1)
        require_interval("lr", self.lr, 0.0, low_open=True)
        require_at_least("warmup_steps", self.warmup_steps, 0)
        require_interval("ema_decay", self.ema_decay, 0.0, 1.0, high_open=True)
        check_linear_betas(self.beta_start, self.beta_end, self.num_train_timesteps, "num_train_timesteps")
        require_at_least("n_samples", self.n_samples, 0)
        require_interval("sample_dt", self.sample_dt, 0.0, 1.0, low_open=True)

    def networks(self, root: Any) -> list[Network]:
        return root.diffusion.networks("diffusion")


@dataclass
class TradesSchema:
    """TRADES (Zhang et al. 2019): ``trades_lambda`` weighs the KL term (TRADES' published beta),
    whose inner maximum is PGD in the ``norm`` ball of radius ``eps`` (null: the dataset's standard
    eps) with ``steps`` steps of ``step_size`` (null: eps / 4)."""

    trades_lambda: float = 6.0
    norm: Norm = Norm.Linf
    eps: float | None = None
    step_size: float | None = None
    steps: int = 10

    def __post_init__(self) -> None:
        require_interval("trades_lambda", self.trades_lambda, 0.0)
        if self.eps is not None:
            require_interval("eps", self.eps, 0.0, 1.0, low_open=True)
        if self.step_size is not None:
            require_interval("step_size", self.step_size, 0.0, low_open=True)
        require_at_least("steps", self.steps, 1)


@dataclass
class DiffusionLevelsSchema(LinearBetas):
    """The diffusion levels 0..round(T t_max) c_phi trains on (0: clean), on the DDPM schedule
    of the diffusion model it will guide; ``t_max`` 0.1 covers purifier.t_star <= 0.1 (AGDM's
    published 0.07)."""

    t_max: float = 0.1

    def __post_init__(self) -> None:
        require_interval("t_max", self.t_max, 0.0, 1.0)
        self.check_betas()


@dataclass
class TrainAgdmAuxTaskSchema(TrainingRun, EpochTraining, TaskSchema):
    """Train AGDM's auxiliary network ``net`` with TRADES on diffused inputs; writes
    ``agdm_aux.safetensors`` + ``.json`` and ``auxiliary_report.md``; ``eval_steps``: PGD steps
    of the per-epoch and final robust accuracy."""

    name: TaskName = TaskName.train_agdm_aux
    net: Any = MISSING
    trades: TradesSchema = field(default_factory=TradesSchema)
    noise: DiffusionLevelsSchema = field(default_factory=DiffusionLevelsSchema)
    eval_steps: int = 20

    def __post_init__(self) -> None:
        self.check_epochs()
        require_at_least("eval_steps", self.eval_steps, 1)

    def networks(self, root: Any) -> list[Network]:
        return [Network("task", self.net, None)]
