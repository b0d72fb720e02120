"""NaN/Inf in a purifier's output, a classifier's logits or an attack's gradient/output: found per
example, reported with batch and dataset indices, stop or skip, never counted robust; attacks that
leave the eps-ball or [0, 1] are errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advpure.attacks.pgd_eot import PGDEOT
from advpure.data.digits import DigitsDataModule
from advpure.evaluation.batches import BatchPlan
from advpure.evaluation.module import AttackBudgetError, EvaluationModule, NonFiniteError
from advpure.evaluation.store import BatchStore
from advpure.evaluation.tables import summarize
from advpure.models.digits_cnn import DigitsCNN
from advpure.purifiers.identity import IdentityPurifier

POISONED = 1  # position in the batch of the example that produces NaN


def _near(x: torch.Tensor, image: torch.Tensor, radius: float = 0.3) -> torch.Tensor:
    """(N,) rows of x within ``radius`` (Linf) of ``image``."""
    return (x - image).flatten(1).abs().amax(1) <= radius


class PoisonPurifier(IdentityPurifier):
    """The identity, but NaN for images near ``poison`` (a purifier that diverges on one input)."""

    def __init__(self, poison: torch.Tensor) -> None:
        super().__init__()
        self.poison = poison

    def forward(self, x, noise=None):
        return torch.where(_near(x, self.poison).view(-1, 1, 1, 1), torch.full_like(x, float("nan")), x)

    def purify_copies(self, x, n_copies, noise=None):
        return self(x.repeat(n_copies, 1, 1, 1)).view(n_copies, *x.shape)


class PoisonClassifier(nn.Module):
    """A classifier whose logits are Inf for images near ``poison``."""

    def __init__(self, net: nn.Module, poison: torch.Tensor) -> None:
        super().__init__()
        self.net, self.poison = net, poison

    def forward(self, x):
        logits = self.net(x)
        return torch.where(_near(x, self.poison).view(-1, 1), torch.full_like(logits, float("inf")), logits)


class OutsideAttack:
    """Returns points outside its ball (a buggy attack)."""

    eps, norm = 0.1, "Linf"

    def __call__(self, model, x, y):
        return (x + 0.2).clamp(0, 1)


@pytest.fixture(scope="module")
def batch():
    datamodule = DigitsDataModule()
    datamodule.setup()
    x = torch.stack([datamodule.test_set[i][0] for i in range(4)])
    y = torch.tensor([int(datamodule.test_set[i][1]) for i in range(4)])
    return x, y, torch.arange(10, 14), datamodule.test_set


def _module(tmp_path, classifier, purifier, on_nonfinite, attack=None):
    torch.manual_seed(0)
    attack = attack or PGDEOT(eps=0.1, n_iter=2, n_eot=2)
    plan = BatchPlan.cut(list(range(10, 14)), 4)
    store = BatchStore(tmp_path / "store", {"test": "nonfinite"})
    return EvaluationModule(
        classifier, purifier, attack, None, plan, store, n_panel=0, n_draws=3, on_nonfinite=on_nonfinite
    )


def test_nan_purifier_output_stops_naming_batch_and_indices(tmp_path, batch):
    x, y, index, _ = batch
    module = _module(tmp_path, DigitsCNN(width=8), PoisonPurifier(x[POISONED]), "stop")
    with pytest.raises(NonFiniteError) as error:
        module.evaluate_batch(x, y, index, batch_id=7)
    message = str(error.value)
    assert "batch 7" in message and f"[{int(index[POISONED])}]" in message
    assert "defended attack: purifier output" in message and "task.on_nonfinite=skip" in message


def test_nan_purifier_output_skipped_is_never_robust(tmp_path, batch):
    x, y, index, _ = batch
    net = DigitsCNN(width=8)
    module = _module(tmp_path, net, PoisonPurifier(x[POISONED]), "skip")
    out = module.evaluate_batch(x, y, index, batch_id=0)
    records = out["records"]
    bad = records[POISONED]
    assert bad["defended_clean_pred"] == bad["defended_adv_pred"] == -1
    assert set(bad["defended_adv_draws"].split()) == {"-1"}
    assert "purifier output" in bad["nonfinite"] and "gradient" in bad["nonfinite"]
    assert bad["undefended_clean_pred"] != -1  # the undefended model is not affected
    assert all(r["nonfinite"] == "" for i, r in enumerate(records) if i != POISONED)
    events = out["attack_checks"]["nonfinite"]
    assert events and all(e["batch"] == 0 and e["indices"] == [int(index[POISONED])] for e in events)
    # counted wrong, so never robust, under every scoring rule
    for r in records:
        r["label"] = r["defended_adv_pred"] if r is not bad else r["label"]
    metrics = summarize(records, 3, 3)
    assert metrics["defended_robust"]["correct"] == 3 and metrics["defended_robust_majority"]["correct"] <= 3


def test_inf_logits_are_found_in_the_undefended_model_too(tmp_path, batch):
    x, y, index, _ = batch
    classifier = PoisonClassifier(DigitsCNN(width=8), x[POISONED])
    with pytest.raises(NonFiniteError, match=r"undefended attack: classifier logits at dataset indices \[11\]"):
        _module(tmp_path, classifier, IdentityPurifier(), "stop").evaluate_batch(x, y, index, batch_id=0)
    records = _module(tmp_path, classifier, IdentityPurifier(), "skip").evaluate_batch(x, y, index, 0)["records"]
    bad = records[POISONED]
    assert bad["undefended_clean_pred"] == bad["undefended_adv_pred"] == bad["defended_clean_pred"] == -1
    assert "undefended clean classifier logits" in bad["nonfinite"]


def test_attack_outside_the_ball_is_an_error_naming_examples(tmp_path, batch):
    x, y, index, _ = batch
    module = _module(tmp_path, DigitsCNN(width=8), IdentityPurifier(), "skip", attack=OutsideAttack())
    with pytest.raises(AttackBudgetError, match=r"examples \[10, 11, 12, 13\] outside the threat model"):
        module.evaluate_batch(x, y, index, batch_id=0)


def test_nan_attack_output_is_not_a_budget_pass(tmp_path, batch):
    from advpure.evaluation.module import check_budget

    x, _, index, _ = batch
    x_adv = x.clone()
    x_adv[2] = float("nan")
    with pytest.raises(AttackBudgetError, match=r"examples \[12\]"):
        check_budget(OutsideAttack(), x, x_adv, "defended", index=index)


def test_on_nonfinite_is_a_config_choice(compose_cfg):
    from advpure.config.validate import validate_config
    from advpure.errors import ConfigError

    assert compose_cfg().task.on_nonfinite == "stop"
    assert validate_config(compose_cfg("task.on_nonfinite=skip")).task.on_nonfinite == "skip"
    with pytest.raises(Exception, match="on_nonfinite"):
        validate_config(compose_cfg("task.on_nonfinite=ignore"))
    assert issubclass(ConfigError, Exception)


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_task_on_nonfinite_reaches_the_evaluation(compose_cfg, tmp_path, monkeypatch, policy):
    """``task.on_nonfinite`` from the command line decides: stop names the batch and the image;
    skip finishes, counts the image as neither clean-correct nor robust and lists the event."""
    import advpure.tasks.components as components
    from advpure.cli import run_task
    from advpure.tasks.context import RunContext

    data = DigitsDataModule()
    data.setup("test")
    poison = data.test_set[POISONED][0]
    monkeypatch.setattr(components, "build_purifier", lambda *args, **kwargs: PoisonPurifier(poison))
    cfg = compose_cfg(
        "purifier=none",
        "attack=pgd_eot",
        "attack.n_iter=2",
        "attack.n_eot=1",
        "task.n_images=4",
        "task.batch_size=4",
        "task.n_vote=1",
        "task.n_worst=1",
        "logger=none",
        f"task.on_nonfinite={policy}",
        f"paths.evaluations={tmp_path / 'store'}",
    )
    if policy == "stop":
        with pytest.raises(NonFiniteError, match=rf"batch 0.*\b{POISONED}\b"):
            run_task(cfg, RunContext(tmp_path / "run"))
        return
    results = run_task(cfg, RunContext(tmp_path / "run"))
    assert results["nonfinite"]["policy"] == "skip"
    assert any(POISONED in event["indices"] for event in results["nonfinite"]["events"])
    assert results["metrics"]["defended_clean"]["correct"] <= 3
    assert results["metrics"]["defended_robust"]["correct"] <= 3
