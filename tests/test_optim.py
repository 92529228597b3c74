"""The training optimizer (mmemb/lit/optim.py): weight decay decided by module type and name, the
n-gram table's sparse (lazy) Adam update, and the joined optimizer's checkpoint round trip."""

from __future__ import annotations

import copy
import types

import pytest
import pytorch_lightning as pl
import torch
from test_models import synthetic_batch
from torch import nn
from torch.utils.data import DataLoader

from mmemb.lit.optim import (
    DenseSparseOptimizer,
    build_optimizer,
    configure_warmup_cosine,
    weight_decay_split,
)
from mmemb.lit.module import EmbeddingModule
from mmemb.models.ngram import NgramBag
from mmemb.models import create_model

VOCAB, NB = 300, 64


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: these tiny models only lose time to thread contention on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _teacher() -> nn.Module:
    torch.manual_seed(0)
    return create_model("teacher_tiny", text={"vocab_size": VOCAB, "ngram_buckets": NB})


def _stub_module(weight_decay: float = 0.05) -> types.SimpleNamespace:
    """What configure_warmup_cosine reads of a LightningModule: hparams and the step count."""
    hp = types.SimpleNamespace(lr=1e-3, betas=(0.9, 0.999), weight_decay=weight_decay, warmup_fraction=0.1,
                               min_lr_ratio=0.0)
    return types.SimpleNamespace(hparams=hp, trainer=types.SimpleNamespace(estimated_stepping_batches=10))


def _decayed_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> set[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}


# ----------------------------------------------------------------------------- weight decay by name

EXEMPT = {
    "text.bert.embeddings.word_embeddings.weight",  # nn.Embedding
    "text.bert.embeddings.position_embeddings.weight",
    "text.bert.embeddings.token_type_embeddings.weight",
    "ngram_bag.bag.weight",  # nn.EmbeddingBag, the n-gram table
    "temporal_pool.query",  # TemporalAttentionPool.no_weight_decay(), 3-D
    "visual.vit.pos_embed", "visual.vit.cls_token", "audio.pos_embed",  # listed by the ViT / the model
    "text.bert.embeddings.LayerNorm.weight", "visual.vit.norm.weight",  # norms
    "logit_scale", "keyword_bias", "video_attention.channel_bias", "temporal_pool.attn.in_proj_bias",
    "visual_proj.bias",
}
DECAYED = {
    "text.bert.encoder.layer.0.attention.self.query.weight", "visual.vit.blocks.0.attn.qkv.weight",
    "visual.vit.patch_embed.proj.weight", "temporal_pool.attn.in_proj_weight", "audio.patch_embed.weight",
    "fusion.layers.0.blocks.text_from_visual.mlp.0.weight", "visual_proj.weight", "keyword_token.weight",
}


def test_teacher_weight_decay_by_module_type_and_name():
    model = _teacher()
    opt = configure_warmup_cosine(_stub_module(), model)["optimizer"]
    decayed = _decayed_names(model, opt)
    assert EXEMPT.isdisjoint(decayed), sorted(EXEMPT & decayed)
    assert DECAYED <= decayed, sorted(DECAYED - decayed)
    shapes = dict(model.named_parameters())
    # every vector or scalar is exempt by a name rule (nothing relies on shapes, see the FSDP test) ...
    assert all(shapes[n].ndim >= 2 for n in decayed)
    # ... and what decays is exactly the weight matrices of linear, convolution and attention projections
    for name in decayed:
        assert name.endswith(("weight", "in_proj_weight")), name
    decay, no_decay = weight_decay_split(model)
    assert {n for n, _ in decay} == decayed and {n for n, _ in no_decay} == set(shapes) - decayed


def test_two_tower_model_weight_decay():
    from mmemb.models.registry import create_model

    model = create_model("two_tower_tiny", text={"vocab_size": VOCAB})
    decay, no_decay = weight_decay_split(model)
    exempt = {n for n, _ in no_decay}
    assert {"text.bert.embeddings.word_embeddings.weight", "text.bert.embeddings.position_embeddings.weight",
            "visual.vit.pos_embed", "visual.vit.cls_token"} <= exempt
    assert all(p.ndim >= 2 for _, p in decay) and decay


