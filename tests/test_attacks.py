"""Attacks: AutoAttack, PGD-EOT, APGD-EOT, BPDA+EOT, torchattacks; losses and ball geometry;
perturbations stay in the ball and [0, 1]."""

from __future__ import annotations

import pytest
import torch

from advpure.attacks.apgd_eot import APGDEOT
from advpure.attacks.autoattack import CHECKS, AutoAttackRunner
from advpure.attacks.batched_eot import eot_samples
from advpure.attacks.bpda_eot import BPDAEOT
from advpure.attacks.geometry import GEOMETRIES, project
from advpure.attacks.losses import LOSSES
from advpure.attacks.pgd_eot import PGDEOT
from advpure.attacks.torchattacks_runner import TorchAttacksRunner
from advpure.config.enums import AttackLoss, Norm
from advpure.config.validate import validate_config
from advpure.errors import ConfigError
from advpure.instantiate import build
from advpure.training.pgd import pgd_attack


def _linear_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    return model.eval()


def test_budget_overrides_reach_autoattack():
    runner = AutoAttackRunner(eps=0.1, version="rand", n_iter=10, n_eot=3)
    adversary = runner.build(torch.nn.Identity(), torch.device("cpu"))
    assert adversary.attacks_to_run == ["apgd-ce", "apgd-dlr"]
    # 3 EOT samples per gradient, drawn in one batched call (APGD's own loop count is then 1)
    assert (adversary.apgd.n_iter, adversary.apgd.n_iter_orig, eot_samples(adversary.apgd)) == (10, 10, 3)
    assert adversary.apgd.eot_iter == 1 and adversary.apgd.model.n_eot == 3
    assert adversary.apgd.n_iter_2 == max(int(0.22 * 10), 1)
    assert runner.settings()["reduced_budget"] is True
    published = AutoAttackRunner(eps=0.1, version="rand").settings()
    assert (published["n_iter"], published["n_eot"], published["reduced_budget"]) == (
        100,
        20,
        False,
    )


def test_autoattack_stays_in_the_ball_and_breaks_a_linear_model():
    model = _linear_model()
    x = torch.rand(32, 1, 8, 8)
    y = model(x).argmax(1)  # correctly classified by construction
    for norm, eps in ((Norm.Linf, 0.3), (Norm.L2, 3.0)):
        runner = AutoAttackRunner(eps=eps, norm=norm, version="custom", attacks=["apgd-ce"], n_iter=20)
        x_adv = runner(model, x, y)
        delta = (x_adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == Norm.Linf else delta.norm(dim=1)
        assert size.max() <= eps + 1e-5
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert (model(x_adv).argmax(1) == y).float().mean() < 0.5


def test_pgd_projection_and_ascent():
    delta = torch.randn(4, 1, 8, 8)
    assert project(delta, Norm.Linf, 0.1).abs().max() <= 0.1
    assert project(delta, Norm.L2, 0.5).flatten(1).norm(dim=1).max() <= 0.5 + 1e-6
    model = _linear_model()
    x = torch.rand(16, 1, 8, 8)
    y = model(x).argmax(1)
    x_adv = pgd_attack(model, x, y, norm=Norm.Linf, eps=0.3, step_size=0.05, steps=10)
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    loss = torch.nn.functional.cross_entropy
    assert loss(model(x_adv), y) > loss(model(x), y)


# ------------------------------------------------------------------------------- PGD-EOT


class NoisyLinear(torch.nn.Module):
    """A random model: logits of x + sigma z (fresh z each call); counts its calls."""

    def __init__(self, sigma: float = 0.0) -> None:
        super().__init__()
        self.linear = _linear_model()
        self.sigma = sigma
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.linear(x + self.sigma * torch.randn_like(x))


def test_margin_and_dlr_against_hand_computed_values():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.5, 2.0, 1.5, 0.0]])
    y = torch.tensor([0, 2])
    assert torch.allclose(LOSSES[AttackLoss.margin](logits, y), torch.tensor([1.0 - 3.0, 2.0 - 1.5]))
    # dlr = margin / (z_(1) - z_(3)): (1 - 3) / (3 - 0) and (2 - 1.5) / (2 - 0.5)
    assert torch.allclose(LOSSES[AttackLoss.dlr](logits, y), torch.tensor([-2.0 / 3.0, 0.5 / 1.5]))
    ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    assert torch.allclose(LOSSES[AttackLoss.ce](logits, y), ce)


