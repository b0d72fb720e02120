"""Lightning modules run (fast_dev_run); EMA follows its closed form."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from advpure.data.digits import DigitsDataModule
from advpure.diffusion.backbone import UNetEpsilon
from advpure.errors import AdvpureError
from advpure.models.digits_cnn import DigitsCNN
from advpure.training.classifier import ClassifierModule
from advpure.training.diffusion import DiffusionModule
from advpure.training.ema import EMA


def _trainer(tmp_path) -> pl.Trainer:
    return pl.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )


def test_classifier_module_standard_and_adversarial(tmp_path):
    for adversarial in (None, {"norm": "Linf", "eps": 0.1, "step_size": 0.05, "steps": 2}):
        net = DigitsCNN(width=8)
        before = [p.detach().clone() for p in net.parameters()]
        _trainer(tmp_path).fit(ClassifierModule(net, adversarial=adversarial), datamodule=DigitsDataModule())
        assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_diffusion_module_runs_and_updates_ema(tmp_path):
    backbone = UNetEpsilon(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=[8, 16],
        down_block_types=["DownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "UpBlock2D"],
        layers_per_block=1,
        norm_num_groups=4,
    )
    module = DiffusionModule(backbone, ema_decay=0.5)
    ema_before = [p.clone() for p in module.ema.shadow.parameters()]
    _trainer(tmp_path).fit(module, datamodule=DigitsDataModule(batch_size=16))
    assert any(not torch.equal(a, b) for a, b in zip(ema_before, module.ema.shadow.parameters(), strict=True))
    assert torch.isfinite(module.noise_loss(torch.rand(4, 1, 8, 8)))


def test_ema_closed_form():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.shadow.weight, 0.9 * start + 0.1 * (start + 1.0))
    assert not ema.shadow.weight.requires_grad


def test_evaluation_module_fast_dev_run(tmp_path):
    from advpure.attacks.autoattack import AutoAttackRunner
    from advpure.evaluation.batches import BatchPlan
    from advpure.evaluation.module import DRAW_COLUMNS, NORM_COLUMNS, RECORD_COLUMNS, EvaluationModule
    from advpure.evaluation.store import BatchStore
    from advpure.purifiers.diffpure import DiffPure

    datamodule = DigitsDataModule()
    datamodule.setup()
    purifier = DiffPure(lambda x, t: torch.zeros_like(x), t_star=0.05, dt=0.01)
    attack = AutoAttackRunner(eps=0.1, version="custom", attacks=["apgd-ce"], n_iter=2)
    plan = BatchPlan.cut(list(range(6)), 3)
    store = BatchStore(tmp_path / "store", {"test": "fast_dev_run"})
    module = EvaluationModule(DigitsCNN(width=8), purifier, attack, datamodule.test_set, plan, store, n_panel=2)
    trainer = pl.Trainer(
        fast_dev_run=True, accelerator="cpu", logger=False, inference_mode=False, default_root_dir=tmp_path
    )
    with pytest.raises(AdvpureError, match="batch 1 is missing"):  # fast_dev_run: one batch of two
        trainer.test(module, verbose=False)
    stored = store.load(0, [0, 1, 2])
    assert stored is not None and len(stored["records"]) == 3
    assert set(stored["records"][0]) == set(RECORD_COLUMNS) | set(NORM_COLUMNS) | set(DRAW_COLUMNS)
    assert store.load(0, [0, 1, 5]) is None  # a stored batch is reused only for the same images
    assert store.load_panel()["clean"].shape == (2, 1, 8, 8)
