"""The evaluation as a Lightning test loop: attack undefended and defended, record each example."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from advpure.attacks.geometry import GEOMETRIES
from advpure.config.enums import Norm
from advpure.errors import AdvpureError
from advpure.evaluation.defended import DefendedClassifier

RECORD_COLUMNS = (
    "index",
    "label",
    "undefended_clean_pred",
    "undefended_adv_pred",
    "defended_clean_pred",
    "defended_adv_pred",
)
NORM_COLUMNS = ("undefended_linf", "undefended_l2", "defended_linf", "defended_l2")


class EvaluationModule(pl.LightningModule):
    """For each test batch ``(x, y, index)``: attack the classifier alone (control) and the
    defended model (classifier after purifier, gradients by the purifier's grad mode; the bare
    classifier for ``blind``), then score one fresh purification draw of the clean and of the
    adversarial images, ``n_draws`` times each (one batched call of ``purify_copies``).

    After ``trainer.test``, ``records`` holds one dict per image (gathered from every rank) with
    ``RECORD_COLUMNS`` (the defended predictions are draw 0), the perturbation norms
    ``NORM_COLUMNS`` and every draw's prediction (``defended_clean_draws``,
    ``defended_adv_draws``: space-separated); ``panel`` holds up to ``n_panel`` (clean,
    adversarial, purified-adversarial) images from rank 0's first batch. Every adversarial
    example must lie in the attack's eps-ball and in [0, 1], else :class:`AttackBudgetError`.
    """

    def __init__(
        self, classifier: nn.Module, purifier: nn.Module, attack: Any, n_panel: int = 8, n_draws: int = 1
    ) -> None:
        super().__init__()
        self.n_draws = n_draws
        self.classifier = classifier
        self.purifier = purifier
        self.defended = DefendedClassifier(purifier, classifier)
        self.attack = attack
        self.n_panel = n_panel
        self.records: list[dict[str, Any]] = []
        self.panel: dict[str, torch.Tensor] | None = None
        self._rows: list[torch.Tensor] = []
        self._correct = torch.zeros(4)
        self._seen = 0

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y, index = batch
        self.classifier.eval()
        self.purifier.eval()
        with torch.enable_grad():
            x_adv_undefended = self.attack(self.classifier, x, y)
            x_adv_defended = self.attack(self.defended.attack_target(), x, y)
        for name, x_adv in (("undefended", x_adv_undefended), ("defended", x_adv_defended)):
            check_budget(self.attack, x, x_adv, name)
        with torch.no_grad():
            clean_draws, _ = self._draws(x)
            adv_draws, purified_adv = self._draws(x_adv_defended)
            preds = torch.stack(
                [
                    self.classifier(x).argmax(1),
                    self.classifier(x_adv_undefended).argmax(1),
                    clean_draws[0],
                    adv_draws[0],
                ],
                dim=1,
            )
        norms = [
            _norms(x_adv_undefended - x),
            _norms(x_adv_defended - x),
        ]
        row = torch.cat(
            [
                index[:, None].float(),
                y[:, None].float(),
                preds.float(),
                clean_draws.T.float(),
                adv_draws.T.float(),
                *norms,
            ],
            dim=1,
        )
        self._rows.append(row.detach())
        self._log_running(preds, y)
        if self.panel is None and self.n_panel > 0:
            k = min(self.n_panel, x.shape[0])
            self.panel = {
                "clean": x[:k].cpu(),
                "adversarial": x_adv_defended[:k].cpu(),
                "purified": purified_adv[:k].cpu(),
                "label": y[:k].cpu(),
                "prediction": preds[:k, 3].cpu(),
            }

    def _draws(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions of ``n_draws`` purifications of x: (D, B) ints, and draw 0's images."""
        copies = self.purifier.purify_copies(x, self.n_draws)
        logits = self.classifier(copies.flatten(0, 1))
        return logits.argmax(1).view(self.n_draws, x.shape[0]), copies[0]

    def _log_running(self, preds: torch.Tensor, y: torch.Tensor) -> None:
        clean_u, adv_u, clean_d, adv_d = (preds[:, i] == y for i in range(4))
        correct = torch.stack([clean_u, clean_u & adv_u, clean_d, clean_d & adv_d]).sum(1).cpu().float()
        self._correct += correct
        self._seen += y.shape[0]
        names = ("undef_clean", "undef_robust", "def_clean", "def_robust")
        for name, value in zip(names, self._correct / self._seen, strict=True):
            self.log(
                f"running/{name}",
                value.item(),
                prog_bar=True,
                on_step=True,
                on_epoch=False,
                batch_size=1,
            )

    def on_test_epoch_end(self) -> None:
        width = len(RECORD_COLUMNS) + 2 * self.n_draws + len(NORM_COLUMNS)
        rows = torch.cat(self._rows) if self._rows else torch.zeros(0, width)
        gathered = self.all_gather(rows)
        if gathered.ndim == 3:  # (world, n, columns) under DDP
            gathered = gathered.reshape(-1, gathered.shape[-1])
        unique: dict[int, torch.Tensor] = {}
        for row in gathered.cpu():
            unique.setdefault(int(row[0]), row)  # DistributedSampler pads with repeats
        self.records = []
        for key in sorted(unique):
            row = unique[key]
            n, d = len(RECORD_COLUMNS), self.n_draws
            record: dict[str, Any] = {c: int(v) for c, v in zip(RECORD_COLUMNS, row[:n], strict=True)}
            record.update({c: float(v) for c, v in zip(NORM_COLUMNS, row[n + 2 * d :], strict=True)})
            record["defended_clean_draws"] = " ".join(str(int(v)) for v in row[n : n + d])
            record["defended_adv_draws"] = " ".join(str(int(v)) for v in row[n + d : n + 2 * d])
            self.records.append(record)


class AttackBudgetError(AdvpureError, RuntimeError):
    """An attack returned an example outside its eps-ball or outside [0, 1] (a bug, not a number)."""


def check_budget(attack: Any, x: torch.Tensor, x_adv: torch.Tensor, which: str, tolerance: float = 1e-5) -> None:
    """Raise :class:`AttackBudgetError` unless every x_adv is within the attack's ball and [0, 1]."""
    eps = float(getattr(attack, "eps", 0.0))
    norm = Norm(getattr(attack, "norm", Norm.Linf))
    size = GEOMETRIES[norm].size((x_adv - x).detach()).max().item()
    low, high = x_adv.min().item(), x_adv.max().item()
    if size > eps + tolerance or low < -tolerance or high > 1 + tolerance:
        raise AttackBudgetError(
            f"attack {type(attack).__name__} on the {which} model returned an example of {norm.value} size "
            f"{size:.6g} (eps {eps:.6g}) with values in [{low:.4g}, {high:.4g}]; adversarial examples must lie "
            "in the eps-ball and in [0, 1]. This is a bug in the attack or its settings: no result was written"
        )


def _norms(delta: torch.Tensor) -> torch.Tensor:
    """(B, 2): Linf and L2 norm of each perturbation."""
    flat = delta.detach().flatten(1)
    return torch.stack([flat.abs().amax(1), flat.norm(dim=1)], dim=1)