def test_l2_geometry_projects_and_normalizes():
    geometry = GEOMETRIES[Norm.L2]
    delta = torch.randn(5, 1, 8, 8)
    assert torch.allclose(geometry.size(geometry.project(delta, 0.5)), torch.full((5,), 0.5))
    small = delta / geometry.size(delta).view(-1, 1, 1, 1) * 0.1
    assert torch.equal(geometry.project(small, 0.5), small)  # inside the ball: unchanged
    assert torch.allclose(geometry.size(geometry.ascent(delta)), torch.ones(5))
    start = geometry.start(delta, 0.5, torch.Generator().manual_seed(0))
    assert geometry.size(start).max() <= 0.5 + 1e-6


@pytest.mark.parametrize(("norm", "eps"), [(Norm.Linf, 0.2), (Norm.L2, 2.0)])
def test_pgd_eot_stays_in_the_ball_and_breaks_a_linear_model(norm, eps):
    model = NoisyLinear(sigma=0.05)
    x = torch.rand(32, 1, 8, 8)
    y = model.linear(x).argmax(1)
    attack = PGDEOT(eps=eps, norm=norm, n_iter=20, n_eot=4, step_size=eps / 8)
    x_adv = attack(model, x, y)
    size = GEOMETRIES[norm].size(x_adv - x)
    assert size.max() <= eps + 1e-5 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (model.linear(x_adv).argmax(1) != y).float().mean() > 0.9
    # one batched call of n_eot * B images per step, plus one success check per restart
    assert model.calls == 20 + 1


def test_pgd_eot_gradient_sums_the_passes_and_restarts_only_unbroken_points():
    model = NoisyLinear(sigma=0.0)
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    attack = PGDEOT(eps=0.1, n_iter=1, n_eot=5)
    (single,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y, reduction="sum"), x)
    assert torch.allclose(attack.eot_gradient(model, x, y), 5 * single, atol=1e-6)
    # an unbreakable budget: every restart runs on every image; a huge one: the first breaks all
    tiny = PGDEOT(eps=1e-6, n_iter=2, n_eot=1, n_restarts=3)
    model.calls = 0
    tiny(model, x.detach(), model.linear(x.detach()).argmax(1))
    assert model.calls == 3 * (2 + 1)
    huge = PGDEOT(eps=1.0, n_iter=20, n_eot=1, n_restarts=3, step_size=0.2)
    model.calls = 0
    huge(model, x.detach(), model.linear(x.detach()).argmax(1))
    assert model.calls == 20 + 1


def test_pgd_eot_is_reproducible_and_reports_its_budget():
    model = NoisyLinear(sigma=0.0)
    x = torch.rand(4, 1, 8, 8)
    y = model.linear(x).argmax(1)
    attack = PGDEOT(eps=0.05, n_iter=3, n_eot=1, seed=3)
    assert torch.equal(attack(model, x, y), attack(model, x, y))
    assert attack.settings()["reduced_budget"] is True
    published = PGDEOT(eps=8 / 255).settings()
    assert (published["n_iter"], published["n_eot"], published["reduced_budget"]) == (200, 20, False)
    assert published["step_size"] == pytest.approx(2.5 * (8 / 255) / 200)


def test_torchattacks_by_name_with_kwargs_and_clear_errors():
    model = NoisyLinear(sigma=0.0)
    x = torch.rand(8, 1, 8, 8)
    y = model.linear(x).argmax(1)
    runner = TorchAttacksRunner("EOTPGD", eps=0.1, n_iter=5, n_eot=2, kwargs={"alpha": 0.03})
    assert runner.kwargs == {"eps": 0.1, "steps": 5, "eot_iter": 2, "alpha": 0.03}
    x_adv = runner(model, x, y)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (model.linear(x_adv).argmax(1) != y).any()
    with pytest.raises(ConfigError, match=r"attack\.name"):
        TorchAttacksRunner("EOTPDG", eps=0.1)
    with pytest.raises(ConfigError) as error:
        TorchAttacksRunner("PGD", eps=0.1, kwargs={"eot_iter": 3})
    assert error.value.key == "attack.kwargs.eot_iter" and "alpha, steps, random_start" in error.value.fix


