"""Classifiers: (B, C, H, W) in [0, 1] -> logits (B, num_classes); each normalizes inside."""
