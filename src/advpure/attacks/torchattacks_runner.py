"""Any torchattacks attack by class name, on the defended model (gradients by the purifier's mode).

torchattacks classes return what their own ``forward`` returns: the last iterate (PGD, EOTPGD), or
the clean image for every point they did not fool (APGD, APGDT, FAB, Square, AutoAttack). The
runner hands the class an :class:`IterateProbe` instead of the model: every row the class feeds
the model that lies in the eps-ball of one of the batch's images is a candidate iterate for that
image, so the runner returns, per image, the most adversarial iterate the class evaluated (or its
returned example), whatever the class itself returns.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from advpure.attacks.base import Attack, Candidates, Trace, fresh_draw_key
from advpure.attacks.geometry import BALL_TOLERANCE, GEOMETRIES, match_to_balls
from advpure.attacks.losses import margin
from advpure.config.enums import Norm
from advpure.errors import ConfigError

# Budgets of a published protocol, per class, that ``reduced_budget`` compares with: EOTPGD is
# Lee & Kim's PGD-EOT (200 steps, EOT 20, as attack=pgd_eot), APGD is AutoAttack's rand APGD (100
# iterations, EOT 20, as attack=apgd_eot). Other classes have no published budget for randomized
# defenses here: their ``reduced_budget`` is None ("not comparable").
PUBLISHED_BUDGETS: dict[str, dict[str, int]] = {
    "EOTPGD": {"steps": 200, "eot_iter": 20},
    "APGD": {"steps": 100, "eot_iter": 20},
}
# Distance slack when matching a row the class evaluates to the image whose ball it lies in.


def library() -> Any:
    """The torchattacks package, imported on first use (it takes ~0.6 s to import, and building
    the config schemas reads this module)."""
    import torchattacks

    return torchattacks


def class_norm(name: str) -> Norm | None:
    """The threat model a torchattacks class fixes by itself: ``None`` when it takes a ``norm``
    argument (or no ``eps`` budget at all), ``L2`` for the ``*L2`` classes, else ``Linf``."""
    parameters = inspect.signature(getattr(library(), name).__init__).parameters
    if "norm" in parameters or "eps" not in parameters:
        return None
    return Norm.L2 if name.endswith("L2") else Norm.Linf


def check_norm(name: str, norm: Norm | str) -> None:
    """``ConfigError`` naming ``attack.norm`` when class ``name`` cannot attack in ``norm``."""
    fixed = class_norm(name) if name in library().__all__ else None
    if fixed is not None and fixed != Norm(norm):
        same_norm = "PGDL2 or APGD (norm=L2)" if Norm(norm) == Norm.L2 else "EOTPGD, PGD or APGD (norm=Linf)"
        raise ConfigError(
            "attack.norm",
            f"{Norm(norm).value} budget given to torchattacks.{name}, which attacks only in {fixed.value}",
            f"set attack.norm={fixed.value}, or attack.name={same_norm}",
        )


class IterateProbe(nn.Module):
    """``model`` as a torchattacks class sees it, offering every row it evaluates as a candidate.

    A row (of any call: gradient evaluations, predictions) that lies within ``eps`` (in ``norm``)
    of one of the clean images ``x`` (B, C, H, W) is matched to it (the same row of a call of B or
    k * B rows when that fits, else the nearest image) and offered to ``best`` with the key
    (this draw misclassifies it, this draw's CW margin). Rows outside every ball are ignored.
    Gradient evaluations (inputs that require grad) also make one ``trace`` entry per call.
    Two images closer than 2 eps can swap iterates; none then leaves its own ball.
    """

    def __init__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: Norm, eps: float, best: Candidates, trace: Trace
    ) -> None:
        super().__init__()
        self.model = model
        self.clean, self.y = x.detach(), y
        self.norm = Norm(norm)
        self.eps = float(eps)
        self.best = best
        self.trace = trace

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        logits = self.model(inputs)
        self.observe(inputs.detach(), logits.detach(), inputs.requires_grad)
        return logits

    @torch.no_grad()
    def observe(self, rows: torch.Tensor, logits: torch.Tensor, gradient: bool) -> None:
        """Offer the rows (N, C, H, W) with their logits (N, K) to ``best``."""
        if rows.shape[1:] != self.clean.shape[1:]:
            return
        point, inside = self.match(rows)
        if not bool(inside.any()):
            return
        rows, logits, point = rows[inside], logits[inside].float(), point[inside]
        labels = self.y[point]
        wrong = logits.argmax(1) != labels
        self.best.offer(point, rows, torch.stack([wrong.float(), margin(logits, labels)], dim=1), wrong)
        if gradient:
            self.trace.record(logits, labels)

    def match(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row (N,): the index of the image whose ball holds it, and whether one does."""
        return match_to_balls(rows, self.clean, self.eps, self.norm)


class TorchAttacksRunner(Attack):
    """``attack(model, x, y) -> x_adv`` through ``torchattacks.<name>(model, **kwargs)``.

    ``eps``, ``n_iter`` and ``n_eot`` are passed as the class's ``eps``, ``steps`` and
    ``eot_iter`` when it takes them (and not already in ``kwargs``); the class's own norm
    applies (e.g. ``PGD`` is Linf, ``PGDL2`` is L2), and ``norm`` is passed only to classes that
    take one (``APGD``, ``Square``, ...). ``kwargs``: any other keyword of the class's constructor
    (a keyword it does not take is a ``ConfigError`` naming ``attack.kwargs.<key>``).
    x, x_adv (B, C, H, W) in [0, 1]. The class's name is ``class_name``; ``name`` is "torchattacks".
    """

    name = "torchattacks"
    verdict_rule = (
        "robust unless a draw the class made on one of its iterates, or one draw on the example it returned, "
        "misclassified it"
    )
    selection = (
        "per point, over every iterate the class evaluated inside the eps-ball and the example it returned: "
        "a draw that misclassified it, ties (and points never misclassified) by the larger CW margin of "
        "that draw; an example the class returns outside the ball is kept, so the budget check reports it"
    )

    def __init__(
        self,
        name: str,
        eps: float,
        norm: Norm = Norm.Linf,
        n_iter: int | None = None,
        n_eot: int | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        if name not in library().__all__:
            raise ConfigError(
                "attack.name", f"{name!r} is not a torchattacks attack", f"use one of {sorted(library().__all__)}"
            )
        check_norm(name, norm)
        super().__init__(eps, norm)
        self.class_name = name
        self.cls = getattr(library(), name)
        parameters = inspect.signature(self.cls.__init__).parameters
        offered = {"eps": float(eps), "steps": n_iter, "eot_iter": n_eot, "norm": Norm(norm).value}
        self.kwargs = {k: v for k, v in offered.items() if k in parameters and v is not None}
        accepted = [p for p in parameters if p not in ("self", "model", "args", "kwargs")]
        unknown = [k for k in (kwargs or {}) if k not in parameters]
        if unknown:
            raise ConfigError(
                f"attack.kwargs.{unknown[0]}",
                f"torchattacks.{name} takes no keyword {', '.join(map(repr, unknown))}",
                f"use keywords it accepts: {', '.join(accepted)}",
            )
        self.kwargs.update(kwargs or {})
        self.defaults = {p: v.default for p, v in parameters.items() if v.default is not inspect.Parameter.empty}
        self.eps = float(self.kwargs.get("eps", eps))

    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        best, trace = Candidates(x), Trace()
        trace.start(self.class_name)
        attack = self.cls(IterateProbe(model, x, y, self.norm, self.eps, best, trace), **self.kwargs)
        attack.set_device(x.device)
        returned = attack(x, y).detach()
        everyone = torch.arange(x.shape[0], device=x.device)
        key = fresh_draw_key(model, returned, y, 1)
        outside = ~(GEOMETRIES[self.norm].size(returned - x) <= self.eps + BALL_TOLERANCE)
        key[outside] = float("inf")
        best.offer(everyone, returned, key, key[:, 0] > 0)
        self.last_verdict = ~best.fooled
        self.last_trace = trace.data
        self.last_checks = None
        return best.x_adv

    def options(self) -> dict[str, Any]:
        reference = PUBLISHED_BUDGETS.get(self.class_name)
        reduced = None
        if reference is not None:
            reduced = any(self.kwargs.get(k, self.defaults.get(k, v)) < v for k, v in reference.items())
        return {
            "attack": self.class_name,
            **{k: v for k, v in self.kwargs.items() if k != "eps"},
            "reduced_budget": reduced,
            "budget_reference": (
                ", ".join(f"{k}={v}" for k, v in reference.items())
                if reference is not None
                else f"none: torchattacks.{self.class_name} has no published budget here (not comparable)"
            ),
        }
