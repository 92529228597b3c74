"""The full model (``teacher_*`` presets) and the LightningModule: shapes with missing modalities,
gradients, ablations, the CLI."""

from __future__ import annotations

import sys

import pytest
import pytorch_lightning as pl
import torch
from conftest import REPO
from test_models import synthetic_batch
from torch.utils.data import DataLoader

from mmemb.lit.module import EmbeddingModule
from mmemb.models import LabelInputs, create_model, get_model_config

VOCAB = 300
H, Q = 10, 6
NB = 97  # n-gram hash buckets


def teacher_batch(b: int = 4, seed: int = 0) -> dict:
    """The batch contract with 64-band log-mels and hashtag and query labels."""
    batch = synthetic_batch(b=b, t=3, size=32, length=16, vocab=VOCAB, n_mels=64, mel_frames=40, num_hashtags=H,
                            seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    q = (torch.rand(b, Q, generator=g) < 0.3).float()
    batch["query_targets"], batch["query_weights"] = q, q * 2.0
    batch["frames"] = (torch.rand(batch["frames"].shape, generator=g) * 255).to(torch.uint8)
    lengths = torch.randint(1, 12, (b,), generator=g)  # hashed char-n-grams per sample
    grams = torch.randint(1, NB + 1, (b, 12), generator=g)  # bucket + 1
    batch["text_ngrams"] = grams * (torch.arange(12)[None, :] < lengths[:, None])  # (B, 12), 0-padded
    return batch


def label_inputs(n: int, edges: int = 6) -> LabelInputs:
    g = torch.Generator().manual_seed(n)
    ids = torch.randint(5, VOCAB, (n, 8), generator=g)
    att = torch.zeros(n, 8, dtype=torch.long)
    att[:, :3] = 1
    ids = ids * att
    edge_index = torch.randint(0, n, (2, edges), generator=g)
    return LabelInputs(ids, att, edge_index, torch.rand(edges, generator=g))


def tiny(**overrides):
    torch.manual_seed(0)
    return create_model("teacher_tiny", hashtags=label_inputs(H), queries=label_inputs(Q),
                        **{"text": {"vocab_size": VOCAB, "ngram_buckets": NB},
                           "heads": {"num_hashtags": H, "num_queries": Q}, **overrides})


def _keywords(batch, k: int = 2):
    positions = torch.zeros_like(batch["text_ids"], dtype=torch.bool)
    positions[:, 1:1 + k] = True
    masked = batch["text_ids"].masked_fill(positions, 4)
    return {"masked_text_ids": masked, "keyword_positions": positions, "num_keywords": k}


# ----------------------------------------------------------------------------- config and presets


def test_presets_and_nested_overrides():
    base = get_model_config("teacher_base", text={"vocab_size": 21128})
    assert (base.vision.width, base.vision.depth, base.vision.patch_size, base.vision.frame_size) == (768, 12, 16, 224)
    assert base.fusion.num_layers == 3 and base.fusion.visual_width == 768 and base.fusion.text_width == 768
    cfg = get_model_config("teacher_tiny", audio={"depth": 2}, fusion={"heads": 4}, use_audio=False)
    assert cfg.audio.depth == 2 and cfg.fusion.heads == 4 and cfg.fusion.modalities == ("text", "visual")
    assert cfg.audio.width == 64  # the preset's other audio fields stay
    minilm = get_model_config("teacher_small_minilm")
    assert (minilm.text.width, minilm.text.depth, minilm.text.init, minilm.vision.width) == (384, 6, "minilm", 128)


# ----------------------------------------------------------------------------- the model


def test_shapes_unit_norm_and_missing_modalities():
    model = tiny().eval()
    batch = teacher_batch(b=5)
    batch["video_mask"][1] = False  # no frames
    batch["audio_mask"][2] = False  # no audio
    batch["text_mask"][3] = False  # no text
    batch["text_attention"][3] = 0
    batch["text_ids"][3] = 0
    batch["video_mask"][4] = False  # neither frames nor audio
    batch["audio_mask"][4] = False
    with torch.no_grad():
        out = model(batch, **_keywords(batch))
    d = model.cfg.embed_dim
    for key in ("video", "text", "multimodal"):
        assert out[key].shape == (5, d) and torch.isfinite(out[key]).all()
    assert out["hashtag_logits"].shape == (5, H) and out["query_logits"].shape == (5, Q)
    assert out["keyword_logits"].shape == (5, 2, VOCAB)
    assert out["video_weights"].shape == (5, 2) and out["multimodal_weights"].shape == (5, 3)
    assert out["text_weights"].shape == (5, 2) and torch.all(out["text_weights"][3] == 0)  # (text, ngram)
    norms = lambda x: x.norm(dim=-1)  # noqa: E731
    assert torch.allclose(norms(out["video"])[:4], torch.ones(4), atol=1e-5)
    assert norms(out["video"])[4] == 0  # neither visual nor audio
    assert norms(out["text"])[3] == 0 and torch.allclose(norms(out["text"])[[0, 1, 2, 4]], torch.ones(4), atol=1e-5)
    assert torch.allclose(norms(out["multimodal"]), torch.ones(5), atol=1e-5)
    w = out["video_weights"]
    assert w[1, 0] == 0 and w[1, 1] == pytest.approx(1.0)  # row 1: audio only
    assert w[2, 1] == 0 and w[2, 0] == pytest.approx(1.0)  # row 2: visual only
    assert torch.all(w[4] == 0)
    assert out["multimodal_weights"][3, 0] == 0  # no text channel in row 3
    for name in ("hashtag_logits", "query_logits", "keyword_logits"):
        assert torch.isfinite(out[name]).all()

    # the video embedding never reads the text, and encode_video/encode_text agree with forward
    with torch.no_grad():
        other = dict(batch, text_ids=torch.randint(5, VOCAB, batch["text_ids"].shape))
        torch.testing.assert_close(model.encode_video(other), out["video"])
        torch.testing.assert_close(model.encode_text(batch), out["text"])
        no_text = {k: v for k, v in batch.items() if not k.startswith("text")}
        torch.testing.assert_close(model.encode_video(no_text), out["video"])


def test_every_parameter_gets_a_gradient():
    model = tiny().train()
    batch = teacher_batch(b=4)
    out = model(batch, **_keywords(batch))
    loss = (out["logit_scale"] * out["video"] @ out["text"].T).logsumexp(-1).sum() + out["multimodal"].sum()
    loss = loss + sum(out[k].float().pow(2).mean() for k in ("hashtag_logits", "query_logits", "keyword_logits"))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("switches", [
    {"use_audio": False},
    {"use_fusion": "none"},
    {"use_gcn": False},
    {"hashtag_head": False, "query_head": False, "keyword_head": False, "use_fusion": "none"},
    {"use_audio": False, "use_fusion": "none", "use_gcn": False},
    {"vision": {"fusion_tokens": "all"}},
    {"use_ngram_bag": False},
])
def test_ablation_switches_build_and_run(switches):
    model = tiny(**switches).eval()
    batch = teacher_batch(b=3)
    with torch.no_grad():
        out = model(batch, **_keywords(batch))
    heads = switches.get("hashtag_head", True) or switches.get("keyword_head", True)
    assert out["video"].shape == (3, 64) and ("multimodal" in out) == heads
    assert all(torch.isfinite(v).all() for v in out.values() if torch.is_tensor(v))
    assert out["video_weights"].shape[1] == (1 if switches.get("use_audio") is False else 2)
    assert (model.video_attention is None) == (switches.get("use_audio") is False)  # one channel: no attention
    assert ("hashtag_logits" in out) == switches.get("hashtag_head", True)
    assert ("keyword_logits" in out) == switches.get("keyword_head", True)
    assert (model.audio is None) == (switches.get("use_audio") is False)
    assert (model.fusion is None) == (switches.get("use_fusion") == "none")
    assert (model.ngram_bag is None) == (switches.get("use_ngram_bag") is False)
    assert out["text_weights"].shape == (3, 1 if switches.get("use_ngram_bag") is False else 2)


def test_ngram_bag_is_the_mean_of_its_buckets():
    from mmemb.models.ngram import NgramBag

    bag = NgramBag(num_buckets=5, width=3)
    w = bag.bag.weight
    assert torch.all(w[0] == 0)  # padding row
    ids = torch.tensor([[1, 2, 0, 0], [0, 0, 0, 0], [3, 3, 5, 0]])  # bucket + 1, 0 = padding
    vec, ok = bag(ids)
    torch.testing.assert_close(vec[0], (w[1] + w[2]) / 2)  # padding left out of the mean
    torch.testing.assert_close(vec[2], (2 * w[3] + w[5]) / 3)  # repeated grams count
    assert torch.all(vec[1] == 0) and ok.tolist() == [True, False, True]
    vec.sum().backward()
    assert torch.all(bag.bag.weight.grad[0] == 0) and torch.all(bag.bag.weight.grad[4] == 0)  # unused rows
    assert bag.bag.weight.grad[1].abs().sum() > 0
    with pytest.raises(ValueError, match="ngram_buckets"):
        bag(torch.tensor([[6]]))
    with pytest.raises(ValueError, match=r"\(B, G\)"):
        bag(torch.tensor([1, 2]))


def test_ngram_bag_exports_as_a_gather_mean_equal_to_the_bag():
    """Under ONNX export the bag is a gather, a masked sum and a division (embedding_bag becomes a Loop):
    the same mean, padding left out even where its row is not zero, zeros for an empty row."""
    from mmemb.models.ngram import NgramBag

    torch.manual_seed(0)
    bag = NgramBag(num_buckets=7, width=4)
    with torch.no_grad():
        bag.bag.weight[0] = 5.0  # a padding row that is not zero must still be left out
    ids = torch.tensor([[1, 2, 0, 0], [0, 0, 0, 0], [3, 3, 7, 0], [4, 5, 6, 7]])
    vec, ok = bag(ids)
    torch.testing.assert_close(bag._gather_mean(ids), vec)
    assert torch.all(bag._gather_mean(ids)[1] == 0)


def test_ngram_bag_joins_the_text_embedding_only():
    model = tiny().eval()
    batch = teacher_batch(b=4)
    batch["text_ngrams"][2] = 0  # text but no n-grams: the bag channel is masked in that row
    other = dict(batch, text_ngrams=torch.randint(1, NB + 1, batch["text_ngrams"].shape))
    with torch.no_grad():
        out, out2 = model(batch, **_keywords(batch)), model(other, **_keywords(batch))
        no_bag = model({k: v for k, v in batch.items() if k != "text_ngrams"})
    w = out["text_weights"]
    assert w[2, 1] == 0 and w[2, 0] == pytest.approx(1.0) and torch.all(w[[0, 1, 3], 1] > 0)
    assert torch.allclose(w.sum(dim=1), torch.ones(4))
    assert not torch.allclose(out["text"][[0, 1, 3]], out2["text"][[0, 1, 3]])  # the bag moves the text embedding
    for key in ("video", "multimodal", "hashtag_logits", "keyword_logits"):  # ... and nothing else
        torch.testing.assert_close(out[key], out2[key])
    assert torch.all(no_bag["text_weights"][:, 1] == 0)  # a batch without text_ngrams: text channel only
    torch.testing.assert_close(no_bag["text"][2], out["text"][2])


@pytest.mark.parametrize("fusion", ["multiscale", "none"])
def test_heads_read_ngram_adds_the_bag_to_the_clean_pass_only(fusion):
    """``heads_read_ngram``: the bag is a channel of the multimodal vector the heads read, so other
    n-grams move the hashtag logits; the keyword pass never sees it (its logits stay)."""
    model = tiny(use_fusion=fusion, heads_read_ngram=True).eval()
    assert model.multimodal_attention.channels[-1] == "ngram"
    batch = teacher_batch(b=4)
    batch["text_ngrams"][2] = 0  # no n-grams in row 2: the channel is unavailable there
    other = dict(batch, text_ngrams=torch.randint(1, NB + 1, batch["text_ngrams"].shape))
    other["text_ngrams"][2] = 0
    with torch.no_grad():
        out, out2 = model(batch, **_keywords(batch)), model(other, **_keywords(batch))
    rows = [0, 1, 3]
    assert not torch.allclose(out["hashtag_logits"][rows], out2["hashtag_logits"][rows], atol=1e-6)
    assert not torch.allclose(out["multimodal"][rows], out2["multimodal"][rows], atol=1e-6)
    w = out["multimodal_weights"]  # (B, C_m), the bag last
    assert w[2, -1] == 0 and torch.all(w[rows, -1] > 0)
    torch.testing.assert_close(out["keyword_logits"], out2["keyword_logits"])  # the masked pass: no bag
    torch.testing.assert_close(out["video"], out2["video"])
    # without a bag (no buckets) the switch adds no channel
    plain = create_model("teacher_tiny", **{"text": {"vocab_size": VOCAB}, "heads_read_ngram": True})
    assert "ngram" not in plain.multimodal_attention.channels


def test_wide_ngram_heads_add_the_mean_bucket_scores_and_train_sparsely():
    """``wide_ngram_heads``: each label head's logits gain the mean, over the text's n-grams, of one learned
    label-score vector per bucket; zero at the start (the deep head alone); rows without n-grams, the
    keyword logits and the embeddings are untouched; the tables train through SparseAdam."""
    from mmemb.lit.optim import build_optimizer, sparse_parameters

    model = tiny(wide_ngram_heads=True).eval()
    plain = tiny().eval()  # same seed, no wide part: the same deep weights
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "_wide." not in k})
    batch = teacher_batch(b=3)
    batch["text_ngrams"][0] = 0
    batch["text_ngrams"][0, :3] = torch.tensor([5, 5, 9])  # bucket ids 4, 4, 8
    batch["text_ngrams"][2] = 0  # no n-grams
    with torch.no_grad():
        start, deep = model(batch, **_keywords(batch)), plain(batch, **_keywords(batch))
        torch.testing.assert_close(start["hashtag_logits"], deep["hashtag_logits"])  # zero at the start
        model.hashtag_wide.bag.weight[5] = torch.arange(H, dtype=torch.float)
        model.hashtag_wide.bag.weight[9] = 3.0
        model.query_wide.bag.weight[9] = 1.5
        out = model(batch, **_keywords(batch))
    torch.testing.assert_close(out["hashtag_logits"][0] - deep["hashtag_logits"][0],
                               (2 * torch.arange(H, dtype=torch.float) + 3.0) / 3)
    torch.testing.assert_close(out["query_logits"][0] - deep["query_logits"][0], torch.full((Q,), 0.5))
    torch.testing.assert_close(out["hashtag_logits"][2], deep["hashtag_logits"][2])  # no n-grams: unchanged
    for key in ("keyword_logits", "text", "multimodal", "video"):
        torch.testing.assert_close(out[key], deep[key])
    without = {k: v for k, v in batch.items() if k != "text_ngrams"}
    with torch.no_grad():
        torch.testing.assert_close(model(without)["hashtag_logits"], plain(without)["hashtag_logits"])
    opt = build_optimizer(model.train(), "adamw", 1e-3, (0.9, 0.999), 0.05)
    sparse = {id(p) for p in sparse_parameters(model)}
    assert id(model.hashtag_wide.bag.weight) in sparse and id(model.query_wide.bag.weight) in sparse
    wide_ids = {id(model.hashtag_wide.bag.weight), id(model.query_wide.bag.weight)}
    for sparse_ngrams in (True, False):  # sparse (SparseAdam) or dense (as under DDP): the wide tables at lr x 100
        opt = build_optimizer(model, "adamw", 1e-3, (0.9, 0.999), 0.05, sparse_ngrams=sparse_ngrams)
        lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
        assert all(lrs[i] == pytest.approx(0.1) for i in wide_ids)
        assert lrs[id(model.ngram_bag.bag.weight)] == 1e-3 and lrs[id(model.text_proj.weight)] == 1e-3
    with pytest.raises(ValueError, match="wide_lr_scale"):
        get_model_config("teacher_tiny", wide_lr_scale=0.0)
    # wide_adam_beta2: the wide tables' own Adam beta2 (a group of their own), sparse or dense; the rest keep
    # the optimizer's betas, and a SparseAdam step of a table uses it
    own = tiny(wide_ngram_heads=True, wide_adam_beta2=0.999).train()
    own_ids = {id(own.hashtag_wide.bag.weight), id(own.query_wide.bag.weight)}
    for sparse_ngrams in (True, False):
        opt = build_optimizer(own, "adamw", 1e-3, (0.9, 0.98), 0.05, sparse_ngrams=sparse_ngrams)
        groups = {id(p): g for g in opt.param_groups for p in g["params"]}
        assert all(groups[i]["betas"] == (0.9, 0.999) and groups[i]["lr"] == pytest.approx(0.1) for i in own_ids)
        assert groups[id(own.ngram_bag.bag.weight)]["betas"] == (0.9, 0.98)
        assert groups[id(own.text_proj.weight)]["betas"] == (0.9, 0.98)
    table, t = own.hashtag_wide, 301
    for beta2 in (0.999, None):
        # a row seen for the first time at step t moves by Adam's first step there:
        # lr (1 - b1) / (1 - b1^t) / sqrt((1 - b2) / (1 - b2^t)), the bias corrections at the table's step count
        table.adam_beta2 = beta2
        b2 = beta2 or 0.98
        want = 0.1 * 0.1 / (1 - 0.9 ** t) / ((1 - b2) / (1 - b2 ** t)) ** 0.5
        opt = build_optimizer(own, "adamw", 1e-3, (0.9, 0.98), 0.05)
        table.bag.weight.data.zero_()
        seen = torch.full((1, 4), 7, dtype=torch.long)  # (1, G): bucket 6 only
        for step in range(1, t + 1):
            opt.zero_grad()
            table(seen if step == t else seen * 0 + 3)[0].sum().backward()  # bucket 2 until step t
            opt.step()
        assert -table.bag.weight[7, 0].item() == pytest.approx(want, rel=1e-3)
    with pytest.raises(ValueError, match="wide_adam_beta2"):
        get_model_config("teacher_tiny", wide_adam_beta2=1.0)
    assert tiny(wide_ngram_heads=True, hashtag_head=False).hashtag_wide is None
    no_buckets = create_model("teacher_tiny", **{"text": {"vocab_size": VOCAB, "ngram_buckets": 0},
                                                 "heads": {"num_hashtags": H}, "wide_ngram_heads": True})
    assert no_buckets.hashtag_wide is None  # no hashed n-grams: no wide part


