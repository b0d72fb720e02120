"""Batched EOT for pyautoattack's APGD: the same estimator as APGD's loop, in fewer model calls."""

from __future__ import annotations

import pytest
import torch
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
from torch import nn
from torch.nn import functional as F

from advpure.attacks.apgd_eot import APGDEOT
from advpure.attacks.autoattack import AutoAttackRunner
from advpure.attacks.batched_eot import BatchedEOTAdapter, batch_eot


class NoisyLinear(nn.Module):
    """logits = W (x + s * noise) with fresh Gaussian noise per row; keeps every noise it drew."""

    def __init__(self, scale: float = 0.3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(64, 10)
        self.scale = scale
        self.noises: list[torch.Tensor] = []
        self.rows: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn_like(x)
        self.noises.append(noise)
        self.rows.append(x.shape[0])
        return self.linear((x + self.scale * noise).flatten(1))

    def with_noise(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.linear((x + self.scale * noise).flatten(1))


def _apgd(model: nn.Module, loss: str = "ce", n_eot: int = 6) -> APGDAttack:
    return APGDAttack(model, n_iter=5, eps=0.1, loss=loss, eot_iter=n_eot, seed=0, device="cpu")


@pytest.mark.parametrize("loss", ["xent", "dlr"])
@pytest.mark.parametrize("chunk", [None, 4])
def test_adapter_gradient_is_the_mean_of_per_draw_gradients(loss, chunk):
    model = NoisyLinear()
    apgd = _apgd(model, "ce" if loss == "xent" else "dlr")
    adapter = BatchedEOTAdapter(apgd, model, n_eot=6, chunk=chunk)
    x, y = torch.rand(5, 1, 8, 8), torch.randint(0, 10, (5,))
    logits, loss_values, grad = getattr(adapter, f"get_logits_loss_grad_{loss}")(x, y)
    # Independent computation: replay each copy's recorded noise one image batch at a time.
    draws = torch.cat(model.noises).view(6, *x.shape)
    loss_fn = (lambda z, t: F.cross_entropy(z, t, reduction="none")) if loss == "xent" else apgd.dlr_loss
    expected = torch.zeros_like(x)
    for k in range(6):
        xk = x.clone().requires_grad_(True)
        expected += torch.autograd.grad(loss_fn(model.with_noise(xk, draws[k]), y).sum(), xk)[0]
    torch.testing.assert_close(grad, expected / 6, rtol=1e-5, atol=1e-7)
    last = model.with_noise(x, draws[-1])
    torch.testing.assert_close(logits, last.detach())
    torch.testing.assert_close(loss_values, loss_fn(last, y).detach())
    assert model.rows == ([30] if chunk is None else [20, 10])  # 6 copies of 5 images, in chunks


def test_targeted_loss_uses_the_attacks_own_target():
    model = NoisyLinear(scale=0.0)
    apgd = APGDAttack_targeted(model, n_iter=5, eps=0.1, eot_iter=3, seed=0, device="cpu")
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    apgd.y_target = torch.tensor([5, 6, 7, 8])
    adapter = BatchedEOTAdapter(apgd, model, n_eot=3)
    _, loss_values, _ = adapter.get_logits_loss_grad_target(x, y, apgd.y_target)
    z = model.with_noise(x, torch.zeros_like(x))
    top = z.sort(1)[0]
    rows = torch.arange(4)
    expected = -(z[rows, y] - z[rows, apgd.y_target]) / (top[:, -1] - 0.5 * (top[:, -3] + top[:, -4]) + 1e-12)
    torch.testing.assert_close(loss_values, expected.detach())
    with pytest.raises(ValueError, match="y_target"):
        adapter.get_logits_loss_grad_target(x, y, torch.tensor([1, 1, 1, 1]))


def test_batched_and_looped_apgd_agree_exactly_on_a_deterministic_model():
    """Two EOT samples of a deterministic model: g + g and 2 g are the same float, so APGD's
    iterates, and the adversarial examples, are bit-identical between the loop and the batch."""
    model = NoisyLinear(scale=0.0).eval()
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    results, traces = [], []
    for chunk in (1, None):
        attack = APGDEOT(eps=0.1, n_iter=10, n_eot=2, eot_chunk=chunk)
        results.append(attack(model, x, y))
        traces.append(attack.last_trace)
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0], x)
    # one trace entry per APGD iteration (and its start) either way, from the same logits
    assert traces[0] == traces[1] and len(traces[0]["margin"]) == 10 + 1


def test_autoattack_batches_eot_copies_into_one_call_per_gradient():
    model = NoisyLinear(scale=0.05).eval()
    x = torch.rand(8, 1, 8, 8)
    y = model.with_noise(x, torch.zeros_like(x)).argmax(1)
    runner = AutoAttackRunner(eps=0.1, version="rand", n_iter=4, n_eot=5)
    x_adv = runner(model, x, y)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    # Gradient calls carry 5 copies of the images still attacked; no call is a loop's single copy
    # except the prediction calls (checks, initial accuracy), which carry at most 8 rows.
    gradient_calls = [rows for rows in model.rows if rows > 8]
    assert gradient_calls and all(rows % 5 == 0 for rows in gradient_calls)
    settings = runner.settings()
    assert settings["n_eot"] == 5 and settings["eot"].startswith("batched (5 copies")
    looped = AutoAttackRunner(eps=0.1, version="rand", n_iter=4, n_eot=5, eot_chunk=1)
    looped_adversary = looped.build(model, torch.device("cpu"))
    assert looped_adversary.apgd.eot_iter == 5 and looped_adversary.apgd.model is model
    assert looped.settings()["eot"].startswith("sequential")


def test_batch_eot_keeps_the_loop_for_a_single_sample():
    model = NoisyLinear()
    apgd = _apgd(model, n_eot=1)
    batch_eot(apgd, model, 1, None)
    assert apgd.model is model and apgd.eot_iter == 1 and not apgd.is_tf_model
