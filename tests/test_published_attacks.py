"""DiffHammer's pieces and DiffAttack's deviation term, each against an independent computation.

- Gradient grafting with one draw and no EM is the exact gradient through that draw's trajectory
  (the recorded noise of copy k of image b is replayed for image b).
- EM aggregation picks the draws that agree: two aligned draws out-vote one opposed draw.
- DiffAttack observes one state per backbone call, its deviation is zero at the clean input (the
  noise is replayed exactly), and with weight 0 it is PGD-EOT, iterate for iterate.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advpure.attacks.diffattack import DiffAttack, observed_states
from advpure.attacks.diffhammer import DiffHammer, DrawEvaluation
from advpure.attacks.losses import LOSSES
from advpure.attacks.pgd_eot import PGDEOT
from advpure.config.enums import AttackLoss
from advpure.evaluation.defended import DefendedClassifier
from advpure.purifiers.diffpure import DiffPure
from advpure.purifiers.noise import NoiseTape, RecordedNoise

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def defended(digits_backbone) -> DefendedClassifier:
    torch.manual_seed(0)
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval().requires_grad_(False)
    purifier = DiffPure(digits_backbone, t_star=0.1, dt=0.02).eval().requires_grad_(False)
    return DefendedClassifier(purifier, classifier)


def test_grafting_one_draw_is_the_exact_gradient_through_its_trajectory(defended):
    torch.manual_seed(1)
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    attack = DiffHammer(eps=0.1, n_eot=4, em_steps=0)
    evaluation = attack.evaluate_draws(defended.purifier, defended.classifier, x, y, AttackLoss.ce)
    selected = torch.tensor([2, 0, 3])  # a different stored trajectory per image
    rows = selected * 3 + torch.arange(3)
    r = evaluation.grads[selected, torch.arange(3)]
    grafted = attack.graft(defended.purifier, x, r, evaluation, selected)
    # Independently: purify each image alone with its selected copy's recorded noise, full autograd.
    for b in range(3):
        noise = RecordedNoise({k: d[rows[b] : rows[b] + 1] for k, d in evaluation.tape.draws.items()})
        point = x[b : b + 1].clone().requires_grad_(True)
        loss = LOSSES[AttackLoss.ce](defended.classifier(defended.purifier(point, noise)), y[b : b + 1]).sum()
        (exact,) = torch.autograd.grad(loss, point)
        torch.testing.assert_close(grafted[b : b + 1], exact, rtol=1e-4, atol=1e-6)
    assert grafted.abs().sum() > 0


def test_grafting_replays_a_brownian_path_whole_and_is_exact_through_the_selected_trajectory(defended, digits_backbone):
    """Under ``solver=torchsde`` the reverse noise is one Brownian path over the batch of copies, not
    keyed draws: the tape records its seed, the replay reproduces the N-evaluation's purifications
    (a fresh path would not), and the grafted gradient is the exact gradient of each image's loss
    through its selected copy."""
    torch.manual_seed(2)
    purifier = DiffPure(digits_backbone, t_star=0.1, dt=0.02, solver="torchsde").eval().requires_grad_(False)
    classifier = defended.classifier
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    attack = DiffHammer(eps=0.1, n_eot=4, em_steps=0)
    evaluation = attack.evaluate_draws(purifier, classifier, x, y, AttackLoss.ce)
    assert not evaluation.tape.by_row and evaluation.tape.entropies

    def losses(noise) -> torch.Tensor:
        with torch.no_grad():
            purified = purifier.purify_copies(x, 4, noise)
        return LOSSES[AttackLoss.ce](classifier(purified.flatten(0, 1)), y.repeat(4)).view(4, 3)

    torch.testing.assert_close(losses(evaluation.tape.replay()), evaluation.loss, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(losses(NoiseTape()), evaluation.loss)  # another path: other purifications
    selected = torch.tensor([1, 3, 0])
    r = evaluation.grads[selected, torch.arange(3)]
    grafted = attack.graft(purifier, x, r, evaluation, selected)
    for b in range(3):
        point = x.clone().requires_grad_(True)
        purified = purifier.purify_copies(point, 4, evaluation.tape.replay())
        loss = LOSSES[AttackLoss.ce](classifier(purified[selected[b], b : b + 1]), y[b : b + 1]).sum()
        (exact,) = torch.autograd.grad(loss, point)
        torch.testing.assert_close(grafted[b : b + 1], exact[b : b + 1], rtol=1e-4, atol=1e-6)
        assert exact[torch.arange(3) != b].abs().max() == 0  # copies of other images do not mix
    assert grafted.abs().sum() > 0


def test_em_aggregation_follows_the_draws_that_agree():
    attack = DiffHammer(eps=0.1, n_eot=3, em_steps=5, em_lam=1.0)
    grads = torch.tensor([[[1.0, 0.0]], [[1.0, 0.1]], [[-1.0, 0.0]]])  # (N=3, B=1, D=2)
    evaluation = DrawEvaluation(
        loss=torch.zeros(3, 1),
        fooled=torch.zeros(3, 1, dtype=torch.bool),
        margin=torch.zeros(3, 1),
        grads=grads,
        tape=NoiseTape(),
    )
    r, selected = attack.aggregate(evaluation)
    assert int(selected) in (0, 1)  # a draw of the agreeing pair, not the opposed one
    assert r[0, 0] > 0.2  # the plain mean would be 0.33; EM leans to the pair
    assert r[0, 0] > grads[:, 0, 0].mean()


def test_diffattack_observes_every_step_and_deviation_vanishes_at_the_clean_input(defended):
    torch.manual_seed(2)
    x = torch.rand(2, 1, 8, 8)
    tape = NoiseTape()
    with torch.no_grad(), observed_states(defended.purifier) as reference:
        defended.purifier(x, tape)
    with torch.no_grad(), observed_states(defended.purifier) as replayed:
        defended.purifier(x, tape.replay())
    assert len(reference) == defended.purifier.n_steps == 5
    for a, b in zip(reference, replayed, strict=True):
        torch.testing.assert_close(a, b)
    attack = DiffAttack(eps=0.1, n_iter=1, n_eot=2, deviation_weight=1000.0)
    attack._clean = x
    torch.manual_seed(7)
    _, objective_clean, _ = attack.eot_step(defended, x, torch.tensor([0, 1]))
    torch.manual_seed(7)
    _, ce_clean, _ = PGDEOT(eps=0.1, n_eot=2).eot_step(defended, x, torch.tensor([0, 1]), False)
    assert attack._observed_steps == 5
    # At the clean input the deviation is 0 even at weight 1000: the objective is the plain CE.
    torch.testing.assert_close(objective_clean, ce_clean)


def test_diffattack_with_zero_weight_is_pgd_eot(defended):
    """Weight 0: the same objective and gradient as PGD-EOT on the same purification noise (the
    clean reference draws the noise PGD-EOT would draw; the adversarial copies replay it)."""
    torch.manual_seed(3)
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([3, 4])
    x_adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    attack = DiffAttack(eps=0.1, n_iter=1, n_eot=3, deviation_weight=0.0)
    attack._clean = x
    torch.manual_seed(9)
    _, objective, grad = attack.eot_step(defended, x_adv, y)
    torch.manual_seed(9)
    _, losses, pgd_grad = PGDEOT(eps=0.1, n_iter=1, n_eot=3).eot_step(defended, x_adv, y)
    torch.testing.assert_close(objective, losses)
    torch.testing.assert_close(grad, pgd_grad, rtol=1e-4, atol=1e-6)


def test_diffattack_deviation_changes_the_gradient(defended):
    torch.manual_seed(4)
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([5, 6])
    x_adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    grads = {}
    for weight in (0.0, 100.0):
        attack = DiffAttack(eps=0.1, n_iter=1, n_eot=2, deviation_weight=weight)
        attack._clean = x
        torch.manual_seed(11)
        grads[weight] = attack.eot_step(defended, x_adv, y)[2]
    assert not torch.allclose(grads[0.0], grads[100.0])


def test_eot_in_chunks_sums_to_the_one_batch_gradient():
    """128 copies (DiffBreak's EOT) in chunks of 16 or 48 (uneven): the same losses, logits order and
    gradient sum as one batch of 128. The model's randomness is keyed by row, so every chunking
    draws the same noise for copy k (a global-generator purifier draws differently per call size)."""
    torch.manual_seed(12)
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([7, 8])
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    offsets = torch.randn(128, 10)

    class RowNoise(nn.Module):
        def forward(self, batch: torch.Tensor) -> torch.Tensor:  # copy k = rows k*b .. k*b+b-1
            self.calls = getattr(self, "calls", 0) + 1
            copies = batch.shape[0] // 2
            start = self.seen % 128
            self.seen = self.seen + copies
            noise = offsets[start : start + copies].repeat_interleave(2, 0)
            return net(batch) + noise

    results = {}
    for chunk in (None, 16, 48):
        model = RowNoise()
        model.seen = 0
        results[chunk] = PGDEOT(eps=0.1, n_iter=1, n_eot=128, eot_chunk=chunk).eot_step(model, x, y)
        assert model.seen == 128 and model.calls == (1 if chunk is None else -(-128 // chunk))
    for chunk in (16, 48):
        torch.testing.assert_close(results[None][0], results[chunk][0])
        torch.testing.assert_close(results[None][1], results[chunk][1])
        torch.testing.assert_close(results[None][2], results[chunk][2], rtol=1e-5, atol=1e-6)
