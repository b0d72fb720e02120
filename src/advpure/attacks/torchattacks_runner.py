"""Any torchattacks attack by class name, on the defended model (gradients by the purifier's mode)."""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torchattacks
from torch import nn

from advpure.config.enums import Norm
from advpure.errors import ConfigError


def class_norm(name: str) -> Norm | None:
    """The threat model a torchattacks class fixes by itself: ``None`` when it takes a ``norm``
    argument (or no ``eps`` budget at all), ``L2`` for the ``*L2`` classes, else ``Linf``."""
    parameters = inspect.signature(getattr(torchattacks, name).__init__).parameters
    if "norm" in parameters or "eps" not in parameters:
        return None
    return Norm.L2 if name.endswith("L2") else Norm.Linf


def check_norm(name: str, norm: Norm | str) -> None:
    """``ConfigError`` naming ``attack.norm`` when class ``name`` cannot attack in ``norm``."""
    fixed = class_norm(name) if name in torchattacks.__all__ else None
    if fixed is not None and fixed != Norm(norm):
        same_norm = "PGDL2 or APGD (norm=L2)" if Norm(norm) == Norm.L2 else "EOTPGD, PGD or APGD (norm=Linf)"
        raise ConfigError(
            "attack.norm",
            f"{Norm(norm).value} budget given to torchattacks.{name}, which attacks only in {fixed.value}",
            f"set attack.norm={fixed.value}, or attack.name={same_norm}",
        )


class TorchAttacksRunner:
    """``attack(model, x, y) -> x_adv`` through ``torchattacks.<name>(model, **kwargs)``.

    ``eps``, ``n_iter`` and ``n_eot`` are passed as the class's ``eps``, ``steps`` and
    ``eot_iter`` when it takes them (and not already in ``kwargs``); the class's own norm
    applies (e.g. ``PGD`` is Linf, ``PGDL2`` is L2), and ``norm`` is passed only to classes that
    take one (``APGD``, ``Square``, ...). x, x_adv (B, C, H, W) in [0, 1].
    """

    def __init__(
        self,
        name: str,
        eps: float,
        norm: Norm = Norm.Linf,
        n_iter: int | None = None,
        n_eot: int | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        if name not in torchattacks.__all__:
            raise ConfigError(
                "attack.name", f"{name!r} is not a torchattacks attack", f"use one of {sorted(torchattacks.__all__)}"
            )
        check_norm(name, norm)
        self.name = name
        self.cls = getattr(torchattacks, name)
        parameters = inspect.signature(self.cls.__init__).parameters
        offered = {"eps": float(eps), "steps": n_iter, "eot_iter": n_eot, "norm": Norm(norm).value}
        self.kwargs = {k: v for k, v in offered.items() if k in parameters and v is not None}
        unknown = [k for k in (kwargs or {}) if k not in parameters]
        if unknown:
            raise ConfigError(
                "attack.kwargs",
                f"{name} takes no {unknown}",
                f"use its arguments: {[p for p in parameters if p not in ('self', 'model')]}",
            )
        self.kwargs.update(kwargs or {})
        self.norm = Norm(norm)
        self.eps = float(self.kwargs.get("eps", eps))

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        attack = self.cls(model, **self.kwargs)
        attack.set_device(x.device)
        return attack(x, y).detach()

    def settings(self) -> dict[str, Any]:
        return {"name": "torchattacks", "attack": self.name, "norm": self.norm.value, "eps": self.eps, **self.kwargs}