def test_torchattacks_kwargs_is_an_open_dict_on_the_command_line(compose_cfg):
    cfg = compose_cfg("attack=torchattacks", "attack.name=EOTPGD", "attack.kwargs.alpha=0.02")
    validate_config(cfg)
    runner = build(cfg.attack, key="attack", eps=0.1)
    assert runner.kwargs["alpha"] == 0.02 and runner.settings()["alpha"] == 0.02
    with pytest.raises(ConfigError) as error:
        build(compose_cfg("attack=torchattacks", "attack.kwargs.alhpa=0.02").attack, key="attack", eps=0.1)
    assert error.value.key == "attack.kwargs.alhpa"


def test_torchattacks_returns_best_iterates_where_the_class_returns_clean_images():
    """torchattacks.APGD returns the clean image for every point it did not fool; the runner
    returns the most adversarial iterate the class evaluated instead."""
    model = NoisyLinear(sigma=0.0)
    x = torch.rand(6, 1, 8, 8)
    y = model.linear(x).argmax(1)
    runner = TorchAttacksRunner("APGD", eps=1e-4, n_iter=3, kwargs={"seed": 0})
    x_adv = runner(model, x, y)
    assert (x_adv != x).flatten(1).any(1).all()
    assert ((x_adv - x).abs().flatten(1).amax(1) <= 1e-4 + 1e-7).all()
    assert runner.last_verdict.all() and len(runner.last_trace["margin"]) >= 3
    loss = torch.nn.functional.cross_entropy
    assert loss(model.linear(x_adv), y, reduction="none").ge(loss(model.linear(x), y, reduction="none")).all()


def test_torchattacks_budget_is_reduced_below_the_published_one_or_not_comparable():
    assert TorchAttacksRunner("EOTPGD", eps=0.1, n_iter=20, n_eot=4).settings()["reduced_budget"] is True
    assert TorchAttacksRunner("EOTPGD", eps=0.1, n_iter=200, n_eot=20).settings()["reduced_budget"] is False
    settings = TorchAttacksRunner("PGD", eps=0.1, n_iter=200).settings()
    assert settings["reduced_budget"] is None and "not comparable" in settings["budget_reference"]


class PeakedModel(torch.nn.Module):
    """Deterministic: the label's logit is 1 + 40 (mean(x) - 0.5)^2, class 1's 0, so the loss peaks
    at mean(x) = 0.5 and fixed-size sign steps oscillate around the peak; nothing is ever fooled."""

    def forward(self, x):
        label = 1.0 + 40.0 * (x.flatten(1).mean(1) - 0.5) ** 2
        return torch.stack([label, torch.zeros_like(label), *[torch.full_like(label, -5.0)] * 8], dim=1)


def test_pgd_eot_returns_its_best_iterate_not_the_last():
    model = PeakedModel()
    x = 0.56 + 0.02 * torch.rand(8, 1, 8, 8)
    y = torch.zeros(8, dtype=torch.long)
    attack = PGDEOT(eps=0.2, n_iter=7, n_eot=1, step_size=0.03, random_start=False)
    x_adv = attack(model, x, y)
    last = attack.run_once(model, x, y, None)  # the same run, its final iterate
    loss = torch.nn.functional.cross_entropy
    best_loss, last_loss = loss(model(x_adv), y, reduction="none"), loss(model(last), y, reduction="none")
    assert (best_loss >= last_loss).all() and (best_loss > last_loss + 1e-3).any()
    # the best is the iterate closest to the peak: mean(x) within half a step of 0.5
    assert ((x_adv.flatten(1).mean(1) - 0.5).abs() <= 0.015 + 1e-6).all()
    assert attack.last_verdict.all() and attack.last_trace["run"] == ["run 0"] * 8  # 7 steps + the last iterate


# ------------------------------------------------------------------------------ APGD-EOT


