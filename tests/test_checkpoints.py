"""safetensors + JSON checkpoints: exact round trip; clear errors; never a pickle."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from advpure.checkpoints import checkpoint_paths, load_weights, read_checkpoint, save_checkpoint
from advpure.errors import CheckpointError
from advpure.models.digits_cnn import DigitsCNN
from tests.conftest import CreatesFileWhenUnpickled

NET = {"_target_": "advpure.models.digits_cnn.DigitsCNN", "width": 8}


def _saved(tmp_path):
    net = DigitsCNN(width=8)
    stem = save_checkpoint(net, tmp_path / "model", net=NET, metadata={"note": "test"})
    return net, stem


def test_round_trip_is_exact(tmp_path):
    net, stem = _saved(tmp_path)
    fresh = DigitsCNN(width=8)
    config = load_weights(fresh, stem, net=NET)
    assert config["metadata"] == {"note": "test"}
    for (k, a), (k2, b) in zip(net.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(net(x), fresh(x))
    # any of the two file names works as the path
    load_weights(DigitsCNN(width=8), stem.with_suffix(".safetensors"))
    assert json.loads(checkpoint_paths(stem)[1].read_text())["n_parameters"] == sum(p.numel() for p in net.parameters())


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path / "absent.safetensors")):
        read_checkpoint(tmp_path / "absent")


def test_truncated_weights_are_refused(tmp_path):
    _, stem = _saved(tmp_path)
    weights = checkpoint_paths(stem)[0]
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(stem)


def test_other_architecture_is_refused(tmp_path):
    _, stem = _saved(tmp_path)
    with pytest.raises(CheckpointError, match="architecture"):
        load_weights(DigitsCNN(width=16), stem, net={**NET, "width": 16})
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_weights(DigitsCNN(width=16), stem)


def test_pickle_files_are_never_loaded(tmp_path):
    marker = tmp_path / "pwned"

    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(CreatesFileWhenUnpickled(marker)))
    (tmp_path / "evil.json").write_text(json.dumps({"format": "advpure-checkpoint-v1", "net": NET}))
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path / "evil")
    (tmp_path / "model.pt").write_bytes(pickle.dumps(CreatesFileWhenUnpickled(marker)))
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path / "model.pt")
    assert not marker.exists()
