"""Attack-failure audit: does an evaluation of a randomized purification defense deserve trust?

Eight indicators, each adapted to a stochastic defense and computed on (a subset of) the evaluated
images, each with a value, a threshold, a verdict (pass / warn / fail, or n/a where it does not
apply) and the fix it suggests (:mod:`advpure.audit.registry` lists them). ``task.audit=true`` runs
them after an evaluation; ``task=audit`` audits a finished run folder or the composed setting.
Thresholds and budgets: :class:`advpure.audit.settings.AuditSchema`. Entry point from Python:
:func:`advpure.audit.verdicts.run_audit` on an :class:`advpure.audit.base.AuditContext`.

This package's ``__init__`` imports nothing, so the config schema can import its settings cheaply.
"""