@pytest.mark.parametrize(("norm", "eps"), [(Norm.Linf, 0.2), (Norm.L2, 2.0)])
def test_apgd_eot_stays_in_the_ball_and_breaks_a_linear_model(norm, eps):
    model = NoisyLinear(sigma=0.05)
    x = torch.rand(32, 1, 8, 8)
    y = model.linear(x).argmax(1)
    x_adv = APGDEOT(eps=eps, norm=norm, n_iter=10, n_eot=2)(model, x, y)
    size = GEOMETRIES[norm].size(x_adv - x)
    assert size.max() <= eps + 1e-5 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (model.linear(x_adv).argmax(1) != y).float().mean() > 0.9


def test_apgd_eot_count_reaches_apgd_and_unbroken_points_keep_their_best_iterate():
    attack = APGDEOT(eps=1e-4, n_iter=4, n_eot=3, n_restarts=2, loss="dlr")
    apgd = attack.build(torch.nn.Identity(), torch.device("cpu"))
    assert (eot_samples(apgd), apgd.n_iter, apgd.n_restarts, apgd.loss) == (3, 4, 2, "dlr")
    model = NoisyLinear(sigma=0.0)
    x = torch.rand(6, 1, 8, 8)
    y = model.linear(x).argmax(1)
    x_adv = attack(model, x, y)  # a budget too small to fool anything: every restart runs on all
    # per restart: one batched call of n_eot copies at the start and per iteration
    assert model.calls == 2 * (4 + 1)
    looped = APGDEOT(eps=1e-4, n_iter=4, n_eot=3, n_restarts=2, loss="dlr", eot_chunk=1)
    model.calls = 0
    assert torch.equal(looped(model, x, y), x_adv)  # deterministic model: the loop gives the same iterates
    assert model.calls == 2 * (4 + 1) * 3  # the loop: n_eot single passes each time
    assert (x_adv != x).flatten(1).any(1).all()  # the highest-loss iterate, not the clean image
    assert attack.settings()["reduced_budget"] is True
    assert APGDEOT(eps=0.1).settings()["reduced_budget"] is False
    with pytest.raises(ConfigError, match=r"attack\.loss"):
        APGDEOT(eps=0.1, loss="margin")


# ------------------------------------------------------------------------------ BPDA+EOT


def test_bpda_eot_stays_in_the_ball_and_breaks_a_linear_model():
    model = NoisyLinear(sigma=0.0)
    x = torch.rand(32, 1, 8, 8)
    y = model.linear(x).argmax(1)
    attack = BPDAEOT(eps=0.2, n_iter=20, n_eot=2, n_defense_reps=3, step_size=0.02)
    x_adv = attack(model, x, y)
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    fooled = model.linear(x_adv).argmax(1) != y
    assert fooled.float().mean() > 0.9
    assert torch.equal(attack.last_verdict, ~fooled)  # deterministic model: verdict = final check
    with pytest.raises(ConfigError, match=r"attack\.norm") as error:
        BPDAEOT(eps=0.5, norm="L2")
    assert "Linf protocol" in str(error.value)
    published = BPDAEOT(eps=8 / 255).settings()
    assert (published["n_iter"], published["n_eot"], published["n_defense_reps"]) == (50, 15, 150)
    assert published["step_size"] == pytest.approx(2 / 255) and published["reduced_budget"] is False


class SteppedModel(torch.nn.Module):
    """Deterministic, scripted by iterate: image i (a constant image ``levels[i]``) is misclassified
    only at iterate ``break_at[i]`` (its Linf distance from the clean image over ``step``), right
    before and after it. Logits: 3 on the predicted class, plus 0.01 * sum(x) on the label, so the
    attack's gradient sign is -1 everywhere and iterate k is x - k * step. Records call sizes."""

    def __init__(self, levels, labels, break_at, step):
        super().__init__()
        self.clean = torch.tensor(levels).view(-1, 1, 1, 1).expand(-1, 1, 8, 8)
        self.labels, self.break_at, self.step = labels, torch.tensor(break_at), step
        self.calls = []

    def forward(self, x):
        self.calls.append((x.shape[0], torch.is_grad_enabled()))
        distance = (x.detach()[:, None] - self.clean[None]).flatten(2).abs().amax(2)  # (N, images)
        image = distance.argmin(1)
        iterate = (distance.gather(1, image[:, None]).squeeze(1) / self.step).round().long()
        label = self.labels[image]
        predicted = torch.where(iterate == self.break_at[image], (label + 1) % 10, label)
        logits = 3.0 * torch.nn.functional.one_hot(predicted, 10).float()
        return logits + 0.01 * x.flatten(1).sum(1, keepdim=True) * torch.nn.functional.one_hot(label, 10)


