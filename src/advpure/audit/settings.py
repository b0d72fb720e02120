"""The audit's budgets and thresholds, in one place: ``task.audit_options`` (schema + defaults).

Every threshold carries its rationale in the comment above it. Budgets bound the audit's cost:
the indicators that run an attack again (unbounded attack, gradient-mode gap) use ``rerun_n_iter`` /
``rerun_n_eot`` / ``rerun_n_restarts`` (capped at the evaluated attack's own) and say so in their
row; the black-box check runs Square with ``square_queries`` x ``square_eot``.
"""

from __future__ import annotations

from dataclasses import dataclass

from advpure.config.checks import require_at_least, require_interval


@dataclass
class AuditSchema:
    """Budgets and thresholds of the attack-failure audit (:mod:`advpure.audit`).

    Budgets: ``n_draws`` fresh purifications rescoring each point by majority vote (null: the
    evaluation's max(n_vote, n_worst)); ``gradient_draws`` EOT draws of the gradient checks;
    ``eot_max_copies`` the largest EOT size the EOT-sufficiency curve measures (it draws twice that
    many single-draw gradients per image); ``rerun_n_iter`` / ``rerun_n_eot`` /
    ``rerun_n_restarts`` the reduced budget of re-run attacks (restarts: for attacks that have
    them); ``eps_factor`` the unbounded attack's eps multiple; ``square_queries`` and
    ``square_eot`` the black-box check's queries and EOT draws per query; ``modes`` the gradient
    modes compared (null: every mode the purifier supports); ``indicators`` which to run (null: all).
    """

    n_draws: int | None = None
    gradient_draws: int = 8
    eot_max_copies: int = 16
    rerun_n_iter: int = 10
    rerun_n_eot: int = 4
    rerun_n_restarts: int = 1
    eps_factor: float = 10.0
    square_queries: int = 100
    square_eot: int = 4
    modes: list[str] | None = None
    indicators: list[str] | None = None
    # Significance of every "X beats Y" and "best-seen iterate beats the returned one" test
    # (one-sided exact tests on the images): 5%, the usual level; below it a difference is noise.
    alpha: float = 0.05
    # A gradient counts as zero when its L1 norm is below this fraction of the bare classifier's
    # gradient at the same images: float32 keeps ~7 significant digits, so a million-fold shrink
    # leaves an attack no usable direction (exact zeros, AutoAttack's check, are included).
    zero_gradient_ratio: float = 1e-6
    # Images with a zero gradient under the evaluated grad mode, as a fraction: with the CW margin
    # (no softmax saturation) any zero gradient is masking, as AutoAttack's check flags any point.
    zero_gradient_max_fraction: float = 0.0
    # Cosine of two independent EOT estimates of n copies each (median over images): c = n r / (1 +
    # n r) for per-draw signal-to-noise r. 0.5 is SNR 1: below it the estimate holds more noise than
    # signal, and the attack's steps are mostly random (warn when the run used fewer copies).
    eot_min_cosine: float = 0.5
    # Below this cosine at the run's own EOT size two estimates barely agree: the gradient the
    # attack followed was noise (fail).
    eot_fail_cosine: float = 0.1
    # Significant silent successes (best-seen iterate fooled the majority vote, the returned point
    # did not) tolerated, as a fraction of images: none, since the attack had a better point in hand.
    silent_max_fraction: float = 0.0
    # IoAF's rule (Pintor et al. 2022): the running best of the loss trace, rescaled to [0, 1], must
    # not rise by more than 0.05 over the last 10 evaluations; adapted to EOT noise, a rise counts
    # only above `incomplete_noise_z` standard errors of one evaluation's mean margin.
    incomplete_window: int = 10
    incomplete_min_gain: float = 0.05
    incomplete_noise_z: float = 2.0
    # Fraction of images the attack failed on while still improving: above 10% more iterations are
    # likely to lower the number (fail); any (warn).
    incomplete_max_fraction: float = 0.1
    # Robust accuracy allowed at eps_factor x eps: the enlarged ball holds images of other classes,
    # so an attack that leaves more than 10% robust there is not optimizing (Carlini et al. 2019).
    unbounded_max_robust: float = 0.1
    # Spread of single-draw robust accuracy across re-scorings of the same images, as a ratio to the
    # number's image-sampling standard error (what its 95% interval states): at 0.5 the re-scoring
    # noise widens that interval by at most 12% (sqrt(1 + 0.5^2)); above it the number needs the
    # mean of k = (ratio / 0.5)^2 re-scorings (warn if the run recorded that many, else fail).
    stability_max_ratio: float = 0.5

    def __post_init__(self) -> None:
        require_at_least("n_draws", self.n_draws, 1, allow_none=True)
        require_at_least("gradient_draws", self.gradient_draws, 2)
        require_at_least("eot_max_copies", self.eot_max_copies, 1)
        require_at_least("rerun_n_iter", self.rerun_n_iter, 1)
        require_at_least("rerun_n_eot", self.rerun_n_eot, 1)
        require_at_least("rerun_n_restarts", self.rerun_n_restarts, 1)
        require_interval("eps_factor", self.eps_factor, 1.0, low_open=True)
        require_at_least("square_queries", self.square_queries, 1)
        require_at_least("square_eot", self.square_eot, 1)
        require_interval("alpha", self.alpha, 0.0, 1.0, low_open=True, high_open=True)
        require_interval("zero_gradient_ratio", self.zero_gradient_ratio, 0.0)
        require_interval("zero_gradient_max_fraction", self.zero_gradient_max_fraction, 0.0, 1.0)
        require_interval("eot_min_cosine", self.eot_min_cosine, 0.0, 1.0, low_open=True, high_open=True)
        require_interval("eot_fail_cosine", self.eot_fail_cosine, 0.0, self.eot_min_cosine)
        require_interval("silent_max_fraction", self.silent_max_fraction, 0.0, 1.0)
        require_at_least("incomplete_window", self.incomplete_window, 2)
        require_interval("incomplete_min_gain", self.incomplete_min_gain, 0.0, 1.0)
        require_interval("incomplete_noise_z", self.incomplete_noise_z, 0.0)
        require_interval("incomplete_max_fraction", self.incomplete_max_fraction, 0.0, 1.0)
        require_interval("unbounded_max_robust", self.unbounded_max_robust, 0.0, 1.0)
        require_interval("stability_max_ratio", self.stability_max_ratio, 0.0, 1.0, low_open=True)
        self._check_names()

    def _check_names(self) -> None:
        """``modes`` must name gradient modes, ``indicators`` registered indicators."""
        from advpure.config.enums import GradMode
        from advpure.errors import ConfigError

        modes = [m.value for m in GradMode]
        unknown = [m for m in self.modes or [] if m not in modes]
        if unknown:
            raise ConfigError("modes", f"unknown gradient modes {unknown}", f"use some of {modes}, or null for all")
        from advpure.audit.names import INDICATOR_NAMES

        unknown = [name for name in self.indicators or [] if name not in INDICATOR_NAMES]
        if unknown:
            raise ConfigError(
                "indicators", f"unknown indicators {unknown}", f"use some of {list(INDICATOR_NAMES)}, or null for all"
            )
