"""The attack contract: what every attack option implements, and the bookkeeping they share.

Every attack is an :class:`Attack`: ``attack(model, x, y) -> x_adv`` (calling the object runs it
too), with ``model``: (N, C, H, W) in [0, 1] -> logits (N, K), each call one random draw of a
randomized defense; ``x``, ``x_adv``: (B, C, H, W) in [0, 1]; ``y``: (B,) int64. It declares
``name``, ``eps``, ``norm``, ``settings()`` and, after each call, its own verdict
(``last_verdict``: (B,) bool, True where it counts the point robust, by the rule
``settings()["verdict_rule"]``), its diagnostics (``last_checks``: a dict, or ``None``) and a
per-iteration trace (``last_trace``: a dict of equally long lists, see :class:`Trace`).

Every attack returns its most adversarial iterate for every point it moved, never the clean image:
the points are scored again afterwards on fresh draws of the defense, where a clean image wastes
the attack. Candidates are compared by a *key*, (B, 2) floats compared lexicographically (higher
is more adversarial): each attack documents its key in ``settings()["selection"]``.
:class:`Candidates` keeps the best candidate per point, :meth:`Attack.best_of_runs` is the restart
loop (later runs attack only points no earlier run fooled), and :func:`fresh_draw_key` is the
common criterion for candidates whose own losses differ (AutoAttack's sub-attacks).

The keywords attack families share are declared once, each with its one default, in the
constructor of the class that owns them: ``norm`` in :class:`Attack`, the budget (``n_iter``,
``n_eot``) in :class:`BudgetedAttack`, restarts, loss, seed and EOT chunking in
:class:`RestartedEOTAttack`. A subclass names only its own parameters and forwards the rest with
``**options: Unpack[...Options]`` (the ``TypedDict`` of its parent's keywords); the keywords stay
flat (``attack.n_iter``, ``attack.seed``, ...), as Hydra passes them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypedDict, runtime_checkable

import torch
from torch import nn
from typing_extensions import Unpack

from advpure.attacks.losses import margin
from advpure.config.enums import AttackLoss, Norm


def lexicographic_greater(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) bool: row i of ``a`` (B, K) is greater than row i of ``b`` in lexicographic order."""
    greater = torch.zeros(a.shape[0], dtype=torch.bool, device=a.device)
    equal = torch.ones_like(greater)
    for column in range(a.shape[1]):
        greater |= equal & (a[:, column] > b[:, column])
        equal &= a[:, column] == b[:, column]
    return greater


