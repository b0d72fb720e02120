"""Per-image traces of any attack: a model wrapper that records every evaluation of every iterate.

An attack's own trace (``Attack.last_trace``) holds means over the batch; the audit needs, per
image, the margin at each evaluation and the most adversarial iterate the attack saw. The
:class:`ProbeModel` sits between the attack and the model it attacks and matches every row of
every call to the image whose eps-ball holds it (the same row of a call of B or k * B rows when
that fits, else the nearest image), so it works for every attack without touching it.

Attacks that split a defended model into its purifier and classifier (DiffHammer evaluates draws
in the classifier's input space and grafts gradients through one stored trajectory; DiffAttack
reads the backbone's states) see the probe as such a model too: its ``purifier`` and
``classifier`` are thin wrappers of the real ones, and a classifier call is paired with the
purifier call that produced its rows (same row count), whose inputs are the iterates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advpure.attacks.base import Attack, Candidates, PurifiedModel
from advpure.attacks.geometry import match_to_balls
from advpure.attacks.losses import margin
from advpure.config.enums import Norm

# Distance slack when matching a row to the ball of an image (float rounding of projections).


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of one image's iterate in one model call: the mean CW margin over the call's
    draws of it (> 0: misclassified), its standard error (0 for one draw), the fraction of those
    draws that misclassify, and whether the call recorded a graph (a gradient evaluation)."""

    margin: float
    standard_error: float
    fooled: float
    gradient: bool


@dataclass
class ProbedRun:
    """The evaluated attack re-run under a :class:`ProbeModel`: ``x_adv`` (B, C, H, W) what it
    returned; ``best`` (B, C, H, W) per image the iterate it saw fooling the most draws (ties: the
    largest mean margin), ``best_key`` (B, 2) those two numbers; ``history[i]`` every evaluation of
    image i's iterates, in call order."""

    x_adv: torch.Tensor
    best: torch.Tensor
    best_key: torch.Tensor
    history: list[list[Evaluation]] = field(default_factory=list)


class ProbeModel(nn.Module):
    """``model`` as an attack sees it, recording per image every evaluation of its iterates.

    Args:
        model: x (N, C, H, W) in [0, 1] -> logits (N, K), one random draw per row.
        x: the clean images (B, C, H, W) in [0, 1]; y: their labels (B,).
        norm, eps: the attack's ball; rows outside every image's ball are not recorded.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: Norm, eps: float) -> None:
        super().__init__()
        self.clean, self.y = x.detach(), y
        self.norm = Norm(norm)
        self.eps = float(eps)
        self.best = Candidates(self.clean)
        self.history: list[list[Evaluation]] = [[] for _ in range(x.shape[0])]
        self._staged: tuple[torch.Tensor, bool] | None = None
        self.split = isinstance(model, PurifiedModel)
        if isinstance(model, PurifiedModel):  # a classifier after a purifier: probe the pair of them
            self.purifier = ProbedPurifier(model.purifier, self.stage)
            self.classifier = ProbedClassifier(model.classifier, self.pair)
        else:
            self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.split:
            return self.classifier(self.purifier(inputs))
        logits = self.model(inputs)
        gradient = torch.is_grad_enabled() and inputs.requires_grad
        self.observe(inputs.detach(), logits.detach(), gradient)
        return logits

    def stage(self, rows: torch.Tensor) -> None:
        """The purifier was called on ``rows`` (N, C, H, W): the iterates of the next classifier call."""
        self._staged = (rows.detach(), torch.is_grad_enabled() and rows.requires_grad)

    def pair(self, purified: torch.Tensor, logits: torch.Tensor) -> None:
        """The classifier gave ``logits`` (N, K) on ``purified`` (N, C, H, W): record them against
        the staged iterates when the row counts match."""
        if self._staged is None or self._staged[0].shape[0] != purified.shape[0]:
            return
        rows, gradient = self._staged
        self._staged = None
        self.observe(rows, logits.detach(), gradient or (torch.is_grad_enabled() and purified.requires_grad))

    @torch.no_grad()
    def observe(self, rows: torch.Tensor, logits: torch.Tensor, gradient: bool) -> None:
        """Record a call's rows (N, C, H, W) and logits (N, K)."""
        if rows.ndim != self.clean.ndim or rows.shape[1:] != self.clean.shape[1:]:
            return
        point, inside = self.match(rows)
        logits = logits.float()
        for image in point[inside].unique().tolist():
            own = (inside & (point == image)).nonzero().squeeze(1)
            labels = self.y[image].expand(own.shape[0])
            margins = margin(logits[own], labels)
            wrong = (logits[own].argmax(1) != labels).float()
            error = float(margins.std() / own.shape[0] ** 0.5) if own.shape[0] > 1 else 0.0
            self.history[image].append(Evaluation(float(margins.mean()), error, float(wrong.mean()), gradient))
            same = bool((rows[own] == rows[own[:1]]).all())
            index = torch.full((1 if same else own.shape[0],), image, device=rows.device)
            if same:  # copies of one iterate (EOT): one candidate keyed by its draws' mean
                key = torch.stack([wrong.mean(), margins.mean()]).view(1, 2)
                self.best.offer(index, rows[own[:1]], key, wrong.amax().view(1).bool())
            else:  # distinct iterates (a query-based attack): each keyed by its own draw
                self.best.offer(index, rows[own], torch.stack([wrong, margins], dim=1), wrong.bool())

    def match(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row (N,): the index of the image whose ball holds it, and whether one does."""
        return match_to_balls(rows, self.clean, self.eps, self.norm)


class ProbedPurifier(nn.Module):
    """``purifier``, telling ``stage`` the rows it purifies: x (N, C, H, W) in [0, 1] for a call,
    x repeated ``n_copies`` times (copy k of image b at row k * B + b) for ``purify_copies``."""

    def __init__(self, purifier: nn.Module, stage: Callable[[torch.Tensor], None]) -> None:
        super().__init__()
        self.inner = purifier
        self.stage = stage

    @property
    def grad_mode(self) -> Any:
        return self.inner.grad_mode

    def forward(self, x: torch.Tensor, noise: Any = None) -> torch.Tensor:
        self.stage(x)
        return self.inner(x) if noise is None else self.inner(x, noise)

    def purify_copies(self, x: torch.Tensor, n_copies: int, noise: Any = None) -> torch.Tensor:
        self.stage(x.repeat(n_copies, *[1] * (x.ndim - 1)))
        return self.inner.purify_copies(x, n_copies) if noise is None else self.inner.purify_copies(x, n_copies, noise)


class ProbedClassifier(nn.Module):
    """``classifier``, handing ``pair`` its inputs and logits."""

    def __init__(self, classifier: nn.Module, pair: Callable[[torch.Tensor, torch.Tensor], None]) -> None:
        super().__init__()
        self.inner = classifier
        self.pair = pair

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        self.pair(x, logits)
        return logits


def run_probed(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> ProbedRun:
    """Run ``attack`` on ``model`` (x (B, C, H, W) in [0, 1], y (B,)) through a :class:`ProbeModel`."""
    probe = ProbeModel(model, x, y, attack.norm, attack.eps)
    with torch.enable_grad():
        x_adv = attack(probe, x, y).detach()
    return ProbedRun(x_adv, probe.best.x_adv.clone(), probe.best.key.clone(), probe.history)
