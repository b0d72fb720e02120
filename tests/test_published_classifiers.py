"""Published classifiers (classifier.weights): RobustBench WRNs, torchvision, timm, users' modules.

Each loader reads a stand-in the test writes in the publisher's own layout (random weights,
random BatchNorm statistics) and must reproduce the original module's outputs exactly; every
weights path refuses a pickle that carries a payload, without running it.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from advpure.config.validate import validate_config
from advpure.errors import CheckpointError, ConfigError
from advpure.models.dm_wide_resnet import DMWideResNet
from advpure.models.published import IMAGENET_MEAN, IMAGENET_STD
from advpure.tasks.components import build_classifier
from advpure.weights_files import read_weights_file
from tests.compose_cache import make_fast_compose
from tests.conftest import CreatesFileWhenUnpickled

fast_compose = pytest.fixture(scope="module")(make_fast_compose)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
TINY_WRN = ("classifier=wrn28_10", "classifier.net.depth=10", "classifier.net.widen_factor=2")
TINY_DM = ("classifier=wrn70_16", "classifier.net.depth=10", "classifier.net.width=2")
TINY_DEIT = (
    "classifier=deit_s",
    "+classifier.net.depth=2",
    "+classifier.net.img_size=32",
    "+classifier.net.embed_dim=48",
    "classifier.net.num_classes=7",
)


# --------------------------------------------------------- references in the publishers' layouts


class RefBasicBlock(nn.Module):
    """RobustBench's wide_resnet.BasicBlock, written from its published forward."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equalInOut = in_planes == out_planes
        self.convShortcut = None if self.equalInOut else nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class RefNetworkBlock(nn.Module):
    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                RefBasicBlock((i == 0 and in_planes) or out_planes, out_planes, (i == 0 and stride) or 1)
                for i in range(n)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class RefWideResNet(nn.Module):
    """RobustBench's wide_resnet.WideResNet (TRADES code), with the optional unused ``sub_block1``."""

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 10, sub_block1: bool = False) -> None:
        super().__init__()
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        self.block1 = RefNetworkBlock(n, ch[0], ch[1], 1)
        if sub_block1:
            self.sub_block1 = RefNetworkBlock(n, ch[0], ch[1], 1)
        self.block2 = RefNetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = RefNetworkBlock(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)
        self.nChannels = ch[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(F.avg_pool2d(out, 8).view(-1, self.nChannels))


class RefSwish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class RefDMBlock(nn.Module):
    """RobustBench's dm_wide_resnet._Block, written from its published forward."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.relu_0 = RefSwish()
        self.conv_0 = nn.Conv2d(in_planes, out_planes, 3, stride, 0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.relu_1 = RefSwish()
        self.conv_1 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.has_shortcut = in_planes != out_planes
        self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False) if self.has_shortcut else None
        self._stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.has_shortcut:
            x = self.relu_0(self.batchnorm_0(x))
        else:
            out = self.relu_0(self.batchnorm_0(x))
        v = x if self.has_shortcut else out
        v = F.pad(v, (1, 1, 1, 1)) if self._stride == 1 else F.pad(v, (0, 1, 0, 1))
        out = self.conv_1(self.relu_1(self.batchnorm_1(self.conv_0(v))))
        return torch.add(self.shortcut(x) if self.has_shortcut else x, out)


class RefBlockGroup(nn.Module):
    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            *[RefDMBlock((i == 0 and in_planes) or out_planes, out_planes, (i == 0 and stride) or 1) for i in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class RefDMWideResNet(nn.Module):
    """RobustBench's DMWideResNet (swish), mean/std as persistent buffers as in its current code."""

    def __init__(self, depth: int, width: int, mean=CIFAR10_MEAN, std=CIFAR10_STD, num_classes: int = 10) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(3, 1, 1))
        ch = [16, 16 * width, 32 * width, 64 * width]
        n = (depth - 4) // 6
        self.init_conv = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        self.layer = nn.Sequential(
            RefBlockGroup(n, ch[0], ch[1], 1), RefBlockGroup(n, ch[1], ch[2], 2), RefBlockGroup(n, ch[2], ch[3], 2)
        )
        self.batchnorm = nn.BatchNorm2d(ch[3])
        self.relu = RefSwish()
        self.logits = nn.Linear(ch[3], num_classes)
        self.num_channels = ch[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(self.init_conv((x - self.mean) / self.std))
        out = self.relu(self.batchnorm(out))
        return self.logits(F.avg_pool2d(out, 8).view(-1, self.num_channels))


def randomized(module: nn.Module) -> nn.Module:
    """``module`` in eval mode with every float tensor of its state random (BatchNorm variances positive)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point() or (name.endswith(("mean", "std")) and tensor.dim() == 3):
                continue
            values = torch.randn(tensor.shape, generator=generator) / math.sqrt(max(1, tensor[0].numel()))
            tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
    return module.eval()


def imagenet_normalized(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def assert_same_function(net: nn.Module, reference: nn.Module, x: torch.Tensor) -> None:
    """Outputs equal up to float32 summation order (the pooling kernels differ: adaptive vs fixed 8x8)."""
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x), rtol=0, atol=1e-5)


def build(fast_compose, *overrides: str) -> nn.Module:
    cfg = fast_compose(*overrides)
    return build_classifier(cfg.classifier, require_weights=True).eval()


# ------------------------------------------------------------------------- RobustBench CIFAR


@pytest.mark.parametrize("layout", ["robustbench_pt", "safetensors", "sub_block1"])
def test_robustbench_wrn_loads_and_reproduces_the_reference(fast_compose, tmp_path, layout):
    reference = randomized(RefWideResNet(depth=10, widen_factor=2, sub_block1=layout == "sub_block1"))
    state = reference.state_dict()
    if layout == "safetensors":
        path = tmp_path / "wrn.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:  # RobustBench's files: {"state_dict": {"module.<name>": tensor}, ...} from DataParallel training
        path = tmp_path / "Standard.pt"
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 200}, path)
    net = build(fast_compose, *TINY_WRN, f"classifier.weights={path}")
    loaded = net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("sub_block1."))
    assert_same_function(net, reference, torch.rand(3, 3, 32, 32))


def test_dm_wide_resnet_loads_robustbench_layout_with_its_stored_normalization(fast_compose, tmp_path):
    reference = randomized(RefDMWideResNet(depth=10, width=2))
    path = tmp_path / "Gowal2020Uncovering_70_16_extra.pt"
    torch.save({f"module.{k}": v for k, v in reference.state_dict().items()}, path)
    assert "module.mean" in torch.load(path, weights_only=True)  # current RobustBench: persistent buffers
    net = build(fast_compose, *TINY_DM, f"classifier.weights={path}")
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), reference(x))

    # the same weights without the buffers (as older RobustBench files) take the config's normalization
    state = {k: v for k, v in reference.state_dict().items() if k not in ("mean", "std")}
    torch.save(state, tmp_path / "no_buffers.pt")
    net = build(fast_compose, *TINY_DM, f"classifier.weights={tmp_path / 'no_buffers.pt'}")
    with torch.no_grad():
        assert torch.equal(net(x), reference(x))

    # a file trained with other normalization says which values to set
    other = randomized(RefDMWideResNet(depth=10, width=2, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"classifier\.net\.mean=\[0\.5,0\.5,0\.5\] classifier\.net\.std=") as err:
        build(fast_compose, *TINY_DM, f"classifier.weights={tmp_path / 'other.pt'}")
    assert str(tmp_path / "other.pt") in str(err.value)
    fixed = build(
        fast_compose,
        *TINY_DM,
        f"classifier.weights={tmp_path / 'other.pt'}",
        "classifier.net.mean=[0.5,0.5,0.5]",
        "classifier.net.std=[0.25,0.25,0.25]",
    )
    with torch.no_grad():
        assert torch.equal(fixed(x), other(x))


def test_full_size_wrn70_16_has_robustbench_keys_and_shapes(fast_compose):
    """The configured WRN-70-16 against the DeepMind layout at full size, on the meta device (no memory)."""
    cfg = fast_compose("classifier=wrn70_16")
    from advpure.instantiate import build as build_node

    with torch.device("meta"):
        ours = build_node(cfg.classifier.net, key="classifier.net")
        reference = RefDMWideResNet(depth=70, width=16)
    assert isinstance(ours, DMWideResNet)
    ref_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items() if k not in ("mean", "std")}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == ref_shapes
    assert sum(p.numel() for p in ours.parameters()) == 266_796_506  # RobustBench's WRN-70-16
    assert "layer.2.block.10.conv_1.weight" in ref_shapes and "layer.0.block.0.shortcut.weight" in ref_shapes


# ------------------------------------------------------------------------- torchvision, timm


@pytest.mark.parametrize(
    ("option", "arch", "layout"),
    [("resnet50", "resnet18", "torchvision"), ("wide_resnet50_2", "resnet18", "robustbench_imagenet")],
)
def test_torchvision_weights_file_loads_with_normalization_inside(fast_compose, tmp_path, option, arch, layout):
    """The options' loader path on resnet18 (fast; same torchvision builder and key layout as resnet50 and
    wide_resnet50_2, whose full-size architectures are checked on the meta device below)."""
    import torchvision

    reference = randomized(torchvision.models.get_model(arch, weights=None))
    state = reference.state_dict()
    if layout == "robustbench_imagenet":  # nn.Sequential(normalize=ImageNormalizer, model=...) with buffers
        state = {f"model.{k}": v for k, v in state.items()}
        state["normalize.mean"] = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        state["normalize.std"] = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    path = tmp_path / f"{arch}.pth"
    torch.save(state, path)
    net = build(fast_compose, f"classifier={option}", f"classifier.net.arch={arch}", f"classifier.weights={path}")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), reference(imagenet_normalized(x)))


@pytest.mark.parametrize("layout", ["deit_release", "timm_safetensors"])
def test_timm_deit_weights_file_loads(fast_compose, tmp_path, layout):
    timm = pytest.importorskip("timm")
    reference = timm.create_model(
        "deit_small_patch16_224", pretrained=False, num_classes=7, depth=2, img_size=32, embed_dim=48
    )
    reference = randomized(reference)
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.1.attn.qkv.weight", "head.weight"} <= set(
        state
    )
    if layout == "deit_release":  # facebookresearch/deit's files: {"model": state_dict}
        path = tmp_path / "deit_small_patch16_224-cd65a155.pth"
        torch.save({"model": state}, path)
    else:
        path = tmp_path / "model.safetensors"
        save_file(state, str(path))
    net = build(fast_compose, *TINY_DEIT, f"classifier.weights={path}")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), reference(imagenet_normalized(x)))


def test_full_size_published_architectures_build_without_download(fast_compose):
    """wide_resnet50_2 and DeiT-S at full size, on the meta device: the published parameter counts."""
    from advpure.instantiate import build as build_node

    counts = {}
    for option in ("resnet50", "wide_resnet50_2", "deit_s"):
        with torch.device("meta"):
            net = build_node(fast_compose(f"classifier={option}").classifier.net, key="classifier.net")
        counts[option] = sum(p.numel() for p in net.weights_module().parameters())
    assert counts == {"resnet50": 25_557_032, "wide_resnet50_2": 68_883_240, "deit_s": 22_050_664}


# ------------------------------------------------------------------------------ torch_module


def test_torch_module_loads_a_users_module_and_normalizes_first(fast_compose, tmp_path):
    from advpure.models.digits_cnn import DigitsCNN

    reference = randomized(DigitsCNN(width=4, mean=(0.0,), std=(1.0,)))
    path = tmp_path / "my_net.pt"
    torch.save(reference.state_dict(), path)
    net = build(
        fast_compose,
        "classifier=torch_module",
        "classifier.net.model._target_=advpure.models.digits_cnn.DigitsCNN",
        "+classifier.net.model.width=4",
        "+classifier.net.model.mean=[0.0]",
        "+classifier.net.model.std=[1.0]",
        "classifier.net.mean=[0.3]",
        "classifier.net.std=[0.4]",
        f"classifier.weights={path}",
    )
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(x), reference((x - 0.3) / 0.4))


def test_torch_module_without_a_target_fails_at_validation(fast_compose):
    with pytest.raises(ConfigError) as error:
        validate_config(fast_compose("classifier=torch_module"))
    assert "classifier.net.model._target_" in error.value.key


# ----------------------------------------------------------------------------------- refusals


PAYLOAD_OPTIONS = {
    "wrn28_10": TINY_WRN,
    "wrn70_16": TINY_DM,
    "resnet50": ("classifier=resnet50", "classifier.net.arch=resnet18"),
    "wide_resnet50_2": ("classifier=wide_resnet50_2", "classifier.net.arch=resnet18"),
    "deit_s": TINY_DEIT,
    "torch_module": ("classifier=torch_module", "classifier.net.model._target_=torch.nn.Identity"),
}


@pytest.mark.parametrize("option", sorted(PAYLOAD_OPTIONS))
def test_a_pickle_with_a_payload_is_refused_by_every_weights_path(fast_compose, tmp_path, option):
    if option == "deit_s":
        pytest.importorskip("timm")
    marker = tmp_path / "created_by_unpickling"
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "extra": CreatesFileWhenUnpickled(marker)}, path)
    with pytest.raises(CheckpointError, match="weights_only") as error:
        build(fast_compose, *PAYLOAD_OPTIONS[option], f"classifier.weights={path}")
    assert str(path) in str(error.value) and "classifier.weights" in str(error.value)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="weights_only"):  # the reader the diffusion loaders share
        read_weights_file(path, key="diffusion.weights", expected="a state dict")
    assert not marker.exists()


def test_missing_unexpected_and_misshapen_keys_name_the_problem(fast_compose, tmp_path):
    state = randomized(RefWideResNet(depth=10, widen_factor=2)).state_dict()
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "fc.bias"}, r"1 missing keys \['fc\.bias'\]"),
        "unexpected": ({**state, "head.weight": torch.zeros(1)}, r"1 unexpected \['head\.weight'\]"),
        "shape": ({**state, "fc.bias": torch.zeros(3)}, r"fc\.bias: file \(3,\) vs model \(10,\)"),
    }
    for name, (bad, pattern) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(bad, path)
        with pytest.raises(CheckpointError, match=pattern) as error:
            build(fast_compose, *TINY_WRN, f"classifier.weights={path}")
        assert str(path) in str(error.value) and "classifier.net" in str(error.value)


def test_missing_damaged_and_doubly_set_weights_are_refused(fast_compose, tmp_path):
    with pytest.raises(CheckpointError, match=r"not found: .*nowhere\.pt .*classifier\.weights"):
        build(fast_compose, *TINY_WRN, f"classifier.weights={tmp_path / 'nowhere.pt'}")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pt"):
        build(fast_compose, *TINY_WRN, f"classifier.weights={tmp_path / 'garbage.pt'}")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"not a state dict"):
        build(fast_compose, *TINY_WRN, f"classifier.weights={tmp_path / 'list.pt'}")
    cfg = fast_compose("classifier=wrn28_10", "classifier.weights=a.pt", "classifier.checkpoint=b")
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    assert error.value.key == "classifier.weights"
