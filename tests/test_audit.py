"""The attack-failure audit (advpure.audit): every indicator on a case built to fail it and one built
to pass, so none is a check that cannot fail; its statistics, report and wiring into run.py.

The toys: a 10-class linear classifier on 8x8 images whose class 0 wins exactly where the image's
mean exceeds 0.45 (every loss rises as the mean falls), behind a "purifier" that is additive
Gaussian noise (exact, informative gradient), a quantizer (zero gradient: masking), a random
gain (a very noisy gradient) or a random +-0.2 shift (a coin-flip prediction). Attacks: PGD-EOT,
and PGD-EOT broken on purpose (gradient sign flipped; the clean image returned; too few steps).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from advpure.attacks.pgd_eot import PGDEOT
from advpure.audit.base import AuditContext, IndicatorResult, Verdict
from advpure.audit.names import INDICATOR_NAMES
from advpure.audit.probe import Evaluation
from advpure.audit.registry import INDICATORS
from advpure.audit.settings import AuditSchema
from advpure.audit.statistics import compare_fooled, majority_correct
from advpure.audit.trajectory import still_improving
from advpure.audit.verdicts import format_audit, run_audit, verdict_line, write_audit
from advpure.config.enums import GradMode
from advpure.errors import ConfigError
from advpure.evaluation.tables import format_table
from advpure.purifiers.gradients import GRADIENT_RULES
from advpure.purifiers.noise import GlobalNoise, NoiseSource
from advpure.tasks.audit import audited_result_key, store_config

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------------ toys


class Linear(nn.Module):
    """Logits of x (N, 1, 8, 8): class 0 = scale * (mean(x) - 0.45), class 1 = 0, others -5."""

    def __init__(self, scale: float = 20.0) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.weight[0] = scale / 64
            self.linear.bias.fill_(-5.0)
            self.linear.bias[0] = -scale * 0.45
            self.linear.bias[1] = 0.0
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class Gaussian(nn.Module):
    """x + sigma z: random, with the identity as its exact gradient."""

    def __init__(self, sigma: float = 0.02) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sigma * torch.randn_like(x)


class Quantize(nn.Module):
    """round(16 x) / 16: the value barely changes, the gradient is zero (masking)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 16) / 16


class Gain(nn.Module):
    """x (1 + sigma z): the gradient through it is the classifier's times a random gain."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1 + self.sigma * torch.randn_like(x))


class Coin(nn.Module):
    """x +- 0.2 per image: an image of mean ~0.55 is class 0 in half the draws."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * torch.sign(torch.randn(x.shape[0], 1, 1, 1))


