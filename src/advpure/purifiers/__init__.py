"""Purifiers: nn.Modules mapping (B, C, H, W) in [0, 1] to (B, C, H, W) in [0, 1].

Every purifier is constructed with a ``backbone`` (the ``(x in [-1, 1], t in [0, 1]) -> eps``
callable; unused by the identity) and exposes ``settings()`` for result files.
"""
