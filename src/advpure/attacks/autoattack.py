"""AutoAttack (Croce & Hein, 2020) through pyautoattack, with gradients through the purifier.

pyautoattack's ``run_standard_evaluation`` returns, for every point it did not fool, the clean
image: APGD's ``perturb`` keeps only fooling iterates, and a point counts as fooled only when one
draw misclassified it. On a randomized defense that is scored again afterwards on fresh draws
this wastes the attack (a point AutoAttack did not fool is rescored on its clean image). The
runner therefore runs AutoAttack's loop itself, with pyautoattack's attacks (``SUB_ATTACKS``):

- per sub-attack, in AutoAttack's order, on the points AutoAttack still counts robust and on
  every point no run has fooled yet (a superset of AutoAttack's own);
- APGD variants through ``attack_single_run`` as ``perturb`` runs it (restarts on points not yet
  fooled; APGD-T once per target class), keeping each run's fooling iterate, else its
  highest-loss iterate; Square through ``attack_single_run`` (its best-margin iterate); FAB
  through ``perturb`` (its fooling points);
- every run's candidates are compared by one criterion on fresh draws (:func:`fresh_draw_key`:
  fraction of ``n_eot`` draws misclassifying, ties by mean CW margin); the best per point is
  returned, never the clean image for a point an attack moved.

AutoAttack's own verdict is kept as ``last_verdict``: the points it reports robust, by its rule
(one draw on the clean images, each ``perturb``'s initial draw, one draw on each ``perturb``
output), i.e. the robust accuracy of its log. pyautoattack's checks for unreliable evaluations
(``pyautoattack.checks``) only log warnings on the ``auto-attack`` logger; the runner records them
per call in ``last_checks``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from pyautoattack import AutoAttack, checks
from pyautoattack.autopgd_base import APGDAttack
from torch import nn

from advpure.attacks.base import Attack, Candidates, Run, Trace, TracedModel, broadcast, fresh_draw_key
from advpure.attacks.batched_eot import batch_eot, eot_description, eot_samples
from advpure.config.enums import AutoAttackVersion, Norm
from advpure.errors import ConfigError

log = logging.getLogger("auto-attack")
# pyautoattack's checks, by function name (the name its warning records carry as funcName).
CHECKS = (
    "check_randomized",
    "check_range_output",
    "check_dynamic",
    "check_n_classes",
    "check_zero_gradients",
    "check_square_sr",
)
CHECKS_DOC = " See flags_doc.md for details."
RAND_ADVICE = ' Please use version="rand".'


class CheckRecorder(logging.Handler):
    """Collects the warnings pyautoattack's checks log, keyed by the check that logged them.

    Messages are kept short: without pyautoattack's pointer to its flags document and, when
    ``rand_in_use`` (the runner already runs version ``rand``), without its advice to use it."""

    def __init__(self, rand_in_use: bool = False) -> None:
        super().__init__(level=logging.WARNING)
        self.rand_in_use = rand_in_use
        self.messages: dict[str, list[str]] = {name: [] for name in CHECKS}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().replace(CHECKS_DOC, "")
        if self.rand_in_use:
            message = message.replace(RAND_ADVICE, " (expected: version=rand, for randomized defenses, is in use)")
        messages = self.messages.setdefault(record.funcName if record.funcName in CHECKS else "other", [])
        if message not in messages:
            messages.append(message)

    def report(self) -> dict[str, dict[str, Any]]:
        """``{check: {"warned": bool, "messages": [str, ...]}}`` for every check."""
        return {name: {"warned": bool(messages), "messages": messages} for name, messages in self.messages.items()}


def set_apgd_iterations(apgd: APGDAttack, n_iter: int) -> None:
    """Give an APGD attack ``n_iter`` iterations, with the checkpoint schedule its constructor derives."""
    apgd.n_iter = n_iter
    apgd.n_iter_orig = n_iter
    apgd.n_iter_2 = max(int(0.22 * n_iter), 1)
    apgd.n_iter_min = max(int(0.06 * n_iter), 1)
    apgd.size_decr = max(int(0.03 * n_iter), 1)


# ------------------------------------------------------------------------- sub-attacks


@dataclass
class SubAttackResult:
    """One sub-attack on b points: its ``runs`` (each with the positions, among the b, of the
    points it attacked) and ``output`` (b, C, H, W), what pyautoattack's ``perturb`` would return
    (the fooling iterate, else the clean image), on which AutoAttack's verdict draws once."""

    runs: list[Run]
    output: torch.Tensor


