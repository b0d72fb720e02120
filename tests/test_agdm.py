"""AGDM: the unguided limit, what each guidance term does, batch independence, exact gradients
against finite differences, the auxiliary network's training (TRADES on diffused inputs) and the
shipped digits auxiliary network's robustness."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advpure.checkpoints import load_weights
from advpure.cli import run_task
from advpure.config.enums import Norm
from advpure.errors import AdvpureError, ConfigError
from advpure.models.digits_cnn import DigitsCNN
from advpure.purifiers.agdm import AGDM
from advpure.purifiers.diffpure_ddpm import DiffPureDDPM
from advpure.purifiers.noise import NoiseTape, RecordedNoise, SeededNoise
from advpure.tasks.components import purifier_on, warn_if_beyond_training_levels
from advpure.tasks.context import RunContext
from advpure.tasks.train_agdm_aux import measure_robustness
from advpure.training.auxiliary import AuxiliaryModule, DiffusionLevels, trades_adversary
from tests.conftest import ROOT
from tests.test_diffpure import smooth_backbone


class SmoothAuxiliary(nn.Module):
    """A tiny classifier with smooth second derivatives (softplus), 8x8 -> 10 logits, float64."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16, 10)
        self.double()

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.softplus(self.conv(x)), 2).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 3.0 * self.fc(self.penultimate(x))


def _agdm(**kwargs):
    options = {"auxiliary": SmoothAuxiliary(), "t_star": 0.07, "stride": 10, "checkpoint_steps": False} | kwargs
    return AGDM(smooth_backbone(), **options)


def _images(batch=3, seed=0):
    return torch.rand(batch, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.1


def test_agdm_with_both_scales_zero_is_its_ddpm_chain_exactly():
    x = 2 * _images() - 1
    agdm = _agdm(distance_scale=0.0, class_scale=0.0)
    ddpm = DiffPureDDPM(agdm.backbone, t_star=0.07, stride=10, variance="beta")
    assert agdm.n_steps == ddpm.n_steps == 7
    assert torch.equal(agdm.purify_signed(x, SeededNoise(4)), ddpm.purify_signed(x, SeededNoise(4)))


def _mean_over_draws(purifier, x, measure, draws=6):
    return sum(measure(purifier.purify(x, SeededNoise(d))) for d in range(draws)) / draws


def test_each_guidance_term_pulls_toward_its_own_target():
    """The class term raises c_phi's log-probability of its prediction on the input; the distance
    term brings c_phi's logits of the output closer to those of the input (same noise draws)."""
    x = _images(batch=6)
    aux = SmoothAuxiliary()
    with torch.no_grad():
        y_hat, reference = aux(x).argmax(1), aux(x)

    def log_prob(out):
        return F.log_softmax(aux(out), 1).gather(1, y_hat.view(-1, 1)).mean().item()

    def distance(out):
        return (aux(out) - reference).pow(2).mean().item()

    plain = _agdm(auxiliary=aux, distance_scale=0.0, class_scale=0.0)
    by_class = _agdm(auxiliary=aux, distance_scale=0.0, class_scale=2000.0)
    by_distance = _agdm(auxiliary=aux, distance_scale=2000.0, class_scale=0.0)
    assert _mean_over_draws(by_class, x, log_prob) > _mean_over_draws(plain, x, log_prob) + 0.05
    assert _mean_over_draws(by_distance, x, distance) < 0.8 * _mean_over_draws(plain, x, distance)


def test_an_images_guidance_does_not_depend_on_its_batch():
    purifier = _agdm(distance_scale=500.0, class_scale=500.0)
    batch = 2 * _images(batch=4) - 1
    tape = NoiseTape(SeededNoise(9))
    together = purifier.purify_signed(batch, tape)
    alone = purifier.purify_signed(batch[1:2], RecordedNoise({k: d[1:2] for k, d in tape.draws.items()}))
    assert torch.allclose(alone, together[1:2], atol=1e-12)


def _directional_check(purifier, x, direction, weights):
    def objective(inputs):
        return (purifier.purify_signed(inputs, SeededNoise(3)) * weights).sum()

    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(x), x)
    h = 1e-6
    with torch.no_grad():
        numeric = (objective(x + h * direction) - objective(x - h * direction)) / (2 * h)
    return (grad * direction).sum(), numeric


