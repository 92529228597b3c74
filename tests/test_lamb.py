"""``model.optimizer: lamb``: timm's LAMB (``timm.optim.Lamb``) with our parameter groups.

timm's optimizer itself is timm's to test; here: that ``lamb`` builds it with the weight-decay groups of
:func:`mmemb.lit.optim.weight_decay_split` and without timm's own gradient clipping, that its
layer-wise trust ratio is on where we rely on it, and that a teacher trains a step with it.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from test_models import synthetic_batch
from timm.optim import Lamb
from torch import nn
from torch.utils.data import DataLoader

from mmemb.lit.optim import DenseSparseOptimizer, build_optimizer, weight_decay_split
from mmemb.lit.module import EmbeddingModule


def test_lamb_builds_timm_lamb_with_our_groups():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 3), nn.LayerNorm(3))
    opt = build_optimizer(model, "lamb", lr=0.01, betas=(0.9, 0.98), weight_decay=0.05)
    assert isinstance(opt, Lamb)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    decay, no_decay = weight_decay_split(model)
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for _, p in decay] == [id(model[1].weight)]
    assert [id(p) for p in opt.param_groups[1]["params"]] == [id(p) for _, p in no_decay]
    assert opt.defaults["max_grad_norm"] is None  # clipping is the trainer's gradient_clip_val, not hidden here
    assert opt.param_groups[0]["betas"] == (0.9, 0.98) and opt.param_groups[0]["lr"] == 0.01
    with pytest.raises(ValueError, match="valid names: adamw, lamb"):
        build_optimizer(model, "bogus", lr=0.01, betas=(0.9, 0.98), weight_decay=0.05)


def test_lamb_adapts_the_decayed_group_layer_wise():
    """The property we choose LAMB for: a decayed tensor's step is scaled by ||w|| / ||update||, so a
    tensor 100 x larger takes a 100 x larger step (Adam's would be the same size); the no-decay group
    takes the plain Adam step."""
    small = nn.Parameter(torch.full((4,), 0.01))
    large = nn.Parameter(torch.full((4,), 1.0))
    plain = nn.Parameter(torch.full((4,), 1.0))
    opt = Lamb([{"params": [small, large], "weight_decay": 1e-6}, {"params": [plain], "weight_decay": 0.0}],
               lr=0.1, max_grad_norm=None)
    for p in (small, large, plain):
        p.grad = torch.ones(4)
    before = [p.detach().clone() for p in (small, large, plain)]
    opt.step()
    steps = [float((b - p.detach()).norm()) for b, p in zip(before, (small, large, plain))]
    assert steps[1] == pytest.approx(100 * steps[0], rel=1e-3)
    assert steps[2] == pytest.approx(0.1 * 2.0, rel=1e-3)  # lr x ||sign(g)|| over 4 entries


def test_teacher_module_trains_a_step_with_lamb(tmp_path):
    pl.seed_everything(0)
    module = EmbeddingModule(preset="teacher_tiny", vocab_size=300, lr=1e-3, weight_decay=0.05, optimizer="lamb",
                           warmup_fraction=0.0, ngram_buckets=16)
    batch = synthetic_batch(b=4, t=2, size=32, length=12, vocab=300, n_mels=64, mel_frames=40, num_hashtags=0)
    batch["text_ngrams"] = torch.randint(0, 17, (4, 6), generator=torch.Generator().manual_seed(0))  # (B, G)
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    trainer = pl.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_steps=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=DataLoader([batch], batch_size=None))
    opt = trainer.optimizers[0]
    # the n-gram table's sparse Adam joined to timm's LAMB for everything else
    assert isinstance(opt, DenseSparseOptimizer) and isinstance(opt.dense, Lamb)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0, 0.0]
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    moved = [n for n, p in module.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert "text.bert.encoder.layer.0.attention.self.query.weight" in moved and "ngram_bag.bag.weight" in moved
    assert all(torch.isfinite(p).all() for p in module.model.parameters())