class ModedPurifier(nn.Module):
    """A purifier with advpure's gradient modes (GRADIENT_RULES): x + sigma z, optionally
    quantized (then its exact gradient is zero while bpda's is the identity)."""

    name = "toy"
    uses_backbone = False
    supports_adjoint = False
    supports_guidance = False
    surrogate = None

    def __init__(self, masked: bool, grad_mode: GradMode = GradMode.full, sigma: float = 0.02) -> None:
        super().__init__()
        self.masked, self.grad_mode, self.sigma = masked, GradMode(grad_mode), sigma

    def forward(self, x: torch.Tensor, noise: NoiseSource | None = None) -> torch.Tensor:
        return GRADIENT_RULES[self.grad_mode].purify(self, x, noise or GlobalNoise())

    def purify(self, x: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        out = x + self.sigma * noise.normal(0, x)
        return torch.round(out * 16) / 16 if self.masked else out

    def purify_copies(self, x: torch.Tensor, n_copies: int, noise: NoiseSource | None = None) -> torch.Tensor:
        return self(x.repeat(n_copies, 1, 1, 1), noise).view(n_copies, *x.shape)


class WrongSign(PGDEOT):
    """PGD-EOT descending the loss: its gradient's sign flipped."""

    def eot_step(self, model, x_adv, y, with_gradient=True):
        logits, losses, grad = super().eot_step(model, x_adv, y, with_gradient)
        return logits, losses, None if grad is None else -grad


class ReturnsClean(PGDEOT):
    """PGD-EOT that returns the clean image, whatever it found."""

    def attack(self, model, x, y):
        super().attack(model, x, y)
        return x.detach().clone()


def images(levels: list[float]) -> torch.Tensor:
    """One 8x8 image per level: the level plus uniform jitter in [-0.05, 0.05]; (B, 1, 8, 8)."""
    generator = torch.Generator().manual_seed(1)
    jitter = (torch.rand(len(levels), 1, 8, 8, generator=generator) - 0.5) * 0.1
    return (torch.tensor(levels).view(-1, 1, 1, 1) + jitter).clamp(0, 1)


FOOLABLE = [0.5 + 0.01 * i for i in range(12)]  # mean 0.5..0.61: eps 0.2 takes every one below 0.45


def context(
    purifier: nn.Module,
    attack_class: type = PGDEOT,
    levels: list[float] | None = None,
    n_draws: int = 10,
    options: AuditSchema | None = None,
    **attack_settings,
) -> AuditContext:
    """An audit of ``attack_class`` (eps 0.2, 20 steps, EOT 4 unless overridden) against the linear
    classifier behind ``purifier`` on the given image levels (labels 0), without records."""
    settings = {"eps": 0.2, "n_iter": 20, "n_eot": 4, **attack_settings}

    def make(**overrides):
        return attack_class(**{**settings, **overrides})

    x = images(levels or FOOLABLE)
    y = torch.zeros(x.shape[0], dtype=torch.long)
    options = options or AuditSchema()
    return AuditContext(Linear(), purifier, make(), x, y, options, make_attack=make, n_draws=n_draws)


def run(name: str, ctx: AuditContext) -> IndicatorResult:
    torch.manual_seed(0)
    return INDICATORS[name](ctx)


# ------------------------------------------------------------------ one pair per indicator


def test_zero_gradients_fails_on_a_masked_defense_and_passes_on_noise():
    masked = run("zero_gradients", context(Quantize()))
    assert masked.verdict == Verdict.failed and masked.value == 1.0
    assert "Square" in masked.fix
    honest = run("zero_gradients", context(Gaussian()))
    assert honest.verdict == Verdict.passed and honest.value == 0.0


def test_zero_gradients_warns_under_an_approximate_mode_and_sees_the_masked_exact_one():
    result = run("zero_gradients", context(ModedPurifier(masked=True, grad_mode=GradMode.bpda)))
    assert result.verdict == Verdict.warned  # bpda's gradient exists, but it is not the defense's
    assert result.details["exact_zero_images"] == 12 and "gradient-free" in result.fix


def test_eot_sufficiency_fails_with_one_draw_of_a_very_noisy_gradient_and_passes_on_a_quiet_one():
    noisy = run("eot_sufficiency", context(Gain(sigma=5.0), n_eot=1))
    assert noisy.verdict == Verdict.failed
    assert noisy.details["copies_needed"] > 16  # per-draw SNR 1/25: c = 0.5 needs ~25 copies
    quiet = run("eot_sufficiency", context(Gain(sigma=0.2), n_eot=1))
    assert quiet.verdict == Verdict.passed and quiet.details["copies_needed"] == 1
    assert quiet.value > 0.9


def test_silent_success_fails_when_the_attack_returns_the_clean_image_and_passes_otherwise():
    silent = run("silent_success", context(Gaussian(), ReturnsClean))
    assert silent.verdict == Verdict.failed and silent.value == 1.0
    honest = run("silent_success", context(Gaussian()))
    assert honest.verdict == Verdict.passed and honest.value == 0.0


def test_incomplete_optimization_fails_on_a_too_short_attack_and_passes_on_a_converged_one():
    robust = [0.7 + 0.01 * i for i in range(8)]  # eps 0.1 cannot take these below 0.45: robust
    short = run("incomplete_optimization", context(Gaussian(), levels=robust, eps=0.1, n_iter=3, step_size=0.005))
    assert short.verdict == Verdict.failed and short.value == 1.0
    converged = run("incomplete_optimization", context(Gaussian(), levels=robust, eps=0.1, n_iter=40, step_size=0.02))
    assert converged.verdict == Verdict.passed and converged.details["robust_images"] == 8


def test_unbounded_attack_fails_with_a_wrong_gradient_sign_and_passes_with_the_right_one():
    wrong = run("unbounded_attack", context(Gaussian(), WrongSign))
    assert wrong.verdict == Verdict.failed and wrong.value == 1.0
    assert wrong.details["eps"] == 1.0 and "reduced budget" in wrong.budget  # 10 x 0.2, capped at Linf 1
    right = run("unbounded_attack", context(Gaussian()))
    assert right.verdict == Verdict.passed and right.value == 0.0


def test_approximation_gap_fails_when_bpda_beats_a_masked_exact_gradient_and_passes_on_noise():
    masked = run("approximation_gap", context(ModedPurifier(masked=True)))
    assert masked.verdict == Verdict.failed
    assert masked.details["robust_accuracy"]["full"] == 1.0 and masked.details["robust_accuracy"]["bpda"] == 0.0
    assert "beaten by" in masked.fix
    honest = run("approximation_gap", context(ModedPurifier(masked=False)))
    assert honest.verdict == Verdict.passed
    assert set(honest.details["robust_accuracy"]) == {"full", "bpda", "blind"}


def test_approximation_gap_flags_an_approximation_the_exact_gradient_beats():
    """Evaluated under bpda on a defense whose real gradient flips the direction: full wins."""

    class Mirror(ModedPurifier):
        def purify(self, x, noise):  # 1 - x: bpda's identity points the wrong way
            return 1.0 - x + self.sigma * noise.normal(0, x)

    result = run("approximation_gap", context(Mirror(masked=False, grad_mode=GradMode.bpda), levels=[0.4] * 8))
    assert result.verdict == Verdict.failed and "overstates" in result.fix


def test_a_wrapped_purifier_has_its_inner_purifiers_gradient_modes_switched():
    """A wrapper (as the resizing one) exposes its inner purifier's grad_mode: the audit switches
    the inner one, and restores it."""

    class Wrapper(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.purifier = inner

        @property
        def grad_mode(self) -> GradMode:
            return self.purifier.grad_mode

        def forward(self, x: torch.Tensor, noise: NoiseSource | None = None) -> torch.Tensor:
            return self.purifier(x, noise)

    inner = ModedPurifier(masked=True)
    ctx = context(Wrapper(inner))
    assert ctx.mode_holder is inner and ctx.modes() == [GradMode.full, GradMode.bpda, GradMode.blind]
    with ctx.target(GradMode.bpda):
        assert inner.grad_mode == GradMode.bpda
    assert inner.grad_mode == GradMode.full
    assert run("approximation_gap", ctx).verdict == Verdict.failed


def test_black_box_fails_when_square_beats_a_wrong_sign_attack_and_passes_against_a_working_one():
    wrong = run("black_box", context(Gaussian(), WrongSign))
    assert wrong.verdict == Verdict.failed
    assert wrong.details["only_this_fooled"] > wrong.details["only_reference_fooled"]
    right = run("black_box", context(Gaussian()))
    assert right.verdict == Verdict.passed


def test_score_stability_fails_on_coin_flips_with_two_draws_and_passes_on_a_deterministic_defense():
    coin = run("score_stability", context(Coin(), n_draws=2))
    assert coin.verdict == Verdict.failed and coin.details["draws_needed"] > 2
    fixed = run("score_stability", context(nn.Identity(), n_draws=2))
    assert fixed.verdict == Verdict.passed and fixed.value == 0.0


def test_score_stability_reads_every_evaluated_record():
    records = [
        {"label": 0, "defended_clean_draws": "0 0 0 0", "defended_adv_draws": draws}
        for draws in ("0 1 0 1", "0 0 0 0", "1 1 1 1", "1 0 1 0")
    ]
    ctx = context(nn.Identity())
    ctx.all_records = records
    result = run("score_stability", ctx)
    # two images robust in half the draws: sd = sqrt(2 * 0.25) / 4; p = 1/2: se = sqrt(0.25 / 4)
    assert result.details["sd"] == pytest.approx(0.5**0.5 / 4) and result.details["se"] == pytest.approx(0.25)
    assert result.value == pytest.approx(0.5**0.5)  # their ratio: the mean of 2 re-scorings is needed
    assert result.details["draws_needed"] == 2 and result.verdict == Verdict.warned
    assert result.details["source"] == "the evaluation's records"


# ------------------------------------------------------------------ the pieces they share


def test_registry_matches_the_names_and_every_indicator_is_documented():
    assert list(INDICATORS) == list(INDICATOR_NAMES)
    assert all(function.__doc__ for function in INDICATORS.values())


def test_the_probe_traces_an_attack_that_splits_the_model_into_purifier_and_classifier():
    """DiffHammer purifies in one call and classifies in another (its gradient is grafted through a
    stored trajectory): the probe pairs the two calls, so every image gets its trace."""
    from advpure.attacks.diffhammer import DiffHammer

    x, y = images(FOOLABLE[:6]), torch.zeros(6, dtype=torch.long)
    attack = DiffHammer(eps=0.2, n_iter=5, n_eot=4, n_restarts=1)
    ctx = AuditContext(Linear(), ModedPurifier(masked=False), attack, x, y)
    probed = ctx.probed()
    assert all(len(history) >= 5 for history in probed.history)  # at least one evaluation per iteration
    assert bool((probed.best != x).flatten(1).any(1).all())  # and the iterates it saw
    assert run("silent_success", ctx).verdict == Verdict.passed


def test_reruns_use_the_reduced_budget_capped_at_the_evaluated_attacks():
    assert context(Gaussian(), n_iter=5, n_eot=8, n_restarts=3).reduced_budget() == {
        "n_iter": 5,
        "n_eot": 4,
        "n_restarts": 1,
    }


def test_no_attack_makes_the_attack_indicators_not_applicable():
    from advpure.attacks.none import NoAttack

    ctx = AuditContext(Linear(), Gaussian(), NoAttack(), images([0.6] * 4), torch.zeros(4, dtype=torch.long))
    report = run_audit(ctx)
    by_name = {row.name: row.verdict for row in report.rows}
    assert by_name["score_stability"] == Verdict.passed
    assert all(v == Verdict.not_applicable for name, v in by_name.items() if name != "score_stability")
    assert report.summary()["verdict"] == "audit: 1 pass; 7 n/a"


def test_verdict_line_names_failures_and_warnings():
    def row(name: str, verdict: Verdict) -> IndicatorResult:
        return IndicatorResult(name, 0.0, 0.0, verdict, "")

    assert verdict_line([row(n, Verdict.passed) for n in INDICATOR_NAMES]) == "audit: 8 pass"
    rows = [row("a", Verdict.failed), row("b", Verdict.warned), row("c", Verdict.passed), row("d", Verdict.failed)]
    assert verdict_line(rows) == "audit: FAIL a, d; WARN b; 1 pass"


def test_still_improving_is_iofs_rule_above_the_noise_floor():
    def trace(margins: list[float], error: float = 0.0) -> list[Evaluation]:
        return [Evaluation(m, error, 0.0, True) for m in margins]

    rising = [float(i) for i in range(30)]
    assert still_improving(trace(rising), 10, 0.05, 2.0)
    plateau = [float(min(i, 10)) for i in range(30)]
    assert not still_improving(trace(plateau), 10, 0.05, 2.0)
    assert still_improving(trace([0.0]), 10, 0.05, 2.0)  # one evaluation shows no plateau
    creeping = [*plateau[:-1], 10.5]  # a late rise of 5% of the span, within 2 standard errors of 1
    assert not still_improving(trace(creeping, error=1.0), 10, 0.04, 2.0)
    assert still_improving(trace(creeping, error=0.1), 10, 0.04, 2.0)


def test_compare_fooled_is_a_one_sided_exact_sign_test():
    a = torch.tensor([True, False, False, False, False, False])
    b = torch.tensor([True, True, True, True, True, True])
    comparison = compare_fooled(a, b)
    assert (comparison.b_only, comparison.a_only) == (5, 0)
    assert comparison.p_value == pytest.approx(1 / 32) and comparison.beats
    assert compare_fooled(b, a).p_value == 1.0 and not compare_fooled(b, a).beats


def test_majority_correct_is_the_evaluations_strict_plurality():
    draws = torch.tensor([[0, 1, 0], [0, 2, 1], [1, 3, 1]])  # (D=3, B=3): image 1 is a three-way tie
    y = torch.tensor([0, 1, 1])
    assert majority_correct(draws, y).tolist() == [True, False, True]


def test_audit_options_reject_unknown_names():
    with pytest.raises(ConfigError, match="indicators"):
        AuditSchema(indicators=["zero_gradient"])
    with pytest.raises(ConfigError, match="modes"):
        AuditSchema(modes=["exact"])


def test_a_subset_of_indicators_runs_and_the_files_are_written(tmp_path):
    ctx = context(Quantize(), options=AuditSchema(indicators=["zero_gradients", "black_box"]))
    report = run_audit(ctx)
    assert [row.name for row in report.rows] == ["zero_gradients", "black_box"]
    assert report.summary()["failed"] == ["zero_gradients", "black_box"]
    paths = write_audit(tmp_path, report, "toy")
    saved = json.loads(paths["audit.json"].read_text())
    assert saved["verdict"] == "audit: FAIL zero_gradients, black_box; 0 pass"
    assert [row["name"] for row in saved["indicators"]] == ["zero_gradients", "black_box"]
    assert "| 1 | unavailable or zero gradients" in format_audit(report)


def test_the_audit_keys_leave_the_batch_store_and_change_the_result_key():
    config = {"seed": 0, "task": {"name": "evaluate", "n_vote": 10, "audit": True, "audit_images": 16}}
    assert store_config(config)["task"] == {"name": "evaluate", "n_vote": 10}
    plain = {**config, "task": {**config["task"], "audit": False}}
    assert audited_result_key("abc", plain) == "abc"
    assert audited_result_key("abc", config) != "abc"
    other = {**config, "task": {**config["task"], "audit_images": 8}}
    assert audited_result_key("abc", other) != audited_result_key("abc", config)


def test_the_results_table_and_the_sweep_report_show_the_verdict(tmp_path):
    from advpure.sweeps.summary import SweepRow, format_markdown, table_rows

    metric = {"value": 0.5, "ci_low": 0.2, "ci_high": 0.8, "n": 4, "correct": 2}
    metrics = {name: metric for name in ("undefended_clean", "undefended_robust", "defended_clean", "defended_robust")}
    results = {
        "dataset": "digits",
        "classifier": "digits_cnn",
        "seed": 0,
        "metrics": metrics,
        "attack": {"name": "pgd_eot", "norm": "Linf", "eps": 0.15},
        "purifier": {"name": "diffpure", "grad_mode": "full"},
        "audit": {"verdict": "audit: FAIL black_box; 7 pass", "failed": ["black_box"], "warned": []},
    }
    assert "- audit: FAIL black_box; 7 pass" in format_table(results)
    rows = [SweepRow(tmp_path / "0_a", "a", results, {}), SweepRow(tmp_path / "1_b", "b", None, {})]
    assert table_rows(rows)[0]["audit"] == "audit: FAIL black_box; 7 pass"
    markdown = format_markdown(rows, tmp_path)
    assert "| audit |" in markdown and "FAIL black_box" in markdown


# ------------------------------------------------------------------ run.py, end to end


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_run_py_audits_an_evaluation_then_task_audit_audits_the_run_folder(tmp_path):
    run_dir = tmp_path / "evaluate"
    small = ["task.audit_options.square_queries=10", "task.audit_options.eot_max_copies=2"]
    result = _run(
        [
            "task.audit=true",
            "task.n_images=4",
            "task.batch_size=4",
            "attack.n_iter=2",
            "attack.n_eot=2",
            "logger=none",
            f"hydra.run.dir={run_dir}",
            *small,
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "audit.md").is_file() and (run_dir / "audit.json").is_file()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["audit"]["verdict"].startswith("audit: ")
    assert results["audit"]["verdict"] == json.loads((run_dir / "audit.json").read_text())["verdict"]
    assert results["audit"]["verdict"] in (run_dir / "results.md").read_text()
    assert len(json.loads((run_dir / "audit.json").read_text())["indicators"]) == 8

    audit_dir = tmp_path / "audit"
    result = _run(
        [
            "task=audit",
            f"task.run_dir={run_dir}",
            "task.n_images=2",
            "logger=none",
            f"hydra.run.dir={audit_dir}",
            *small,
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    audited = json.loads((audit_dir / "results.json").read_text())
    assert audited["task"] == "audit" and audited["audited_run"] == str(run_dir)
    assert json.loads((audit_dir / "audit.json").read_text())["images"] == 2