def test_bpda_eot_once_broken_stays_broken_and_is_no_longer_attacked_or_checked():
    levels, step = [0.2, 0.35, 0.5, 0.65], 0.01
    y = torch.tensor([0, 1, 2, 3])
    model = SteppedModel(levels, y, break_at=[1, 3, 99, 0], step=step)
    x = model.clean.clone()
    attack = BPDAEOT(eps=0.06, n_iter=5, n_eot=2, n_defense_reps=3, step_size=step)
    x_adv = attack(model, x, y)
    # broken images keep the iterate at which they broke; the unbroken one the last (5 steps)
    distance = (x - x_adv).flatten(1).amax(1)
    assert torch.allclose(distance, torch.tensor([1, 3, 5, 0]) * step, atol=1e-6)
    assert attack.last_verdict.tolist() == [False, False, True, False]
    # per step: one gradient call on n_eot x (unbroken images); a check of n_defense_reps
    # draws only for an image misclassified then; no-gradient pass at the last iterate
    assert model.calls == [
        (8, True), (3, False),  # step 0: image 3 breaks
        (6, True), (3, False),  # step 1: image 0 breaks
        (4, True),
        (4, True), (3, False),  # step 3: image 1 breaks
        (2, True),
        (2, False),  # final check of the last iterate
    ]  # fmt: skip


class DrawModel(torch.nn.Module):
    """A random model: per image and call, logits [2, 0, ...] (3 in 4 draws) or [-100, 1, 0, ...]
    (1 in 4): class 0 wins most draws and the mean softmax, class 1 the mean logits. Records outputs."""

    def __init__(self):
        super().__init__()
        self.outputs = []

    def forward(self, x):
        rare = torch.rand(x.shape[0]) < 0.25
        logits = torch.zeros(x.shape[0], 10)
        logits[:, 0] = torch.where(rare, -100.0, 2.0)
        logits[:, 1] = torch.where(rare, 1.0, 0.0)
        self.outputs.append(logits)
        return logits


def test_bpda_eot_defense_check_averages_logits_over_chunked_draws():
    model = DrawModel()
    x = torch.rand(64, 1, 8, 8)
    attack = BPDAEOT(eps=0.1, n_iter=1, n_eot=2, n_defense_reps=30, defense_chunk=7)
    predicted = attack.defense_prediction(model, x)
    assert [len(o) for o in model.outputs] == [7 * 64] * 4 + [2 * 64]
    draws = torch.cat(model.outputs).view(30, 64, 10)  # (reps, images, classes)
    assert torch.equal(predicted, draws.mean(0).argmax(1))
    votes = torch.nn.functional.one_hot(draws.argmax(2), 10).sum(0).argmax(1)
    softmax = draws.softmax(2).mean(0).argmax(1)
    assert (predicted != votes).any() and (predicted != softmax).any()  # the rule matters here
    # without a chunk: calls of at most max_call images
    model.outputs.clear()
    BPDAEOT(eps=0.1, n_defense_reps=30).defense_prediction(model, x[:4], max_call=50)
    assert [len(o) for o in model.outputs] == [12 * 4, 12 * 4, 6 * 4]


# ----------------------------------------------------------------------- AutoAttack checks


class GradInForward(torch.nn.Module):
    """Deterministic, but calls autograd in its forward pass (what check_dynamic looks for)."""

    def __init__(self):
        super().__init__()
        self.linear = _linear_model()

    def forward(self, x):
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.linear(z).sum(), z)
        return self.linear(x + 0.0 * grad)