class PerturbOutput:
    """What ``perturb`` returns, built run by run: a point its initial draw classified correctly
    takes the first fooling iterate; ``fooled`` marks points any run fooled."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, initial_logits: torch.Tensor) -> None:
        self.output = x.clone()
        self.attacked = initial_logits.argmax(1) == y
        self.fooled = torch.zeros_like(self.attacked)

    def todo(self) -> torch.Tensor:
        """Positions no run fooled yet (perturb's own set is those it still attacks)."""
        return (~self.fooled).nonzero().squeeze(1)

    def update(self, index: torch.Tensor, fooled: torch.Tensor, x_fooling: torch.Tensor) -> None:
        took = self.attacked[index] & fooled
        self.output[index[took]] = x_fooling[took]
        self.attacked[index[took]] = False
        self.fooled[index[fooled]] = True


@torch.no_grad()
def _predict(apgd: APGDAttack, x: torch.Tensor) -> torch.Tensor:
    """One draw of APGD's model on x: logits (b, K)."""
    return apgd.model.predict(x) if apgd.is_tf_model else apgd.model(x)


def _run_apgd(
    apgd: APGDAttack, traced: TracedModel, seed: int, x: torch.Tensor, y: torch.Tensor, targets: list[int | None]
) -> SubAttackResult:
    """APGD as ``perturb`` runs it, one run per entry of ``targets`` (``None``: untargeted; k: the
    k-th most likely class of a draw on the attacked points, as APGD-T picks it)."""
    apgd.seed = seed
    apgd.init_hyperparam(x)
    perturb = PerturbOutput(x, y, _predict(apgd, x))
    torch.random.manual_seed(seed)
    runs = []
    for target in targets:
        index = perturb.todo()
        if index.numel() == 0:
            break
        if target is not None:
            apgd.y_target = _predict(apgd, x[index]).sort(dim=1)[1][:, -target]
        with traced.labelled(y[index], eot_samples(apgd)):
            x_best, robust, _, x_best_adv = apgd.attack_single_run(x[index], y[index])
        fooled = ~robust.bool()
        runs.append(Run(torch.where(broadcast(fooled, x_best), x_best_adv, x_best).detach(), fooled, index=index))
        perturb.update(index, fooled, x_best_adv.detach())
    return SubAttackResult(runs, perturb.output)


def _apgd(adversary: AutoAttack, traced: TracedModel, x: torch.Tensor, y: torch.Tensor, loss: str) -> SubAttackResult:
    """APGD-CE / APGD-DLR: ``n_restarts`` runs."""
    adversary.apgd.loss = loss
    targets: list[int | None] = [None] * adversary.apgd.n_restarts
    return _run_apgd(adversary.apgd, traced, adversary.get_seed(), x, y, targets)


def _apgd_targeted(adversary: AutoAttack, traced: TracedModel, x: torch.Tensor, y: torch.Tensor) -> SubAttackResult:
    """APGD-T: ``n_restarts`` runs per target class (the 2nd .. (n_target_classes + 1)-th most likely)."""
    apgd = adversary.apgd_targeted
    targets: list[int | None] = [t for t in range(2, apgd.n_target_classes + 2) for _ in range(apgd.n_restarts)]
    return _run_apgd(apgd, traced, adversary.get_seed(), x, y, targets)


def _fab(
    adversary: AutoAttack, traced: TracedModel, x: torch.Tensor, y: torch.Tensor, targeted: bool
) -> SubAttackResult:
    """FAB / FAB-T through ``perturb`` (a minimum-norm attack: its output moves only the points it
    fooled within eps; FAB-T runs one restart, as AutoAttack sets it)."""
    fab = adversary.fab
    fab.targeted = targeted
    fab.n_restarts = 1 if targeted else fab.n_restarts
    fab.seed = adversary.get_seed()
    output = fab.perturb(x, y).detach()
    moved = (output != x).flatten(1).any(1)
    return SubAttackResult([Run(output, moved, index=torch.arange(x.shape[0], device=x.device))], output)


def _square(adversary: AutoAttack, traced: TracedModel, x: torch.Tensor, y: torch.Tensor) -> SubAttackResult:
    """Square as ``perturb`` runs it, keeping every restart's best-margin iterate."""
    square = adversary.square
    square.seed = adversary.get_seed()
    square.init_hyperparam(x)
    with torch.no_grad():
        perturb = PerturbOutput(x, y, square.predict(x))
        torch.random.manual_seed(square.seed)
        runs = []
        for _ in range(square.n_restarts):
            index = perturb.todo()
            if index.numel() == 0:
                break
            _, x_best = square.attack_single_run(x[index], y[index])
            fooled = square.predict(x_best).argmax(1) != y[index]
            runs.append(Run(x_best.detach(), fooled, index=index))
            perturb.update(index, fooled, x_best.detach())
    return SubAttackResult(runs, perturb.output)


SubAttack = Callable[[AutoAttack, TracedModel, torch.Tensor, torch.Tensor], SubAttackResult]
SUB_ATTACKS: dict[str, SubAttack] = {
    "apgd-ce": partial(_apgd, loss="ce"),
    "apgd-dlr": partial(_apgd, loss="dlr"),
    "fab": partial(_fab, targeted=False),
    "square": _square,
    "apgd-t": _apgd_targeted,
    "fab-t": partial(_fab, targeted=True),
}
KNOWN_ATTACKS = tuple(SUB_ATTACKS)


# ------------------------------------------------------------------------------ runner


class AutoAttackRunner(Attack):
    """Runs AutoAttack on a given model.

    Args:
        norm: ``Linf`` or ``L2``.
        eps: budget (in [0, 1] pixel units).
        version: ``rand`` (APGD-CE + APGD-DLR with EOT, for randomized defenses), ``standard``
            (APGD-CE, APGD-T, FAB-T, Square) or ``custom`` (``attacks``).
        attacks: attack list for ``custom`` (from ``KNOWN_ATTACKS``).
        n_iter: APGD iterations (``None``: AutoAttack's 100).
        n_eot: EOT gradient samples per APGD iteration (``None``: 20 for ``rand``, else 1); also
            the number of fresh draws that score each candidate.
        n_restarts: APGD restarts (``None``: the version's own).
        seed: AutoAttack's seed (seeds torch's global generator before each sub-attack, as
            pyautoattack does).
        eot_chunk: EOT copies per model call (:mod:`advpure.attacks.batched_eot`): ``None`` draws
            all ``n_eot`` samples of a gradient in one batched call; 1 keeps pyautoattack's loop of
            single calls. Same estimator either way; batching is faster and uses more memory.

    After each call ``last_verdict`` (B,) is AutoAttack's own verdict (True: robust in its log),
    ``last_checks`` that call's check results (:meth:`CheckRecorder.report`: per check, whether it
    warned and its messages) and ``last_trace`` one entry per APGD iteration (labelled by
    sub-attack). ``check_randomized``, which AutoAttack skips for ``rand``, is run on every call,
    so ``last_checks["check_randomized"]["warned"]`` always says whether the model looked
    randomized. The evaluation calls the runner once per batch and model and stores
    ``last_checks`` per call; ``settings()["checks"]`` is the last call's.
    """

    name = "autoattack"
    verdict_rule = (
        "the robust accuracy of AutoAttack's log: robust unless a draw misclassified it (one on the clean image, "
        "each attack's initial draw, one on each attack's output: its fooling iterate, else the clean image)"
    )
    selection = (
        "per point, over every run of every sub-attack: the run's fooling iterate, else its highest-loss "
        "iterate (Square: best margin); runs compared by the fraction of n_eot fresh draws that misclassify, "
        "ties broken by the larger mean CW margin over those draws"
    )

    def __init__(
        self,
        eps: float,
        norm: Norm = Norm.Linf,
        version: AutoAttackVersion = AutoAttackVersion.rand,
        attacks: list[str] | None = None,
        n_iter: int | None = None,
        n_eot: int | None = None,
        n_restarts: int | None = None,
        seed: int = 0,
        eot_chunk: int | None = None,
    ) -> None:
        super().__init__(eps, norm)
        self.version = AutoAttackVersion(version)
        if self.version == AutoAttackVersion.custom:
            if not attacks:
                raise ConfigError("attack.attacks", "is empty for version=custom", f"list some of {KNOWN_ATTACKS}")
            unknown = [a for a in attacks if a not in KNOWN_ATTACKS]
            if unknown:
                raise ConfigError(
                    "attack.attacks",
                    f"unknown attacks {unknown}",
                    f"use names from {KNOWN_ATTACKS}",
                )
        elif attacks:
            raise ConfigError(
                "attack.attacks",
                f"is set but version={self.version.value}",
                "use attack.version=custom or attack.attacks=null",
            )
        self.attacks = list(attacks) if attacks else None
        self.n_iter = n_iter
        self.n_eot = n_eot
        self.n_restarts = n_restarts
        self.seed = seed
        self.eot_chunk = eot_chunk
        self._last: dict[str, Any] = {}
        # AutoAttack reports its per-attack progress at DEBUG: show it (progress within a batch).
        log.setLevel(logging.DEBUG)

    def build(self, model: nn.Module, device: torch.device) -> AutoAttack:
        """A pyautoattack ``AutoAttack`` on ``model`` with this runner's budget applied."""
        adversary = AutoAttack(
            model,
            attacks=self.attacks,
            device=str(device),
            eps=self.eps,
            norm=self.norm.value,
            seed=self.seed,
            version=self.version.value,
        )
        for apgd in (adversary.apgd, adversary.apgd_targeted):
            if self.n_iter is not None:
                set_apgd_iterations(apgd, self.n_iter)
            batch_eot(apgd, model, apgd.eot_iter if self.n_eot is None else self.n_eot, self.eot_chunk)
        if self.n_restarts is not None:
            adversary.apgd.n_restarts = self.n_restarts
        return adversary

    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in [0, 1], y (B,) -> x_adv within the eps-ball, in [0, 1]."""
        x = x.detach().float()
        trace = Trace()
        traced = TracedModel(model, trace)
        adversary = self.build(traced, x.device)
        self._last = self._describe(adversary)
        recorder = CheckRecorder(rand_in_use=self.version == AutoAttackVersion.rand)
        log.addHandler(recorder)
        # check_dynamic counts autograd calls in a module-level dict it never resets: without this,
        # one model that calls autograd in its forward would flag every later model as dynamic.
        checks.funcs.update(dict.fromkeys(checks.funcs, 0))
        try:
            self._run_checks(adversary, x, y)
            best, robust = self._run_attacks(adversary, model, traced, x, y)
        finally:
            log.removeHandler(recorder)
        self.last_checks = recorder.report()
        self.last_verdict = robust
        self.last_trace = trace.data
        return best.x_adv

    def _run_checks(self, adversary: AutoAttack, x: torch.Tensor, y: torch.Tensor) -> None:
        """pyautoattack's checks before its attacks, as ``run_standard_evaluation`` runs them, plus
        ``check_randomized`` for ``rand`` (which AutoAttack skips there)."""
        checks.check_randomized(adversary.get_logits, x, y, bs=x.shape[0], logger=log)
        n_classes = checks.check_range_output(adversary.get_logits, x, logger=log)
        checks.check_dynamic(adversary.model, x, False, logger=log)
        checks.check_n_classes(
            n_classes,
            adversary.attacks_to_run,
            adversary.apgd_targeted.n_target_classes,
            adversary.fab.n_target_classes,
            logger=log,
        )

    def _run_attacks(
        self, adversary: AutoAttack, model: nn.Module, traced: TracedModel, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[Candidates, torch.Tensor]:
        """AutoAttack's loop over its sub-attacks: the best candidates, and its verdict (B,) bool."""
        n_draws, start = eot_samples(adversary.apgd), time.time()
        log.debug("using %s version including %s", self.version.value, ", ".join(adversary.attacks_to_run))
        with torch.no_grad():
            robust = adversary.get_logits(x).argmax(1) == y
        accuracy = {"clean": robust.float().mean().item()}
        log.debug("initial accuracy: %.2f%%", 100 * accuracy["clean"])
        best = Candidates(x)
        for name in adversary.attacks_to_run:
            index = (robust | ~best.fooled).nonzero().squeeze(1)
            if index.numel() == 0:
                log.debug("no points left to attack, skipping remaining attacks")
                break
            traced.trace.start(name)
            result = SUB_ATTACKS[name](adversary, traced, x[index], y[index])
            with torch.no_grad():
                robust[index[adversary.get_logits(result.output).argmax(1) != y[index]]] = False
            for run in result.runs:
                points = index[run.index]
                key = fresh_draw_key(model, run.x_adv, y[points], n_draws, self.eot_chunk)
                best.offer(points, run.x_adv, key, run.fooled)
            accuracy[name] = robust.float().mean().item()
            log.debug(
                "robust accuracy after %s: %.2f%% (total time %.1f s)",
                name.upper(),
                100 * accuracy[name],
                time.time() - start,
            )
        checks.check_square_sr(accuracy, logger=log)
        log.debug("robust accuracy: %.2f%% (AutoAttack's own verdict)", 100 * robust.float().mean().item())
        return best, robust

    def options(self) -> dict[str, Any]:
        """The effective settings (attack list, iterations, EOT), as AutoAttack will run them, and
        the last call's ``checks`` (``None`` before the first call)."""
        described = self._last or self._describe(self.build(nn.Identity(), torch.device("cpu")))
        return {**described, "checks": self.last_checks}

    def _describe(self, adversary: AutoAttack) -> dict[str, Any]:
        return {
            "version": self.version.value,
            "attacks": list(adversary.attacks_to_run),
            "n_iter": adversary.apgd.n_iter,
            "n_eot": eot_samples(adversary.apgd),
            "eot": eot_description(self.eot_chunk, eot_samples(adversary.apgd)),
            "n_restarts": adversary.apgd.n_restarts,
            "seed": self.seed,
            "reduced_budget": (self.n_iter is not None and self.n_iter < 100)
            or (self.version == AutoAttackVersion.rand and self.n_eot is not None and self.n_eot < 20),
        }
