"""The evaluation as a Lightning test loop: attack undefended and defended, record each example."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

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
    adversarial images.

    After ``trainer.test``, ``records`` holds one dict per image (gathered from every rank) with
    ``RECORD_COLUMNS`` and the perturbation norms ``NORM_COLUMNS``; ``panel`` holds up to
    ``n_panel`` (clean, adversarial, purified-adversarial) images from rank 0's first batch.
    """

    def __init__(self, classifier: nn.Module, purifier: nn.Module, attack: Any, n_panel: int = 8) -> None:
        super().__init__()
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
        with torch.no_grad():
            purified_adv = self.purifier(x_adv_defended)
            preds = torch.stack(
                [
                    self.classifier(x).argmax(1),
                    self.classifier(x_adv_undefended).argmax(1),
                    self.classifier(self.purifier(x)).argmax(1),
                    self.classifier(purified_adv).argmax(1),
                ],
                dim=1,
            )
        norms = [
            _norms(x_adv_undefended - x),
            _norms(x_adv_defended - x),
        ]
        row = torch.cat([index[:, None].float(), y[:, None].float(), preds.float(), *norms], dim=1)
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
        rows = torch.cat(self._rows) if self._rows else torch.zeros(0, len(RECORD_COLUMNS) + len(NORM_COLUMNS))
        gathered = self.all_gather(rows)
        if gathered.ndim == 3:  # (world, n, columns) under DDP
            gathered = gathered.reshape(-1, gathered.shape[-1])
        unique: dict[int, torch.Tensor] = {}
        for row in gathered.cpu():
            unique.setdefault(int(row[0]), row)  # DistributedSampler pads with repeats
        self.records = []
        for key in sorted(unique):
            row = unique[key]
            record: dict[str, Any] = {
                c: int(v) for c, v in zip(RECORD_COLUMNS, row[: len(RECORD_COLUMNS)], strict=True)
            }
            record.update({c: float(v) for c, v in zip(NORM_COLUMNS, row[len(RECORD_COLUMNS) :], strict=True)})
            self.records.append(record)


def _norms(delta: torch.Tensor) -> torch.Tensor:
    """(B, 2): Linf and L2 norm of each perturbation."""
    flat = delta.detach().flatten(1)
    return torch.stack([flat.abs().amax(1), flat.norm(dim=1)], dim=1)