def best_per_point(index: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Positions (into ``index`` (N,) and ``key`` (N, K)) of the highest key of each distinct point
    in ``index`` (ties: the later position)."""
    order = torch.arange(index.shape[0], device=index.device)
    for column in reversed(range(key.shape[1])):
        order = order[torch.argsort(key[order, column], stable=True)]
    order = order[torch.argsort(index[order], stable=True)]
    ranked = index[order]
    last = torch.ones_like(ranked, dtype=torch.bool)
    last[:-1] = ranked[1:] != ranked[:-1]
    return order[last]


class Candidates:
    """Per point of a batch, the most adversarial example found so far.

    ``x_adv`` (B, C, H, W) starts as the clean images ``x`` and takes a candidate only when the
    candidate differs from the clean image and its key beats the kept one, so a point an attack
    moved never returns to the clean image. ``key`` (B, 2) is the kept candidate's key (-inf:
    none yet); ``fooled`` (B,) is True once any offer said the point was fooled (misclassified by
    a draw the attack saw), whichever candidate is kept.
    """

    def __init__(self, x: torch.Tensor) -> None:
        self.clean = x.detach()
        self.x_adv = self.clean.clone()
        self.key = torch.full((x.shape[0], 2), float("-inf"), device=x.device)
        self.fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def offer(self, index: torch.Tensor, x_candidate: torch.Tensor, key: torch.Tensor, fooled: torch.Tensor) -> None:
        """Offer candidates (N, C, H, W) for the points ``index`` (N,) (repeats allowed: the best
        of each point's rows competes), with their keys (N, 2) and fooled flags (N,)."""
        self.fooled[index[fooled.bool()]] = True
        rows = best_per_point(index, key)
        index, x_candidate, key = index[rows], x_candidate[rows].detach(), key[rows]
        moved = (x_candidate != self.clean[index]).flatten(1).any(1)
        take = moved & lexicographic_greater(key, self.key[index])
        self.x_adv[index[take]] = x_candidate[take]
        self.key[index[take]] = key[take]


@runtime_checkable
class PurifiedModel(Protocol):
    """A model that is a classifier after a purifier (``DefendedClassifier``): what attacks that
    work on the purification itself split (DiffHammer's output-space draws and grafting,
    DiffAttack's intermediate states) and what the audit probes as a pair."""

    purifier: nn.Module
    classifier: nn.Module


@dataclass
class Run:
    """One run of an attack on b points.

    ``x_adv`` (b, C, H, W): per point the run's chosen iterate; ``fooled`` (b,) bool: a draw the
    run saw misclassified the point; ``key`` (b, 2): the run's own key for ``x_adv`` (``None``:
    the caller scores it); ``index`` (b,): positions of these points in the batch the run was
    given (``None``: all of it, in order)."""

    x_adv: torch.Tensor
    fooled: torch.Tensor
    key: torch.Tensor | None = None
    index: torch.Tensor | None = None


class Trace:
    """A per-iteration record of an attack: one entry per gradient evaluation, with ``run`` (which
    run or sub-attack), ``margin`` (the mean CW margin max_{j != y} z_j - z_y over the evaluation's
    draws and points; > 0 is misclassified) and ``fooled_draws`` (the fraction of those draws that
    misclassify). :attr:`data` is the dict of lists an attack exposes as ``last_trace``."""

    def __init__(self) -> None:
        self.run = ""
        self.data: dict[str, list[Any]] = {"run": [], "margin": [], "fooled_draws": []}

    def start(self, run: str) -> None:
        """Label the following entries with ``run``."""
        self.run = run

    def record(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """One entry from logits (N, K) and their labels (N,) (each row one draw of one point)."""
        logits = logits.detach().float()
        self.data["run"].append(self.run)
        self.data["margin"].append(float(margin(logits, labels).mean()))
        self.data["fooled_draws"].append(float((logits.argmax(1) != labels).float().mean()))


class TracedModel(nn.Module):
    """``model``, recording its gradient evaluations into ``trace`` while labels are set.

    Inside ``with traced.labelled(y, n_draws):``, every call on an input that requires grad (a
    gradient evaluation: rows are copies of the b points of ``y``, copy k of point i at row
    k * b + i) is collected until ``n_draws`` copies of the b points arrived, which makes one
    trace entry (so a loop of single draws and one batched call give the same entries). Calls
    without gradients (predictions, checks) are not recorded. x (N, C, H, W) in [0, 1]."""

    def __init__(self, model: nn.Module, trace: Trace) -> None:
        super().__init__()
        self.model = model
        self.trace = trace
        self.labels: torch.Tensor | None = None
        self.n_draws = 1
        self._pending: list[torch.Tensor] = []

    @contextmanager
    def labelled(self, labels: torch.Tensor, n_draws: int) -> Iterator[None]:
        self.labels, self.n_draws, self._pending = labels, int(n_draws), []
        try:
            yield
        finally:
            self.labels, self._pending = None, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if self.labels is not None and x.requires_grad and x.shape[0] % self.labels.shape[0] == 0:
            self._pending.append(logits.detach())
            rows = sum(p.shape[0] for p in self._pending)
            if rows >= self.n_draws * self.labels.shape[0]:
                self.trace.record(torch.cat(self._pending), self.labels.repeat(rows // self.labels.shape[0]))
                self._pending = []
        return logits


@torch.no_grad()
def fresh_draw_key(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_draws: int, chunk: int | None = None
) -> torch.Tensor:
    """The common criterion: per point of x (b, C, H, W), over ``n_draws`` fresh draws of
    ``model`` (calls of at most ``chunk`` copies, ``None``: all), (fraction of draws that
    misclassify, mean CW margin): (b, 2), higher is more adversarial."""
    n_draws = max(int(n_draws), 1)
    chunk = n_draws if chunk is None else max(1, min(int(chunk), n_draws))
    fooled = torch.zeros(x.shape[0], device=x.device)
    margins = torch.zeros(x.shape[0], device=x.device)
    for start in range(0, n_draws, chunk):
        copies = min(chunk, n_draws - start)
        logits = model(x.repeat(copies, *[1] * (x.ndim - 1))).float()
        labels = y.repeat(copies)
        fooled += (logits.argmax(1) != labels).float().view(copies, -1).sum(0)
        margins += margin(logits, labels).view(copies, -1).sum(0)
    return torch.stack([fooled / n_draws, margins / n_draws], dim=1)


class AttackOptions(TypedDict, total=False):
    """The keywords :class:`Attack` takes besides ``eps``; a subclass forwards them with
    ``**options: Unpack[AttackOptions]`` (each default is :class:`Attack`'s)."""

    norm: Norm


class Attack(ABC):
    """Base of every attack option: ``attack(model, x, y) -> x_adv`` (see the module docstring).

    Class attributes a subclass sets: ``name`` (the option's name in results), ``verdict_rule``
    (when ``last_verdict`` counts a point robust), ``selection`` (which iterate is returned per
    point), ``uses_gradients`` (whether it differentiates the model). Instance attributes:
    ``eps`` (radius in [0, 1] pixel units), ``norm``; after each call ``last_verdict`` (B,) bool,
    ``last_checks`` (dict or ``None``), ``last_trace`` (dict of lists).
    """

    name: ClassVar[str]
    verdict_rule: ClassVar[str]
    selection: ClassVar[str]
    uses_gradients: ClassVar[bool] = True

    def __init__(self, eps: float, norm: Norm = Norm.Linf) -> None:
        self.eps = float(eps)
        self.norm = Norm(norm)
        self.last_verdict: torch.Tensor | None = None
        self.last_checks: dict[str, Any] | None = None
        self.last_trace: dict[str, list[Any]] | None = None

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """:meth:`attack`, then a check that it left its verdict for this batch."""
        x_adv = self.attack(model, x, y)
        verdict = self.last_verdict
        if verdict is None or verdict.shape != (x.shape[0],) or verdict.dtype != torch.bool:
            raise TypeError(f"{type(self).__name__}.attack left no (B,) bool last_verdict for its batch")
        return x_adv

    @abstractmethod
    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in [0, 1], y (B,) int64 -> x_adv (B, C, H, W) in [0, 1], within the
        ``norm`` ball of radius ``eps`` around x; sets ``last_verdict``, ``last_checks``,
        ``last_trace``."""

    @abstractmethod
    def options(self) -> dict[str, Any]:
        """The attack's own settings (budget, seeds, ``reduced_budget``), for result files."""

    def settings(self) -> dict[str, Any]:
        """``name``, ``norm``, ``eps``, the attack's :meth:`options`, ``verdict_rule``,
        ``selection`` and ``uses_gradients``."""
        return {
            "name": self.name,
            "norm": self.norm.value,
            "eps": self.eps,
            **self.options(),
            "verdict_rule": self.verdict_rule,
            "selection": self.selection,
            "uses_gradients": self.uses_gradients,
        }

    def best_of_runs(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        n_runs: int,
        run: Callable[[torch.Tensor, torch.Tensor], Run],
        trace: Trace | None = None,
    ) -> Candidates:
        """The restart loop: ``run(x[i], y[i]) -> Run`` (with its own keys) on the points ``i``
        no earlier run fooled, at most ``n_runs`` times; the best candidate per point by key."""
        best = Candidates(x)
        for number in range(n_runs):
            index = (~best.fooled).nonzero().squeeze(1)
            if index.numel() == 0:
                break
            if trace is not None:
                trace.start(f"run {number}")
            result = run(x[index], y[index])
            if result.key is None:
                raise TypeError("a restart's Run needs its own key")
            best.offer(index, result.x_adv, result.key, result.fooled)
        return best


class BudgetOptions(AttackOptions, total=False):
    """The keywords of :class:`BudgetedAttack` (and :class:`Attack`'s) besides ``eps``; a
    subclass forwards them with ``**options: Unpack[BudgetOptions]``."""

    n_iter: int | None
    n_eot: int | None


class BudgetedAttack(Attack):
    """An attack with a published budget: ``n_iter`` iterations per run, ``n_eot`` gradient samples
    (draws of the model) per iteration.

    A subclass sets the class attributes ``published_steps`` and ``published_eot``, the values
    ``None`` stands for; :meth:`reduced_budget` (the results' ``reduced_budget``) compares the
    budget with them, and a subclass with further budget knobs extends it. :meth:`options` records
    the budget around the subclass's :meth:`variant_options`.

    Keyword options (:class:`BudgetOptions`):
        n_iter: iterations per run, >= 1 (``None``: ``published_steps``).
        n_eot: draws of the model per gradient, >= 1 (``None``: ``published_eot``).
        norm: see :class:`Attack`.
    """

    published_steps: ClassVar[int]
    published_eot: ClassVar[int]

    def __init__(
        self, eps: float, *, n_iter: int | None = None, n_eot: int | None = None, **options: Unpack[AttackOptions]
    ) -> None:
        super().__init__(eps, **options)
        self.n_iter = self.published_steps if n_iter is None else int(n_iter)
        self.n_eot = self.published_eot if n_eot is None else int(n_eot)

    def reduced_budget(self) -> bool:
        """Whether the budget is below the published one (fewer iterations or draws)."""
        return self.n_iter < self.published_steps or self.n_eot < self.published_eot

    @abstractmethod
    def variant_options(self) -> dict[str, Any]:
        """The attack's settings besides its budget (its own knobs, seeds), for result files."""

    def options(self) -> dict[str, Any]:
        """``n_iter``, ``n_eot``, the attack's :meth:`variant_options`, ``reduced_budget``."""
        return {
            "n_iter": self.n_iter,
            "n_eot": self.n_eot,
            **self.variant_options(),
            "reduced_budget": self.reduced_budget(),
        }


class RestartedEOTOptions(BudgetOptions, total=False):
    """The keywords of :class:`RestartedEOTAttack` (and :class:`BudgetedAttack`'s) besides
    ``eps``; a subclass forwards them with ``**options: Unpack[RestartedEOTOptions]``."""

    loss: AttackLoss
    n_restarts: int
    seed: int
    eot_chunk: int | None


class RestartedEOTAttack(BudgetedAttack):
    """A budgeted attack that maximizes a ``loss`` averaged over EOT draws, in ``n_restarts``
    seeded runs (later runs attack only the points no earlier run fooled,
    :meth:`Attack.best_of_runs`), its EOT draws batched ``eot_chunk`` copies per model call.

    Keyword options (:class:`RestartedEOTOptions`):
        loss: ``ce``, ``margin`` or ``dlr`` (maximized; a subclass may accept fewer).
        n_restarts: runs, >= 1.
        seed: the seed of the runs' random starts (each subclass says which generator it seeds).
        eot_chunk: EOT copies per model call, >= 1 (``None``: all ``n_eot`` in one call).
        n_iter, n_eot, norm: see :class:`BudgetedAttack`.
    """

    def __init__(
        self,
        eps: float,
        *,
        loss: AttackLoss = AttackLoss.ce,
        n_restarts: int = 1,
        seed: int = 0,
        eot_chunk: int | None = None,
        **options: Unpack[BudgetOptions],
    ) -> None:
        super().__init__(eps, **options)
        self.loss = AttackLoss(loss)
        self.n_restarts = int(n_restarts)
        self.seed = int(seed)
        self.eot_chunk = eot_chunk


def broadcast(flags: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) flags viewed as (B, 1, ..., 1) to select rows of ``like`` (B, ...)."""
    return flags.view(-1, *[1] * (like.ndim - 1))
