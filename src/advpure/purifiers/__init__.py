"""Purifiers: nn.Modules mapping (B, C, H, W) in [0, 1] to (B, C, H, W) in [0, 1].

Their contract is declared once, :class:`advpure.purifiers.protocol.Purifier` (``forward``,
``purify_copies``, ``settings``, ``grad_mode`` and the class-level capabilities). Every diffusion
purifier extends :class:`advpure.purifiers.base.ReversePurifier` and is constructed with a
``backbone`` (the ``(x in [-1, 1], t in [0, 1]) -> eps`` callable); the identity ignores it.
"""