@pytest.mark.parametrize(("embedding", "scale"), [("logits", 3000.0), ("penultimate", 100000.0)])
@pytest.mark.parametrize("checkpoint_steps", [False, True])
def test_full_gradient_matches_finite_differences_and_guidance_blind_does_not(embedding, scale, checkpoint_steps):
    x = 2 * _images(batch=2) - 1
    gen = torch.Generator().manual_seed(1)
    direction = torch.randn(x.shape, dtype=x.dtype, generator=gen)
    weights = torch.randn(x.shape, dtype=x.dtype, generator=gen)
    options = {"distance_scale": scale, "class_scale": 1000.0, "embedding": embedding}
    full = _agdm(checkpoint_steps=checkpoint_steps, **options)
    analytic, numeric = _directional_check(full, x, direction, weights)
    assert torch.isclose(analytic, numeric, rtol=1e-5, atol=1e-8), (analytic, numeric)
    blind = _agdm(checkpoint_steps=checkpoint_steps, grad_mode="guidance_blind", **options)
    blind_analytic, blind_numeric = _directional_check(blind, x, direction, weights)
    assert torch.isclose(blind_numeric, numeric)  # same function
    assert (blind_analytic - numeric).abs() > 1e-3 * numeric.abs()  # a different gradient


def test_refusals_name_the_key():
    with pytest.raises(ConfigError, match=r"purifier\.class_scale"):
        _agdm(class_scale=-1.0)
    with pytest.raises(ConfigError, match=r"purifier\.embedding"):
        _agdm(auxiliary=nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double(), embedding="penultimate")


def test_a_missing_auxiliary_checkpoint_fails_at_build_naming_the_path(compose_cfg, tmp_path):
    cfg = compose_cfg("purifier=agdm", f"purifier.auxiliary.checkpoint={tmp_path}/nowhere")
    with pytest.raises(AdvpureError, match="nowhere"):
        purifier_on(cfg.purifier, smooth_backbone())
    cfg = compose_cfg("purifier=agdm", "purifier.auxiliary.checkpoint=null")
    with pytest.raises(ConfigError, match=r"purifier\.auxiliary\.checkpoint.*task=train_agdm_aux"):
        purifier_on(cfg.purifier, smooth_backbone())


# ----------------------------------------------------------------------------- training


def test_diffusion_levels_follow_the_ddpm_forward_process():
    levels = DiffusionLevels(0.07, 1e-4, 0.02, 1000)
    assert levels.max_level == 70 and levels.alpha_bars[0] == 1.0
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    assert torch.isclose(levels.alpha_bars[70], torch.prod(1 - betas[:70]))
    x = _images(batch=4)
    clean = torch.ones(4, 1, 1, 1, dtype=x.dtype)
    assert torch.allclose(DiffusionLevels.apply(x, clean, torch.randn_like(x)), x)
    # many draws at the top level: mean sqrt(ab) (2x - 1) mapped to pixels, std sqrt(1 - ab) / 2
    ab = levels.alpha_bars[70].item()
    top = torch.full((20000, 1, 1, 1), ab, dtype=x.dtype)
    draws = DiffusionLevels.apply(x[:1].expand(20000, -1, -1, -1), top, torch.randn(20000, 1, 8, 8, dtype=x.dtype))
    assert torch.allclose(draws.mean(0), (ab**0.5 * (2 * x[0] - 1) + 1) / 2, atol=0.01)
    assert torch.allclose(draws.std(0), torch.full_like(x[0], (1 - ab) ** 0.5 / 2), rtol=0.03)


