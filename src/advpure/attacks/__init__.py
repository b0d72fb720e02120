"""Attacks share one signature: ``attack(model, x, y) -> x_adv``.

``model``: (B, C, H, W) in [0, 1] -> logits; ``x``, ``x_adv``: (B, C, H, W) in [0, 1]; ``y``: (B,)
int64. An attack knows nothing of diffusion: it differentiates ``model`` however the model's
purifier lets it (its gradient mode). Each attack exposes ``norm``, ``eps`` and ``settings()``.
"""
