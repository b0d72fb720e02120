"""The evaluation as a Lightning test loop over planned batches, each stored when finished."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from advpure.attacks.base import Attack
from advpure.attacks.geometry import GEOMETRIES
from advpure.config.enums import NonFinitePolicy, Norm
from advpure.errors import AdvpureError
from advpure.evaluation.batches import STREAMS, BatchPlan, PlannedBatches, seed_stream, stream_seed
from advpure.evaluation.compute import count_purifications
from advpure.evaluation.defended import DefendedClassifier
from advpure.evaluation.nonfinite import NonFiniteWatch
from advpure.evaluation.store import RECORD_DRAWS, RECORD_INTEGERS, BatchStore

MODELS = ("undefended", "defended")
RECORD_COLUMNS = (
    *RECORD_INTEGERS,
    "undefended_attack_succeeded",
    "defended_attack_succeeded",
    "nonfinite",
    "undefended_protocol_robust",
    "defended_protocol_robust",
)
NORM_COLUMNS = ("undefended_linf", "undefended_l2", "defended_linf", "defended_l2")
DRAW_COLUMNS = RECORD_DRAWS


class EvaluationModule(pl.LightningModule):
    """For each planned batch ``(x, y, index, batch id)``: attack the classifier alone (control)
    and the defended model (classifier after purifier, gradients by the purifier's grad mode;
    the bare classifier for ``blind``), then score ``n_draws`` fresh purifications of the clean
    and of the adversarial images (one batched ``purify_copies`` call each).

    Randomness: before the attacks torch's generators are seeded from (``seed``, batch, "attack"),
    before the scoring draws from (``seed``, batch, "scoring") (:mod:`advpure.evaluation.batches`).
    With ``resume``, a batch already in ``store`` (same indices) is read instead of computed; a
    computed batch is always written to ``store`` at once. Under DDP, process r runs batches r, r + W, ...; at the end
    process 0 reads every batch from the store.

    After ``trainer.test``, on process 0: ``records`` holds one dict per image, in evaluation
    order, with ``RECORD_COLUMNS`` (defended predictions are draw 0; an attack succeeded when the
    clean prediction was right and the adversarial one wrong; ``*_protocol_robust``: the attack's
    own verdict, ``attack.last_verdict``, e.g. AutoAttack's or BPDA+EOT's defense-reps check, by
    the rule ``attack.settings()["verdict_rule"]``), ``NORM_COLUMNS`` and ``DRAW_COLUMNS``
    (every draw's prediction, space-separated); ``attack_checks`` per batch the attack's
    diagnostics per model (``attack.last_checks``, e.g. AutoAttack's randomness flags) and under
    ``"traces"`` its per-iteration traces per model (``attack.last_trace``); ``panel`` up to
    ``n_panel`` (clean, adversarial,
    purified-adversarial) images of batch 0; ``origins`` per batch, the ``origin`` (run folder)
    of the run that computed it (batch files are stamped with it). Every adversarial example must lie in the attack's
    eps-ball and in [0, 1], else :class:`AttackBudgetError`.

    Non-finite numbers (NaN, Inf) in the purifier's output, the classifier's logits, the gradient
    the attack receives or the attack's output are found per example (:mod:`advpure.evaluation.nonfinite`).
    ``on_nonfinite="stop"`` raises :class:`NonFiniteError` naming the batch, the dataset indices and
    where; ``"skip"`` records them (the ``nonfinite`` column, ``attack_checks[...]["nonfinite"]``)
    and sets the affected predictions to -1, so such an example never counts as correct or robust.
    """

    def __init__(
        self,
        classifier: nn.Module,
        purifier: nn.Module,
        attack: Attack,
        test_set: Dataset,
        plan: BatchPlan,
        store: BatchStore,
        seed: int = 0,
        n_panel: int = 8,
        n_draws: int = 1,
        resume: bool = True,
        origin: str = "",
        on_nonfinite: NonFinitePolicy | str = NonFinitePolicy.stop,
    ) -> None:
        super().__init__()
        self.classifier = classifier
        self.purifier = purifier
        self.defended = DefendedClassifier(purifier, classifier)
        self.attack = attack
        self.test_set = test_set
        self.plan = plan
        self.store = store
        self.seed = seed
        self.n_panel = n_panel
        self.n_draws = n_draws
        self.resume = resume
        self.origin = origin
        self.on_nonfinite = NonFinitePolicy(on_nonfinite)
        self.records: list[dict[str, Any]] = []
        self.attack_checks: list[dict[str, Any]] = []
        self.panel: dict[str, torch.Tensor] | None = None
        self.origins: list[str] = []
        self._correct = torch.zeros(4)
        self._seen = 0

    def test_dataloader(self) -> DataLoader:
        """This process's batches (round robin over the DDP world), one whole batch per item."""
        rank, world = self.trainer.global_rank, self.trainer.world_size
        batches = PlannedBatches(self.test_set, self.plan, self.plan.for_rank(rank, world))
        return DataLoader(batches, batch_size=None, shuffle=False)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int], batch_idx: int) -> None:
        x, y, index, batch_id = batch
        batch_id = int(batch_id)
        indices = index.tolist()
        stored = self.store.load(batch_id, indices) if self.resume else None
        if stored is None:
            stored = {"indices": indices, "computed_in": self.origin, **self.evaluate_batch(x, y, index, batch_id)}
            self.store.save(batch_id, stored)
        self._log_running(stored["records"])

    def evaluate_batch(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, batch_id: int) -> dict[str, Any]:
        """Attack and score one batch: ``{"records": [...], "attack_checks": {...}}``."""
        self.classifier.eval()
        self.purifier.eval()
        watch = NonFiniteWatch(x, index, batch_id)
        seed_stream(self.seed, batch_id, "attack")
        x_adv: dict[str, torch.Tensor] = {}
        verdicts: dict[str, torch.Tensor] = {}
        checks: dict[str, Any] = {}
        traces: dict[str, Any] = {}
        costs: dict[str, dict[str, int]] = {}
        for name, target in zip(MODELS, (self.classifier, self.defended.attack_target()), strict=True):
            with (
                torch.enable_grad(),
                watch.attack(name, self.purifier, self.classifier),
                count_purifications(self.purifier) as purifications,
            ):
                x_adv[name] = self.attack(target, x, y)
            bad = watch.rows(f"{name} attack output", x_adv[name], f"{name}_adv")
            x_adv[name] = torch.where(bad.view(-1, *[1] * (x.ndim - 1)), x, x_adv[name])  # scored as not robust
            check_budget(self.attack, x, x_adv[name], name, index=index)
            verdicts[name] = self.attack.last_verdict
            checks[name] = self.attack.last_checks
            traces[name] = self.attack.last_trace
            costs[name] = dict(purifications)
        self._stop_if_nonfinite(watch)
        seed_stream(self.seed, batch_id, "scoring")
        with torch.no_grad():
            clean_draws, _ = self._draws(x, watch, "defended clean", "defended_clean")
            adv_draws, purified_adv = self._draws(x_adv["defended"], watch, "defended adversarial", "defended_adv")
            undefended_clean = watch.predictions(
                "undefended clean classifier logits", self.classifier(x), "undefended_clean"
            )
            undefended_adv = watch.predictions(
                "undefended adversarial classifier logits", self.classifier(x_adv["undefended"]), "undefended_adv"
            )
        self._stop_if_nonfinite(watch)
        invalid = watch.invalid_examples()
        undefended_clean[invalid["undefended_clean"]] = -1
        undefended_adv[invalid["undefended_adv"]] = -1
        clean_draws[:, invalid["defended_clean"]] = -1
        adv_draws[:, invalid["defended_adv"]] = -1
        columns: dict[str, list[Any]] = {
            "index": index.tolist(),
            "label": y.tolist(),
            "undefended_clean_pred": undefended_clean.tolist(),
            "undefended_adv_pred": undefended_adv.tolist(),
            "defended_clean_pred": clean_draws[0].tolist(),
            "defended_adv_pred": adv_draws[0].tolist(),
            "undefended_attack_succeeded": _succeeded(undefended_clean, undefended_adv, y),
            "defended_attack_succeeded": _succeeded(clean_draws[0], adv_draws[0], y),
            "nonfinite": watch.column(),
        }
        for name in MODELS:
            flat = (x_adv[name] - x).detach().flatten(1)
            columns[f"{name}_linf"] = flat.abs().amax(1).tolist()
            columns[f"{name}_l2"] = flat.norm(dim=1).tolist()
            verdict = verdicts[name].clone().bool()
            verdict[invalid[f"{name}_adv"]] = False
            columns[f"{name}_protocol_robust"] = verdict.int().tolist()
        columns["defended_clean_draws"] = [" ".join(map(str, d)) for d in clean_draws.T.tolist()]
        columns["defended_adv_draws"] = [" ".join(map(str, d)) for d in adv_draws.T.tolist()]
        records = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        if batch_id == 0 and self.n_panel > 0:
            k = min(self.n_panel, x.shape[0])
            panel = {
                "clean": x[:k],
                "adversarial": x_adv["defended"][:k],
                "purified": purified_adv[:k].nan_to_num(0.0),
                "label": y[:k],
                "prediction": adv_draws[0, :k],
            }
            self.store.save_panel(panel)
        checks["traces"] = traces
        checks["purifications"] = costs  # images through the purifier during each attack (evaluation.compute)
        checks["nonfinite"] = watch.events
        checks["stream_seeds"] = {stream: stream_seed(self.seed, batch_id, stream) for stream in STREAMS}
        return {"records": records, "attack_checks": checks}

    def _draws(
        self, x: torch.Tensor, watch: NonFiniteWatch, what: str, category: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions of ``n_draws`` purifications of x: (D, B) ints, and draw 0's images; any
        non-finite purified image or logit is recorded in ``watch`` under ``what``."""
        copies = self.purifier.purify_copies(x, self.n_draws)
        watch.rows(f"{what} purifier output", copies.flatten(0, 1), category)
        logits = self.classifier(copies.flatten(0, 1).nan_to_num(0.0))
        predictions = watch.predictions(f"{what} classifier logits", logits, category)
        return predictions.view(self.n_draws, x.shape[0]), copies[0]

    def _stop_if_nonfinite(self, watch: NonFiniteWatch) -> None:
        if watch.events and self.on_nonfinite == NonFinitePolicy.stop:
            raise NonFiniteError(watch.describe())

    def _log_running(self, records: list[dict[str, Any]]) -> None:
        """Running clean and robust accuracy (single draw) on the progress bar."""
        for r in records:
            clean_u = r["undefended_clean_pred"] == r["label"]
            clean_d = r["defended_clean_pred"] == r["label"]
            robust_u = clean_u and r["undefended_adv_pred"] == r["label"]
            robust_d = clean_d and r["defended_adv_pred"] == r["label"]
            self._correct += torch.tensor([clean_u, robust_u, clean_d, robust_d], dtype=torch.float32)
        self._seen += len(records)
        names = ("undef_clean", "undef_robust", "def_clean", "def_robust")
        for name, value in zip(names, self._correct / max(self._seen, 1), strict=True):
            self.log(f"running/{name}", value.item(), prog_bar=True, on_step=True, on_epoch=False, batch_size=1)

    def on_test_epoch_end(self) -> None:
        """Wait for every process, then (process 0) read every planned batch from the store."""
        self.trainer.strategy.barrier("advpure-evaluation-gather")
        if not self.trainer.is_global_zero:
            return
        self.records, self.attack_checks, self.origins = [], [], []
        for batch_id, indices in enumerate(self.plan.batches):
            stored = self.store.load(batch_id, list(indices))
            if stored is None:
                raise AdvpureError(
                    f"batch {batch_id} is missing from {self.store.folder} after every process finished; with "
                    "DDP over several machines paths.evaluations must be on a filesystem they all see"
                )
            self.records.extend(stored["records"])
            self.origins.append(stored.get("computed_in", ""))
            self.attack_checks.append({"batch": batch_id, **(stored.get("attack_checks") or {})})
        panel = self.store.load_panel()
        if panel is not None and self.n_panel > 0:
            self.panel = {k: v[: self.n_panel] for k, v in panel.items()}


def _succeeded(clean_pred: torch.Tensor, adv_pred: torch.Tensor, y: torch.Tensor) -> list[int]:
    """1 where the clean prediction is right and the adversarial one wrong."""
    return ((clean_pred == y) & (adv_pred != y)).int().tolist()


class NonFiniteError(AdvpureError, FloatingPointError):
    """NaN or Inf in a purifier's output, a classifier's logits, an attack's gradient or output."""


class AttackBudgetError(AdvpureError, RuntimeError):
    """An attack returned an example outside its eps-ball or outside [0, 1] (a bug, not a number)."""


def check_budget(
    attack: Attack,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    which: str,
    tolerance: float = 1e-5,
    index: torch.Tensor | None = None,
) -> None:
    """Raise :class:`AttackBudgetError` unless every x_adv is finite, within the attack's ball and in
    [0, 1]; the message names the offending examples (dataset ``index``, else positions)."""
    eps = float(attack.eps)
    norm = Norm(attack.norm)
    delta = (x_adv - x).detach()
    sizes = GEOMETRIES[norm].size(delta)
    flat = x_adv.detach().flatten(1)
    outside = (
        ~torch.isfinite(flat).all(1)
        | ~(sizes <= eps + tolerance)
        | ~(flat.amin(1) >= -tolerance)
        | ~(flat.amax(1) <= 1 + tolerance)
    )
    if bool(outside.any()):
        where = outside.nonzero().flatten().tolist()
        names = [int(index[i]) for i in where] if index is not None else where
        size = sizes.nan_to_num(float("inf")).max().item()
        low, high = flat.min().item(), flat.max().item()
        raise AttackBudgetError(
            f"attack {type(attack).__name__} on the {which} model returned examples {names[:20]} outside the "
            f"threat model (largest {norm.value} size {size:.6g}, eps {eps:.6g}; values in [{low:.4g}, {high:.4g}]); "
            "adversarial examples must lie in the eps-ball and in [0, 1]. This is a bug in the attack or its "
            "settings: no result was written"
        )
