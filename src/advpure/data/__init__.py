"""LightningDataModules with one contract: (B, C, H, W) float images in [0, 1], int64 labels.

Every data module exposes ``train_set`` / ``test_set`` (after ``setup``), ``num_classes``,
``image_shape`` and ``standard_eps`` (the conventional attack budget per norm).
"""