@pytest.mark.parametrize(("version", "options"), [("rand", {"n_eot": 2}), ("standard", {})])
def test_autoattack_matches_pyautoattack_where_it_fools_and_keeps_its_verdict(version, options):
    """A deterministic model: the runner's loop makes pyautoattack's decisions (its verdict equals
    run_standard_evaluation's robust points, bit for bit the same examples where it fooled), and
    returns a moved, higher-loss iterate where pyautoattack returns the clean image."""
    model = _linear_model()
    x = torch.rand(8, 1, 8, 8)
    y = model(x).argmax(1)
    runner = AutoAttackRunner(eps=0.05, version=version, n_iter=5, **options)
    reference, _ = runner.build(model, torch.device("cpu")).run_standard_evaluation(x, y, batch_size=8)
    x_adv = runner(model, x, y)
    robust = runner.last_verdict
    assert torch.equal(robust, model(reference).argmax(1) == y) and 0 < int(robust.sum()) < 8
    assert torch.equal(x_adv[~robust], reference[~robust])
    assert torch.equal(reference[robust], x[robust])  # pyautoattack: the clean image
    assert (x_adv[robust] != x[robust]).flatten(1).any(1).all()  # the runner: its best iterate
    margin = LOSSES[AttackLoss.margin]
    assert (margin(model(x_adv[robust]), y[robust]) > margin(model(x[robust]), y[robust])).all()
    assert set(runner.last_trace["run"]) <= set(runner.settings()["attacks"])


def test_autoattack_records_its_checks_per_call():
    x = torch.rand(8, 1, 8, 8)
    y = _linear_model()(x).argmax(1)
    runner = AutoAttackRunner(eps=0.05, version="rand", n_iter=2, n_eot=1)
    assert runner.settings()["checks"] is None
    flags = {}
    for name, model in (
        ("random", NoisyLinear(sigma=0.1)),
        ("dynamic", GradInForward()),
        ("deterministic", NoisyLinear(sigma=0.0)),
    ):
        runner(model, x, y)
        flags[name] = runner.last_checks
        assert set(runner.last_checks) == set(CHECKS)
        assert runner.settings()["checks"] == runner.last_checks  # the last call's
    assert flags["random"]["check_randomized"]["warned"] is True
    message = flags["random"]["check_randomized"]["messages"][0]
    assert "randomized defense" in message and "expected" in message  # no advice to use rand: it is in use
    assert 'use version="rand"' not in message and "flags_doc" not in message
    assert flags["deterministic"]["check_randomized"] == {"warned": False, "messages": []}
    assert flags["dynamic"]["check_dynamic"]["warned"] is True
    assert flags["deterministic"]["check_dynamic"]["warned"] is False  # not carried over


# ----------------------------------------------------------------------------- configs


def test_new_attack_options_compose_and_bpda_eot_sets_the_grad_mode(compose_cfg):
    apgd = compose_cfg("attack=apgd_eot")
    validate_config(apgd)
    assert (apgd.attack.n_iter, apgd.attack.n_eot, apgd.purifier.grad_mode) == (30, 8, "full")
    assert isinstance(build(apgd.attack, key="attack", eps=0.1), APGDEOT)
    bpda = compose_cfg("attack=bpda_eot")
    validate_config(bpda)
    assert bpda.purifier.grad_mode == "bpda"
    assert bpda.attack.step_size is None and bpda.attack.n_iter is None  # published steps
    attack = build(bpda.attack, key="attack", eps=0.1)
    assert attack.settings()["reduced_budget"] is True  # the cpu_quick budget
    published = compose_cfg("attack=bpda_eot", "budget=published").attack
    assert (published.n_eot, published.n_defense_reps) == (None, None)
    assert compose_cfg("attack=bpda_eot", "purifier.grad_mode=full").purifier.grad_mode == "full"
    with pytest.raises(ConfigError) as error:
        validate_config(compose_cfg("attack=bpda_eot", "attack.norm=L2"))
    assert error.value.key == "attack.norm"
    with pytest.raises(ConfigError) as error:
        validate_config(compose_cfg("attack=apgd_eot", "attack.loss=margin"))
    assert error.value.key == "attack.loss"