def test_trades_adversary_stays_in_the_ball_and_beats_random_points_of_it():
    net = SmoothAuxiliary()
    x = _images(batch=16)
    levels = DiffusionLevels(0.05, 1e-4, 0.02, 1000)
    alpha_bar, z = levels.draw(x, torch.Generator().manual_seed(0))

    def diffuse(images):
        return DiffusionLevels.apply(images, alpha_bar, z)

    def divergence(points):
        with torch.no_grad():
            target = F.softmax(net(diffuse(x)), 1)
            return F.kl_div(F.log_softmax(net(diffuse(points)), 1), target, reduction="none").sum(1)

    adversarial = trades_adversary(net, x, diffuse, norm=Norm.Linf, eps=0.1, step_size=0.025, steps=10)
    assert (adversarial - x).abs().max() <= 0.1 + 1e-12 and adversarial.min() >= 0 and adversarial.max() <= 1
    random = (x + 0.1 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    assert (divergence(adversarial) > divergence(random)).float().mean() > 0.9


def _loader(n=64):
    from advpure.data.digits import load_digits_tensors

    images, labels = load_digits_tensors()
    return DataLoader(TensorDataset(images[:n], labels[:n]), batch_size=32)


def test_trades_loss_is_cross_entropy_at_lambda_zero_and_a_fast_dev_run_trains(tmp_path):
    torch.manual_seed(0)
    net = DigitsCNN()
    levels = DiffusionLevels(0.1, 1e-4, 0.02, 1000)
    adversary = {"norm": "Linf", "eps": 0.15, "step_size": 0.05, "steps": 3}
    x, y = next(iter(_loader()))
    torch.manual_seed(1)
    plain = AuxiliaryModule(net, levels, 0.0, adversary, eval_steps=2).trades_loss(x, y)
    assert plain["kl"] == 0 and torch.equal(plain["loss"], plain["ce"])
    torch.manual_seed(1)
    trades = AuxiliaryModule(net, levels, 6.0, adversary, eval_steps=2).trades_loss(x, y)
    assert torch.equal(trades["ce"], plain["ce"])  # same levels and noise: the same clean term
    assert trades["kl"] > 0 and torch.isclose(trades["loss"], trades["ce"] + 6.0 * trades["kl"])

    before = {k: v.clone() for k, v in net.state_dict().items()}
    module = AuxiliaryModule(net, levels, 6.0, adversary, eval_steps=2)
    trainer = pl.Trainer(
        fast_dev_run=True, inference_mode=False, logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.fit(module, train_dataloaders=_loader(), val_dataloaders=_loader())
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert {"train/kl", "val/clean_acc", "val/robust_acc", "val/diffused_acc"} <= set(trainer.logged_metrics)


def test_train_agdm_aux_task_writes_checkpoint_and_report(compose_cfg, tmp_path):
    overrides = ("task=train_agdm_aux", "task.max_epochs=1", "task.trades.steps=2", "task.eval_steps=2", "logger=none")
    summary = run_task(compose_cfg(*overrides), RunContext(tmp_path))
    report = json.loads((tmp_path / "auxiliary_report.json").read_text())
    assert len(report["networks"]) == 2 and report["attack"]["eps"] == 0.15 and report["top_level"] == 100
    assert "| auxiliary (TRADES on diffused inputs) |" in (tmp_path / "auxiliary_report.md").read_text()
    stored = json.loads((tmp_path / "agdm_aux.json").read_text())
    assert stored["metadata"]["trades"]["lambda"] == 6.0 and summary["noise_levels"]["max_level"] == 100
    load_weights(DigitsCNN(), tmp_path / "agdm_aux", net=stored["net"])


# ----------------------------------------------------------------------------- shipped weights


def test_shipped_auxiliary_network_is_more_robust_than_the_standard_one():
    """The shipped c_phi and the shipped standard classifier (same DigitsCNN architecture) under
    the same 20-step PGD at eps 0.15 on the 360 test digits."""
    from advpure.data.digits import DigitsDataModule

    data = DigitsDataModule(batch_size=120)
    data.setup()
    levels = DiffusionLevels(0.1, 1e-4, 0.02, 1000)
    adversary = {"norm": Norm.Linf, "eps": 0.15, "step_size": 0.0375}
    rows = {}
    for name in ("agdm_aux", "classifier"):
        net = DigitsCNN()
        load_weights(
            net,
            ROOT / "checkpoints" / "digits" / name,
            net=json.loads((ROOT / "checkpoints" / "digits" / f"{name}.json").read_text())["net"],
        )
        rows[name] = measure_robustness(net, data.test_dataloader(), levels, adversary, steps=20, seed=0)
    assert rows["agdm_aux"]["pgd_robust_accuracy"] > rows["classifier"]["pgd_robust_accuracy"] + 0.3, rows
    assert rows["agdm_aux"]["clean_accuracy"] > 0.85, rows
    assert rows["agdm_aux"]["diffused_accuracy"] > rows["classifier"]["diffused_accuracy"], rows


def test_evaluate_task_runs_agdm_with_the_shipped_auxiliary_network(compose_cfg, tmp_path):
    overrides = ("purifier=agdm", "attack=pgd_eot", "attack.n_iter=2", "attack.n_eot=1", "logger=none")
    scoring = ("task.n_images=4", "task.batch_size=4", "task.n_vote=2", "task.n_worst=2", "task.n_panel=0")
    run_task(compose_cfg(*overrides, *scoring), RunContext(tmp_path))
    stored = json.loads((tmp_path / "results.json").read_text())
    settings = stored["purifier"]
    assert settings["name"] == "agdm" and settings["n_steps"] == 7 and settings["start_step"] == 70
    assert settings["auxiliary"] == "DigitsCNN" and settings["class_scale"] == 1.0
    assert stored["metrics"]["defended_robust"]["n"] == 4


def test_a_t_star_above_the_auxiliary_training_levels_is_warned(compose_cfg):
    shipped = ROOT / "checkpoints" / "digits" / "agdm_aux"
    stored = json.loads(shipped.with_suffix(".json").read_text())
    assert stored["metadata"]["noise_levels"]["t_max"] == 0.1
    assert warn_if_beyond_training_levels(compose_cfg("purifier=agdm").purifier) is None
    message = warn_if_beyond_training_levels(compose_cfg("purifier=agdm", "purifier.t_star=0.2").purifier)
    assert "t_max=0.1" in message and "task.noise.t_max=0.2" in message