@pytest.mark.parametrize("fusion", ["multiscale", "none"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_heads_read_clean_text_and_keyword_head_masked_text(fusion, mode):
    """The keyword logits read the masked text: changing the clean text at the masked positions leaves
    them unchanged (without fusion too). The label heads and the multimodal embedding read the clean
    text, in training as in evaluation: the same change moves them (they once read the masked text
    while training and the clean text when evaluated)."""
    model = tiny(use_fusion=fusion, heads={"num_hashtags": H, "num_queries": Q})
    model.train(mode == "train")
    for m in model.modules():  # deterministic in training mode too
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    batch = teacher_batch(b=3)
    kw = _keywords(batch)
    other = dict(batch, text_ids=torch.where(kw["keyword_positions"], torch.randint(5, VOCAB, batch["text_ids"].shape),
                                             batch["text_ids"]))
    assert not torch.equal(other["text_ids"], batch["text_ids"])
    with torch.no_grad():
        a, b = model(batch, **kw), model(other, **kw)
        plain = model(batch)  # no keyword pass: what evaluation and export compute
    torch.testing.assert_close(a["keyword_logits"], b["keyword_logits"])
    for key in ("hashtag_logits", "query_logits", "multimodal", "text"):
        assert not torch.allclose(a[key], b[key]), key  # they read the clean text
        torch.testing.assert_close(a[key], plain[key])  # ... the same with or without the keyword pass


def test_label_buffers_travel_with_the_state_dict():
    model = tiny()
    fresh = create_model("teacher_tiny", text={"vocab_size": VOCAB, "ngram_buckets": NB},
                         heads={"num_hashtags": H, "num_queries": Q})  # placeholder labels
    assert fresh.hashtag_branch.edge_index.shape[1] == 0
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh.hashtag_branch.edge_index, model.hashtag_branch.edge_index)
    torch.testing.assert_close(fresh.hashtag_branch.name_ids, model.hashtag_branch.name_ids)


# ----------------------------------------------------------------------------- the LightningModule


def _loader(n: int, seed: int = 0) -> DataLoader:
    batches = []
    for i in range(n):
        batch = teacher_batch(b=6, seed=seed + i)
        batch["video_mask"][1] = False
        batch["frames"][1] = 0
        batches.append(batch)
    return DataLoader(batches, batch_size=None, shuffle=False)


def _module(**kwargs) -> EmbeddingModule:
    pl.seed_everything(0)
    return EmbeddingModule(**{"preset": "teacher_tiny", "vocab_size": VOCAB, "num_hashtags": H, "num_queries": Q,
                            "ngram_buckets": NB, "lr": 1e-3, "warmup_fraction": 0.25, **kwargs})


def _trainer(tmp_path, **kwargs) -> pl.Trainer:
    defaults = dict(default_root_dir=tmp_path, accelerator="cpu", devices=1, log_every_n_steps=1,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, logger=False,
                    enable_checkpointing=False)
    return pl.Trainer(**{**defaults, **kwargs})


def test_module_fits_validates_predicts_and_reloads(tmp_path):
    module = _module()
    trainer = _trainer(tmp_path, max_epochs=1, logger=pl.loggers.CSVLogger(tmp_path, name=""))
    trainer.fit(module, train_dataloaders=_loader(2), val_dataloaders=_loader(1, seed=10))
    m = trainer.callback_metrics
    for key in ("train/loss", "train/clip_v2t", "train/clip_t2v", "train/simclr", "train/hashtag_bce",
                "train/query_bce", "train/keyword", "train/text_weight_ngram", "val/t2v_r1_category", "val/hashtag_map", "val/hashtag_p1",
                "val/hashtag_r5", "val/loss"):
        assert key in m, key
        assert torch.isfinite(m[key]), key
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["hyper_parameters"]["preset"] == "teacher_tiny"
    rebuilt = EmbeddingModule.from_checkpoint_weights(str(path)).eval()
    module.eval()
    batch = teacher_batch(b=3, seed=99)
    with torch.no_grad():
        for key in ("video", "text", "multimodal", "hashtag_logits"):
            torch.testing.assert_close(rebuilt(batch)[key], module(batch)[key])
    preds = trainer.predict(module, dataloaders=_loader(1, seed=20))
    assert preds[0]["ids"] == [f"v{i}" for i in range(6)] and preds[0]["video"].shape == (6, 64)
    assert preds[0]["hashtag_scores"].shape == (6, H)


def test_module_reads_the_workers_keyword_positions():
    """A batch with ``keyword_positions`` (chosen in the loader workers) gives the loss the main-process
    selection gives, and the module then runs no selection of its own."""
    from mmemb.lit import module as lit_module
    from mmemb.models.keywords import select_keywords

    module = _module().eval()
    batch = teacher_batch(b=4)
    positions, _, _ = select_keywords(batch["text_ids"], batch["text_attention"], module.keyword_idf,
                                      module._tokenizer, module.keyword_cfg)
    assert positions.any()
    with torch.no_grad():
        _, here = module._losses(batch)
        calls = []
        original = lit_module.select_keywords
        lit_module.select_keywords = lambda *a, **k: calls.append(1) or original(*a, **k)
        try:
            _, workers = module._losses(dict(batch, keyword_positions=positions))
        finally:
            lit_module.select_keywords = original
    assert not calls
    torch.testing.assert_close(workers["keyword"], here["keyword"])
    other = positions.clone()
    other[:, 1:4] = True  # other positions: another keyword loss
    with torch.no_grad():
        _, moved = module._losses(dict(batch, keyword_positions=other))
    assert not torch.allclose(moved["keyword"], here["keyword"])


@pytest.mark.parametrize("refresh_steps", [1, 3])
def test_label_name_encodings_are_refreshed_every_k_steps(refresh_steps):
    """With ``heads.label_refresh_steps = k`` the text tower encodes the label names on every k-th step
    only; in between the heads reuse a detached copy. Evaluation always encodes them afresh."""
    module = _module(overrides={"heads": {"label_refresh_steps": refresh_steps}}, loss_weights={"hashtag_bce": 1.0})
    model = module.model.train()
    model.set_label_inputs(hashtags=label_inputs(H))  # distinct names (not the placeholders)
    branch = model.hashtag_branch
    calls = []
    hook = model.text.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    names = branch.name_ids.shape[0]
    optim = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(4):
        calls.clear()
        optim.zero_grad()
        out = model(teacher_batch(b=4, seed=step), refresh_labels=step % refresh_steps == 0)
        out["hashtag_logits"].sigmoid().mean().backward()
        assert (names in calls) == (step % refresh_steps == 0), (step, calls)
        optim.step()
    assert not branch._name_cache.requires_grad  # the reused copy carries no gradient into the text tower
    model.eval()
    calls.clear()
    with torch.no_grad():
        fresh = branch.label_embeddings(model.text, refresh=False)
    assert names in calls  # evaluation encodes the names anyway
    model.train()
    with torch.no_grad():
        stale = branch.label_embeddings(model.text, refresh=False)
    assert not torch.allclose(fresh, stale)  # the cache holds encodings from before the last optimizer step
    hook.remove()
    with pytest.raises(ValueError, match="label_refresh_steps"):
        get_model_config("teacher_tiny", heads={"label_refresh_steps": 0})


# ----------------------------------------------------------------------------- the CLI on the demo corpus


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_teacher_tiny_config_fast_dev_run(small_demo, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py"])
    train = _script("train")
    args = ["fit", "--config", str(REPO / "configs" / "teacher_tiny.yaml"), "--data.manifest", str(small_demo),
            "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--trainer.fast_dev_run=true", "--data.batch_size=8", "--data.num_workers=0"]
    cli = train.main(args)
    assert isinstance(cli.model, EmbeddingModule)
    assert cli.model.config.text.vocab_size == cli.datamodule.vocab_size
    assert cli.model.config.heads.num_hashtags == cli.datamodule.num_hashtags
    assert cli.model.config.heads.num_queries == cli.datamodule.num_queries
    assert cli.model.config.text.ngram_buckets == cli.datamodule.ngram_buckets == 4096  # teacher_tiny.yaml
    assert cli.model.model.ngram_bag.num_buckets == 4096
    assert cli.trainer.global_step == 1
    metrics = cli.trainer.callback_metrics
    assert {"train/loss", "train/clip_v2t", "train/keyword", "val/t2v_r1_category"} <= set(metrics)
    if cli.datamodule.num_hashtags:
        assert "train/hashtag_bce" in metrics
        names = cli.model.model.hashtag_branch.name_ids
        assert names.shape[0] == cli.datamodule.num_hashtags and names[:, 0].eq(2).all()  # [CLS] name ...
    assert cli.model.keyword_idf.max() > 1.0  # learned from the train texts


def test_the_cli_reads_the_preset_however_it_is_given(small_demo, tmp_path, monkeypatch):
    """One LightningModule for every preset, nothing sniffed from argv or YAML: the preset in a config
    file, in a ``--model`` file or as ``--model.preset`` builds the same class with that preset."""
    from mmemb.lit.cli import main

    monkeypatch.chdir(tmp_path)
    model_file = tmp_path / "model.yaml"
    model_file.write_text("preset: two_tower_tiny\nloss_weights: {clip_v2t: 0.5, clip_t2v: 0.5}\n")
    base = ["--config", str(REPO / "configs" / "teacher_tiny.yaml"), "--data.manifest", str(small_demo),
            "--data.num_workers", "0", "--trainer.default_root_dir", str(tmp_path / "run")]
    for extra, preset in (([], "teacher_tiny"), (["--model", str(model_file)], "two_tower_tiny"),
                          (["--model.preset", "two_tower_tiny"], "two_tower_tiny")):
        cli = main(base + extra, run=False)
        assert type(cli.model) is EmbeddingModule and cli.model.hparams.preset == preset
        assert cli.model.config.text.vocab_size == cli.datamodule.vocab_size  # linked from the data




def test_fit_with_the_data_module_trains_on_worker_chosen_keywords(small_demo, tmp_path):
    """In a fit with the real data module, the module's setup switches keyword selection on in the
    loaders: every training batch arrives with ``keyword_positions``."""
    from mmemb.data.datamodule import VideoDataModule
    from mmemb.data.decode import DecodeConfig
    from mmemb.data.vocab import LabelConfig, TextConfig

    dm = VideoDataModule(manifest=str(small_demo), batch_size=4, num_workers=0,
                         decode=DecodeConfig(num_frames=2, frame_size=32, audio_seconds=1.0),
                         text=TextConfig(max_length=24, vocab_size=500), labels=LabelConfig(hashtag_min_freq=2))
    dm.prepare_data()
    dm.setup("fit")
    module = EmbeddingModule(preset="teacher_tiny", vocab_size=dm.vocab_size, num_hashtags=dm.num_hashtags,
                             num_queries=dm.num_queries)
    seen = []

    class Keys(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch.get("keyword_positions"))

    _trainer(tmp_path, fast_dev_run=2, callbacks=[Keys()]).fit(module, datamodule=dm)
    assert len(seen) == 2 and all(p is not None and p.dtype == torch.bool for p in seen)
    assert any(p.any() for p in seen)


def test_ngram_bag_l2_sublinear_pooling_is_sublinear_tf_at_unit_norm():
    """``pooling="l2_sublinear"``: each distinct bucket weighs 1 + ln(count), the row's weights have unit L2
    norm (TF-IDF's sublinear-tf features without the IDF); padding is left out, also where its row is not
    zero and in the exported form (a gather and a weighted sum); an empty row is zeros."""
    import math

    from mmemb.models.ngram import NgramBag, sublinear_l2_weights

    torch.manual_seed(0)
    bag = NgramBag(num_buckets=7, width=4, pooling="l2_sublinear")
    with torch.no_grad():
        bag.bag.weight[0] = 5.0
    w = bag.bag.weight.detach()
    ids = torch.tensor([[1, 2, 2, 0], [0, 0, 0, 0], [3, 3, 3, 3], [4, 5, 6, 7]])
    vec, ok = bag(ids)
    tf2 = 1 + math.log(2)
    torch.testing.assert_close(vec[0], (w[1] + tf2 * w[2]) / math.sqrt(1 + tf2 ** 2))
    torch.testing.assert_close(vec[2], w[3])  # one distinct bucket: weight 1 whatever its count
    torch.testing.assert_close(vec[3], w[4:8].sum(0) / 2)
    assert torch.all(vec[1] == 0) and ok.tolist() == [True, False, True, True]
    weights = sublinear_l2_weights(ids)
    assert torch.all(weights[ids == 0] == 0)
    per_bucket = torch.zeros(4, 8).scatter_add_(1, ids, weights)[:, 1:]  # (B, buckets): each distinct id's weight
    torch.testing.assert_close(per_bucket.norm(dim=1), torch.tensor([1.0, 0.0, 1.0, 1.0]))
    torch.testing.assert_close((bag.bag.weight[ids] * weights.unsqueeze(-1)).sum(1), vec)  # the exported form
    with pytest.raises(ValueError, match="pooling"):
        NgramBag(num_buckets=7, width=4, pooling="max")
    with pytest.raises(ValueError, match="wide_pooling"):
        get_model_config("teacher_tiny", wide_pooling="max")
    wide = tiny(wide_ngram_heads=True, wide_pooling="l2_sublinear")
    assert wide.hashtag_wide.pooling == "l2_sublinear" and wide.ngram_bag.pooling == "mean"


def test_wide_bias_is_an_intercept_at_the_wide_learning_rate():
    """``wide_bias``: each wide part adds a per-label intercept to every row (also rows without n-grams),
    zero at the start; it trains in the wide part's learning-rate group (dense: it is touched every step)."""
    from mmemb.lit.optim import build_optimizer, sparse_parameters
    from mmemb.models.ngram import NgramBag

    bag = NgramBag(num_buckets=7, width=3, bias=True)
    assert torch.all(bag.bias == 0) and NgramBag(num_buckets=7, width=3).bias is None
    with torch.no_grad():
        bag.bias.copy_(torch.tensor([1.0, -2.0, 0.5]))
    ids = torch.tensor([[1, 2, 0], [0, 0, 0]])
    vec, ok = bag(ids)
    torch.testing.assert_close(vec[1], bag.bias.detach())  # no n-grams: the intercept alone
    torch.testing.assert_close(vec[0], (bag.bag.weight[1] + bag.bag.weight[2]).detach() / 2 + bag.bias.detach())
    model = tiny(wide_ngram_heads=True, wide_bias=True)
    assert model.hashtag_wide.bias.shape == (H,) and tiny(wide_ngram_heads=True).hashtag_wide.bias is None
    opt = build_optimizer(model.train(), "adamw", 1e-3, (0.9, 0.999), 0.05)
    groups = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert groups[id(model.hashtag_wide.bias)]["lr"] == pytest.approx(0.1)
    assert groups[id(model.hashtag_wide.bias)]["weight_decay"] == 0.0
    assert id(model.hashtag_wide.bias) not in {id(p) for p in sparse_parameters(model)}
