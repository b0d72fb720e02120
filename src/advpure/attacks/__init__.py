"""Attacks share one contract, :class:`advpure.attacks.base.Attack`: ``attack(model, x, y) -> x_adv``.

``model``: (B, C, H, W) in [0, 1] -> logits; ``x``, ``x_adv``: (B, C, H, W) in [0, 1]; ``y``: (B,)
int64. An attack knows nothing of diffusion: it differentiates ``model`` however the model's
purifier lets it (its gradient mode). Each attack declares ``name``, ``norm``, ``eps`` and
``settings()``, returns its most adversarial iterate for every point it moved, and leaves its own
verdict, checks and per-iteration trace (``last_verdict``, ``last_checks``, ``last_trace``).
"""
