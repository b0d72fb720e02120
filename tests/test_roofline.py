"""FLOP counts and rooflines of the benchmark tables, against closed forms."""

from __future__ import annotations

import torch

from advpure.profiling.roofline import data_sheet_peak, flops_per_call


def test_convolution_flops_are_two_per_multiply_add():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    # 8 output channels x 8 x 8 positions, each a 3 x 3 x 3 dot product: 2 FLOPs per multiply-add
    assert flops_per_call(conv, torch.zeros(1, 3, 8, 8)) == 2 * (8 * 8 * 8) * 27
    assert flops_per_call(conv, torch.zeros(5, 3, 8, 8)) == 5 * 2 * (8 * 8 * 8) * 27


def test_ddpm_cifar10_unet_costs_about_12_4_gflop_per_image():
    from benchmarks.purification import cifar_unet

    unet = cifar_unet(torch.device("cpu"))
    assert abs(sum(p.numel() for p in unet.parameters()) / 1e6 - 35.7) < 0.05
    flops = flops_per_call(unet, torch.zeros(1, 3, 32, 32), torch.zeros(1))
    assert 12.0e9 < flops < 12.8e9


def test_data_sheet_peaks_match_the_specific_name_first():
    assert data_sheet_peak("NVIDIA H100 80GB HBM3") == ("H100", 989.4)
    assert data_sheet_peak("NVIDIA H100 PCIe") == ("H100 PCIe", 756.5)
    assert data_sheet_peak("NVIDIA H200") == ("H200", 989.4)
    assert data_sheet_peak("NVIDIA A100-SXM4-80GB") == ("A100", 312.0)
    assert data_sheet_peak("Some Future GPU") is None
