"""Classifier architectures: shapes, RobustBench-compatible WideResNet names and size."""

from __future__ import annotations

import torch

from advpure.models.digits_cnn import DigitsCNN
from advpure.models.wide_resnet import WideResNet


def test_digits_cnn_maps_images_to_logits():
    net = DigitsCNN()
    assert net(torch.rand(5, 1, 8, 8)).shape == (5, 10)


def test_wide_resnet_28_10_matches_robustbench_layout():
    net = WideResNet(depth=28, widen_factor=10)
    # RobustBench's WRN-28-10 (e.g. the 'Standard' CIFAR-10 model) has 36,479,194 parameters
    assert sum(p.numel() for p in net.parameters()) == 36_479_194
    keys = set(net.state_dict())
    for key in (
        "conv1.weight",
        "block1.layer.0.bn1.running_mean",
        "block1.layer.0.convShortcut.weight",
        "block1.layer.3.conv2.weight",
        "block3.layer.3.bn2.weight",
        "bn1.weight",
        "fc.bias",
    ):
        assert key in keys
    assert "block1.layer.1.convShortcut.weight" not in keys
    assert not any("normalize" in k for k in keys)
    assert len(keys) == 155


def test_wide_resnet_forward_small():
    net = WideResNet(depth=10, widen_factor=1, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).eval()
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