class _Wrapper(nn.Module):
    """Stands for an FSDP unit: FSDP puts the wrapped module under this attribute name."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self._fsdp_wrapped_module = inner


def _flatten_parameters(model: nn.Module) -> None:
    """Replace every parameter by a 1-D one, as FSDP's ``use_orig_params=True`` shards look."""
    for module in model.modules():
        for leaf, p in list(module.named_parameters(recurse=False)):
            setattr(module, leaf, nn.Parameter(p.detach().reshape(-1).clone()))


def test_decay_split_ignores_shapes_and_wrapper_names():
    """Under FSDP the optimizer sees flattened 1-D parameters under wrapper names; the former ``ndim < 2``
    rule then exempted every parameter. The name rules give the unwrapped model's split."""
    model = _teacher()
    decay, no_decay = weight_decay_split(model)
    wrapped = _teacher()
    wrapped.text = _Wrapper(wrapped.text)
    wrapped.fusion = _Wrapper(wrapped.fusion)
    _flatten_parameters(wrapped)
    assert all(p.ndim <= 1 for p in wrapped.parameters())
    decay_w, no_decay_w = weight_decay_split(wrapped)
    assert [n for n, _ in decay_w] == [n for n, _ in decay] and [n for n, _ in no_decay_w] == [n for n, _ in no_decay]
    opt = configure_warmup_cosine(_stub_module(), wrapped)["optimizer"]
    assert sum(p.numel() for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]) == \
        sum(p.numel() for _, p in decay)


def test_flat_parameters_are_refused():
    flat_type = torch.distributed.fsdp.FlatParameter
    model = nn.Linear(2, 2)
    model.weight = flat_type(torch.zeros(4), requires_grad=True)  # what use_orig_params=False leaves
    with pytest.raises(ValueError, match="use_orig_params=True"):
        weight_decay_split(model)


# ----------------------------------------------------------------------------- the sparse n-gram update


