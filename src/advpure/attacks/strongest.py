"""The strongest-attack ensemble for randomized defenses: run several attacks, keep per image the
point that does worst under the rescoring.

AutoAttack's worst case over attacks assumes a deterministic model: a point one attack fooled is
done. A purified classifier is random and is scored afterwards on fresh purifications, so here
every member's adversarial point is scored on ``n_score`` fresh draws of the defended model
(:func:`~advpure.attacks.base.fresh_draw_key`: the fraction of draws misclassified, then the mean CW
margin) and each image keeps the highest-scoring point of any member. A member attacks only the
images whose best point so far fools fewer than all ``n_score`` draws (an image every fresh draw
misclassifies cannot be made worse). The budget is the sum of the members' (each member's
settings are recorded) plus ``n_score`` forward draws per member and image.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advpure.attacks.base import Attack, Candidates, fresh_draw_key
from advpure.config.enums import Norm
from advpure.errors import ConfigError


class StrongestAttack(Attack):
    """``attack(model, x, y) -> x_adv``; x, x_adv (B, C, H, W) in [0, 1], y (B,) int labels.

    Args:
        eps: radius of the ``norm`` ball, in [0, 1] pixel units; given to every member.
        norm: ``Linf`` or ``L2``; given to every member.
        members: ``{name: attack config node}`` (each with ``_target_``, e.g. the options of
            conf/attack/), run in this order.
        n_score: fresh draws of the defended model that score each member's points.
        score_chunk: draws per scoring call (``None``: all ``n_score`` in one call).
        n_iter, n_eot: when set, every member's iterations / gradient samples (the family's budget
            knobs, e.g. ``attack.n_iter=2`` shrinks the whole ensemble); ``None`` keeps each member's.
    """

    name = "strongest"
    verdict_rule = "robust when no fresh scoring draw of the kept point misclassifies it"
    selection = (
        "per point, the member point fooling the most of n_score fresh draws of the defended model, "
        "ties broken by the mean CW margin over those draws"
    )

    def __init__(
        self,
        eps: float,
        norm: Norm = Norm.Linf,
        members: dict[str, Any] | None = None,
        n_score: int = 10,
        score_chunk: int | None = None,
        n_iter: int | None = None,
        n_eot: int | None = None,
    ) -> None:
        super().__init__(eps, norm)
        if not members:
            raise ConfigError("attack.members", "is empty", "list the attacks to combine (conf/attack/strongest.yaml)")
        from advpure.instantiate import build

        self.members: dict[str, Attack] = {}
        knobs = {name: value for name, value in (("n_iter", n_iter), ("n_eot", n_eot)) if value is not None}
        for member, node in members.items():
            attack = build(node, key=f"attack.members.{member}", eps=self.eps, norm=self.norm, **knobs)
            if not isinstance(attack, Attack):
                raise ConfigError(
                    f"attack.members.{member}",
                    f"builds {type(attack).__name__}, not an attack",
                    "give a node with the _target_ of an attack option (conf/attack/)",
                )
            self.members[member] = attack
        self.n_score = int(n_score)
        self.score_chunk = score_chunk

    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        best = Candidates(x)
        trace: dict[str, list[Any]] = {"run": [], "margin": [], "fooled_draws": []}
        checks: dict[str, Any] = {"members": {}}
        for member, attack in self.members.items():
            todo = (best.key[:, 0] < 1.0).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            x_member = attack(model, x[todo], y[todo])
            key = fresh_draw_key(model, x_member, y[todo], self.n_score, self.score_chunk)
            before = best.key[todo, 0].clone()
            best.offer(todo, x_member, key, key[:, 0] > 0)
            checks["members"][member] = {
                "attacked": int(todo.numel()),
                "improved": int((best.key[todo, 0] > before).sum()),
                "own_verdict_robust": int(attack.last_verdict.sum()) if attack.last_verdict is not None else None,
            }
            for name, values in (attack.last_trace or {}).items():
                if name in trace:
                    trace[name].extend(f"{member}: {v}" if name == "run" else v for v in values)
        self.last_verdict = best.key[:, 0] <= 0.0
        self.last_checks = checks
        self.last_trace = trace
        return best.x_adv

    def options(self) -> dict[str, Any]:
        members = {member: attack.settings() for member, attack in self.members.items()}
        return {
            "members": members,
            "n_score": self.n_score,
            "reduced_budget": any(bool(s.get("reduced_budget")) for s in members.values()),
        }