def _bag_loss(bag: NgramBag, ids: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    vec, _ = bag(ids)  # (B, W)
    return (vec - target).square().sum()


def test_ngram_table_gets_a_sparse_update_of_the_batch_rows_only():
    torch.manual_seed(0)
    model = nn.ModuleDict({"bag": NgramBag(num_buckets=20, width=4), "head": nn.Linear(4, 4)})
    dense_bag = copy.deepcopy(model["bag"])  # the reference: a dense gradient and torch.optim.Adam
    opt = build_optimizer(model, "adamw", lr=0.05, betas=(0.9, 0.99), weight_decay=0.1)
    assert isinstance(opt, DenseSparseOptimizer) and isinstance(opt.sparse, torch.optim.SparseAdam)
    assert opt.sparse.param_groups[0]["params"] == [model["bag"].bag.weight]
    assert all(p is not model["bag"].bag.weight for g in opt.dense.param_groups for p in g["params"])
    assert model["bag"].sparse_grad and not dense_bag.sparse_grad
    ref = torch.optim.Adam(dense_bag.parameters(), lr=0.05, betas=(0.9, 0.99))

    ids = torch.tensor([[2, 5, 5, 0], [7, 2, 0, 0]])  # rows 2, 5, 7 (bucket + 1; 0 = padding)
    target = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    start = model["bag"].bag.weight.detach().clone()
    for _ in range(3):  # the same rows every step: lazy Adam = dense Adam on them
        opt.zero_grad()
        ref.zero_grad()
        loss = _bag_loss(model["bag"], ids, target) + model["head"](torch.ones(1, 4)).sum()
        loss.backward()
        assert model["bag"].bag.weight.grad.is_sparse
        _bag_loss(dense_bag, ids, target).backward()
        opt.step()
        ref.step()
    table, ref_table = model["bag"].bag.weight.detach().clone(), dense_bag.bag.weight.detach().clone()
    touched = [2, 5, 7]
    untouched = [r for r in range(21) if r not in touched]
    torch.testing.assert_close(table[touched], ref_table[touched], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(table[touched], start[touched])
    assert torch.equal(table[untouched], start[untouched])  # neither moved nor decayed

    # a step on other rows: the lazy update leaves rows 2, 5, 7 where they are, while dense Adam
    # keeps moving them on their stale momentum
    before = table.clone()
    opt.zero_grad()
    ref.zero_grad()
    other = torch.tensor([[3, 0, 0, 0]])
    _bag_loss(model["bag"], other, target[:1]).backward()
    _bag_loss(dense_bag, other, target[:1]).backward()
    opt.step()
    ref.step()
    assert torch.equal(model["bag"].bag.weight.detach()[touched], before[touched])
    assert not torch.allclose(dense_bag.bag.weight.detach()[touched], ref_table[touched])
    assert not torch.equal(model["bag"].bag.weight.detach()[3], before[3])


def test_ngram_table_stays_dense_under_distributed(monkeypatch):
    """Several processes (DDP/FSDP): the table keeps a dense gradient and the dense optimizer."""
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)
    model = _teacher()
    opt = build_optimizer(model, "adamw", lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05)
    assert isinstance(opt, torch.optim.AdamW)
    no_decay = {id(p) for p in opt.param_groups[1]["params"]}
    assert id(model.ngram_bag.bag.weight) in no_decay
    vec, _ = model.ngram_bag(torch.tensor([[1, 2]]))
    vec.sum().backward()
    assert not model.ngram_bag.bag.weight.grad.is_sparse


def _train(model: nn.ModuleDict, opt: torch.optim.Optimizer, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids = torch.randint(0, 21, (3, 5), generator=g)  # (B, G)
        opt.zero_grad()
        vec, _ = model["bag"](ids)
        (model["head"](vec).square().mean()).backward()
        opt.step()


def test_joined_optimizer_state_dict_round_trip():
    torch.manual_seed(0)
    model = nn.ModuleDict({"bag": NgramBag(num_buckets=20, width=4), "head": nn.Linear(4, 2)})
    opt = build_optimizer(model, "adamw", lr=0.01, betas=(0.9, 0.98), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    _train(model, opt, 3, seed=0)
    sched.step()
    saved = copy.deepcopy((model.state_dict(), opt.state_dict(), sched.state_dict()))
    _train(model, opt, 3, seed=1)

    clone = nn.ModuleDict({"bag": NgramBag(num_buckets=20, width=4), "head": nn.Linear(4, 2)})
    clone.load_state_dict(saved[0])
    clone_opt = build_optimizer(clone, "adamw", lr=1.0, betas=(0.5, 0.5), weight_decay=0.0)
    clone_sched = torch.optim.lr_scheduler.LambdaLR(clone_opt, lambda step: 1.0 / (1 + step))
    clone_opt.load_state_dict(saved[1])
    clone_sched.load_state_dict(saved[2])
    # the inner optimizers see the loaded groups and state
    assert clone_opt.dense.param_groups[0]["weight_decay"] == 0.1 and clone_opt.sparse.param_groups[0]["lr"] == 0.005
    assert clone_opt.sparse.state[clone["bag"].bag.weight]["step"] == 3
    _train(clone, clone_opt, 3, seed=1)
    for (name, p), q in zip(model.named_parameters(), clone.parameters()):
        assert torch.equal(p, q), name


def test_teacher_with_ngram_bag_resumes_exactly(tmp_path):
    """A Lightning run with the joined optimizer, resumed from its epoch-end checkpoint, ends with the
    weights of the uninterrupted run (moments of the sparse table and the dense groups restored)."""
    batches = []
    for seed in range(2):
        batch = synthetic_batch(b=4, t=2, size=32, length=12, vocab=VOCAB, n_mels=64, mel_frames=40,
                                num_hashtags=0, seed=seed)
        batch["text_ngrams"] = torch.randint(0, NB + 1, (4, 10), generator=torch.Generator().manual_seed(seed))
        batches.append(batch)

    def fit(root, ckpt_path=None, callbacks=()) -> EmbeddingModule:
        pl.seed_everything(0)
        module = EmbeddingModule(preset="teacher_tiny", vocab_size=VOCAB, ngram_buckets=NB, lr=1e-2,
                               warmup_fraction=0.0)
        trainer = pl.Trainer(default_root_dir=root, accelerator="cpu", devices=1, max_epochs=2, logger=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             callbacks=list(callbacks), enable_checkpointing=bool(callbacks))
        trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None), ckpt_path=ckpt_path)
        assert isinstance(trainer.optimizers[0], DenseSparseOptimizer)
        return module

    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1,
                                         save_on_train_epoch_end=True)
    straight = fit(tmp_path / "a", callbacks=[saver])
    resumed = fit(tmp_path / "b", ckpt_path=tmp_path / "ckpt" / "epoch=0.ckpt")
    resumed_params = dict(resumed.model.named_parameters())
    for name, p in straight.model.named_parameters():
        assert torch.equal(p, resumed_params[name]), name
