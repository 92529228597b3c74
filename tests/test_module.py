"""The one LightningModule (mmemb.lit.module): augmentation seeds per rank and micro-batch, and
checkpoints of earlier versions (TeacherModule, PretrainModule) that still load (mmemb.models.checkpoint)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from test_models import synthetic_batch
from torch.utils.data import DataLoader

from mmemb.lit import module as lit_module
from mmemb.lit.module import EmbeddingModule, augment_generator

VOCAB = 300
H, Q = 10, 6
CLIP_SIMCLR = {"clip_v2t": 0.5, "clip_t2v": 0.5, "simclr": 0.5}
TWO_VIEWS = lit_module.two_views


# ----------------------------------------------------------------------------- augmentation seeds


def _draw(g: torch.Generator) -> float:
    return torch.rand(1, generator=g).item()


def test_augment_generator_depends_on_every_part_of_its_key():
    key = (3, 0, 5, 0)
    assert _draw(augment_generator(*key)) == _draw(augment_generator(*key))  # reproducible (resume)
    draws = {_draw(augment_generator(*k)) for k in [key, (4, 0, 5, 0), (3, 1, 5, 0), (3, 0, 6, 0), (3, 0, 5, 1)]}
    assert len(draws) == 5


def _seeds_of_a_run(tmp_path, monkeypatch, rank: int, accumulate: int, batches: int = 4) -> list[float]:
    """The first draw of the augmentation generator of every training micro-batch."""
    draws: list[float] = []

    def spy(batch, cfg, generator):
        copy = torch.Generator()
        copy.set_state(generator.get_state())  # the draw of a copy leaves the views as they are
        draws.append(_draw(copy))
        return TWO_VIEWS(batch, cfg, generator)

    monkeypatch.setattr(lit_module, "two_views", spy)
    monkeypatch.setattr(EmbeddingModule, "global_rank", property(lambda self: rank))
    pl.seed_everything(0)
    module = EmbeddingModule(preset="two_tower_tiny", vocab_size=VOCAB, loss_weights=CLIP_SIMCLR, lr=1e-3)
    loader = DataLoader([synthetic_batch(b=4, seed=i) for i in range(batches)], batch_size=None)
    trainer = pl.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accumulate_grad_batches=accumulate)
    trainer.fit(module, train_dataloaders=loader)
    assert trainer.global_step == batches // accumulate
    return draws


def test_every_micro_batch_and_every_rank_draws_its_own_views(tmp_path, monkeypatch):
    """Seeded by (seed, global step) alone, the two micro-batches of one accumulated step drew the same
    views, and so did every DDP rank at the same step."""
    rank0 = _seeds_of_a_run(tmp_path / "r0", monkeypatch, rank=0, accumulate=2)
    assert len(rank0) == 4 and len(set(rank0)) == 4  # 2 steps x 2 micro-batches
    rank1 = _seeds_of_a_run(tmp_path / "r1", monkeypatch, rank=1, accumulate=2)
    assert set(rank0).isdisjoint(rank1)
    again = _seeds_of_a_run(tmp_path / "again", monkeypatch, rank=0, accumulate=2)
    assert again == rank0  # the same run draws the same views (a resumed run as well: tests/test_resume.py)


# ----------------------------------------------------------------------------- checkpoints of earlier versions


def _teacher_batch(b: int = 3, seed: int = 0) -> dict:
    batch = synthetic_batch(b=b, t=2, size=32, length=12, vocab=VOCAB, n_mels=64, mel_frames=40, num_hashtags=H,
                            seed=seed)
    batch["frames"] = (torch.rand(batch["frames"].shape, generator=torch.Generator().manual_seed(seed)) * 255
                       ).to(torch.uint8)
    return batch


def _outputs(module: EmbeddingModule, batch: dict) -> dict[str, torch.Tensor]:
    module.eval()
    with torch.no_grad():
        out = module(batch)
    return {k: v for k, v in out.items() if torch.is_tensor(v)}


def test_a_teacher_checkpoint_of_the_flat_config_loads(tmp_path):
    """TeacherModule wrote ``preset: teacher_*`` with the tower fields flat in ``overrides``, and a
    channel attention over the one visual channel of a model without audio."""
    pl.seed_everything(0)
    new = EmbeddingModule(preset="teacher_tiny", vocab_size=VOCAB, num_hashtags=H, num_queries=Q,
                          overrides={"use_audio": False, "vision": {"fusion_tokens": "all"},
                                     "heads": {"gcn_hidden": 32}, "text": {"dropout": 0.1}})
    state = dict(new.state_dict())
    state["model.video_attention.score.0.weight"] = torch.randn(64, 64)  # the old one-channel attention
    state["model.video_attention.score.0.bias"] = torch.zeros(64)
    state["model.video_attention.score.2.weight"] = torch.randn(1, 64)
    state["model.video_attention.channel_bias"] = torch.zeros(1)
    hparams = {**{k: v for k, v in new.hparams.items() if k != "overrides"},
               "overrides": {"use_audio": False, "fusion_visual_tokens": "all", "gcn_hidden": 32,
                             "text_dropout": 0.1, "vision_pretrained_path": str(tmp_path / "gone.safetensors")}}
    path = tmp_path / "teacher.ckpt"
    torch.save({"hyper_parameters": hparams, "state_dict": state}, path)

    loaded = EmbeddingModule.from_checkpoint_weights(str(path))
    assert loaded.hparams.preset == "teacher_tiny"
    assert loaded.hparams.overrides == {"use_audio": False, "vision": {"fusion_tokens": "all"},
                                        "heads": {"gcn_hidden": 32}, "text": {"dropout": 0.1}}
    batch = _teacher_batch()
    want, got = _outputs(new, batch), _outputs(loaded, batch)
    assert set(got) == set(want) and "hashtag_logits" in got
    for key in want:
        torch.testing.assert_close(got[key], want[key], msg=key)


def test_a_student_small_checkpoint_of_the_attention_pooling_loads_as_trained(tmp_path):
    """student_small attention-pooled its frames until 2026-12-03; the preset now takes their mean."""
    pl.seed_everything(0)
    old = EmbeddingModule(preset="student_small", vocab_size=VOCAB, num_hashtags=H, num_queries=Q,
                          overrides={"vision": {"temporal_pool": "attention"}})
    hparams = {**{k: v for k, v in old.hparams.items() if k != "overrides"}, "overrides": None}
    path = tmp_path / "student.ckpt"
    torch.save({"hyper_parameters": hparams, "state_dict": old.state_dict()}, path)
    loaded = EmbeddingModule.from_checkpoint_weights(str(path))
    assert loaded.config.vision.temporal_pool == "attention"
    batch = synthetic_batch(b=2, t=2, size=64, length=12, vocab=VOCAB, n_mels=64, mel_frames=40, num_hashtags=H,
                            seed=0)
    old.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.encode_video(batch), old.model.encode_video(batch))
    # a checkpoint of today's preset (no attention weights) keeps the mean
    new = EmbeddingModule(preset="student_small", vocab_size=VOCAB, num_hashtags=H, num_queries=Q)
    torch.save({"hyper_parameters": dict(new.hparams), "state_dict": new.state_dict()}, path)
    assert EmbeddingModule.from_checkpoint_weights(str(path)).config.vision.temporal_pool == "mean"


def _old_two_tower_checkpoint(tmp_path, **hparams) -> tuple[EmbeddingModule, str]:
    """A PretrainModule checkpoint: preset ``tiny``, bias-free ``video_proj``/``text_proj``, no keyword IDF.
    Built from a two-tower module with zero projection biases, so that both must embed alike."""
    pl.seed_everything(0)
    new = EmbeddingModule(preset="two_tower_tiny", vocab_size=VOCAB, num_hashtags=3,
                          overrides={"embed_dim": 32}, loss_weights={"clip_v2t": 0.5, "clip_t2v": 0.5})
    with torch.no_grad():
        new.model.visual_proj.bias.zero_()
        new.model.text_proj.bias.zero_()
    state = {k: v for k, v in new.state_dict().items()
             if k not in ("keyword_idf", "model.visual_proj.bias", "model.text_proj.bias")}
    state["model.video_proj.weight"] = state.pop("model.visual_proj.weight")
    old = {"preset": "tiny", "vocab_size": VOCAB, "overrides": {"embed_dim": 32, "text_pool": "mean"}, "lr": 1e-3,
           "weight_decay": 0.05, "betas": (0.9, 0.98), "warmup_fraction": 0.05, "min_lr_ratio": 0.0,
           "loss_weights": None, "num_hashtags": 3, **hparams}
    path = tmp_path / "pretrain.ckpt"
    torch.save({"hyper_parameters": old, "state_dict": state}, path)
    return new, str(path)


def test_a_first_model_checkpoint_loads_as_the_two_tower_preset(tmp_path):
    new, path = _old_two_tower_checkpoint(tmp_path)
    loaded = EmbeddingModule.from_checkpoint_weights(path)
    assert loaded.hparams.preset == "two_tower_tiny"
    assert loaded.loss_weights == {"clip_v2t": 0.5, "clip_t2v": 0.5}  # the first model's loss
    assert torch.equal(loaded.hashtag_name_ids, new.hashtag_name_ids)
    batch = synthetic_batch(b=4)
    want, got = _outputs(new, batch), _outputs(loaded, batch)
    for key in ("video", "text", "video_mask"):
        torch.testing.assert_close(got[key], want[key], msg=key)


def test_a_first_model_variant_without_equivalent_fails_with_the_way_out(tmp_path):
    _, path = _old_two_tower_checkpoint(tmp_path, overrides={"vision_pool": "avg"})
    with pytest.raises(ValueError, match=r"vision_pool='avg'.*retrain it with the two_tower preset"):
        EmbeddingModule.from_checkpoint_weights(path)


def test_label_weighting_picks_the_label_loss():
    """``softmax`` weights (per-video target distributions) train the heads with soft-target cross-entropy
    (``hashtag_ce``), the others with weighted BCE (``hashtag_bce``); a weight for the wrong term only is
    an error that names the missing one."""
    from test_models import synthetic_batch

    batch = synthetic_batch(b=4, num_hashtags=6, n_mels=64, seed=0)
    batch["hashtag_targets"][:, 0] = 1.0  # every row labelled
    for weighting, term, absent in (("softmax", "hashtag_ce", "hashtag_bce"), ("bce_global", "hashtag_bce", "hashtag_ce")):
        module = EmbeddingModule(preset="teacher_tiny", vocab_size=300, num_hashtags=6, label_weighting=weighting,
                                 loss_weights={"hashtag_bce": 1.0, "hashtag_ce": 1.0})
        _, terms = module._losses(batch)
        assert term in terms and absent not in terms
    with pytest.raises(KeyError, match="add hashtag_ce"):
        EmbeddingModule(preset="teacher_tiny", vocab_size=300, num_hashtags=6, label_weighting="softmax",
                        loss_weights={"hashtag_bce": 1.0})


def test_wide_bce_trains_the_wide_part_alone_and_the_head_term_the_deep_head():
    """``wide_loss="bce"``: the term ``hashtag_wide_bce`` is plain BCE of the wide scores alone (every label and
    row weighs 1); the head's term then sends no gradient into the wide table; with ``wide_loss="head"`` there
    is no wide term and the head's term trains the wide part (the head's logits are deep + wide either way)."""
    from test_models import synthetic_batch

    batch = synthetic_batch(b=4, num_hashtags=6, n_mels=64, seed=0)
    batch["hashtag_targets"][:, 0] = 1.0
    batch["hashtag_targets"][3] = 0.0  # an unlabelled row: all negatives for the wide term
    module = EmbeddingModule(preset="teacher_tiny", vocab_size=300, num_hashtags=6, label_weighting="softmax",
                             ngram_buckets=50, loss_weights={"hashtag_ce": 1.0},
                             overrides={"wide_ngram_heads": True, "wide_pooling": "l2_sublinear", "wide_loss": "bce"})
    assert module.loss_weights["hashtag_wide_bce"] == 1.0  # not named: on at weight 1
    batch["text_ngrams"] = torch.randint(1, 51, (4, 7), generator=torch.Generator().manual_seed(0))
    table = module.model.hashtag_wide.bag.weight
    with torch.no_grad():
        table.normal_()
    out, terms = module._losses(batch)
    assert set(terms) >= {"hashtag_ce", "hashtag_wide_bce"}
    wide = out["hashtag_wide_logits"]
    expected = torch.nn.functional.binary_cross_entropy_with_logits(wide, batch["hashtag_targets"])  # every row
    torch.testing.assert_close(terms["hashtag_wide_bce"], expected)
    head_grad = torch.autograd.grad(terms["hashtag_ce"], table, allow_unused=True, retain_graph=True)[0]
    assert head_grad is None or head_grad.abs().sum() == 0  # the head's term leaves the wide part alone
    assert torch.autograd.grad(terms["hashtag_wide_bce"], table, retain_graph=True)[0].abs().sum() > 0
    deep_param = next(module.model.hashtag_branch.parameters())
    assert torch.autograd.grad(terms["hashtag_ce"], deep_param)[0].abs().sum() > 0
    without = EmbeddingModule(preset="teacher_tiny", vocab_size=300, num_hashtags=6, label_weighting="softmax",
                              ngram_buckets=50, loss_weights={"hashtag_ce": 1.0, "hashtag_wide_bce": 1.0},
                              overrides={"wide_ngram_heads": True})
    _, terms = without._losses(batch)
    assert "hashtag_wide_bce" not in terms
    with torch.no_grad():
        without.model.hashtag_wide.bag.weight.normal_()
    _, terms = without._losses(batch)
    assert torch.autograd.grad(terms["hashtag_ce"], without.model.hashtag_wide.bag.weight)[0].abs().sum() > 0


def test_wide_fit_liblinear_freezes_the_wide_part_and_trains_the_head_on_out_of_fold_scores():
    """``wide_fit="liblinear"``: the wide part has no gradient and no term of its own; in training the head's
    logits carry each known row's out-of-fold wide scores (unknown ids keep the part's own); evaluation
    (no ``batch_idx``) keeps the fitted part's scores. A model without a wide part refuses the option."""
    batch = synthetic_batch(b=4, num_hashtags=6, n_mels=64, seed=0)
    batch["hashtag_targets"][:, 0] = 1.0
    batch["text_ngrams"] = torch.randint(1, 51, (4, 7), generator=torch.Generator().manual_seed(0))
    batch["ids"] = ["a", "b", "c", "zz"]
    module = EmbeddingModule(preset="teacher_tiny", vocab_size=300, num_hashtags=6, label_weighting="softmax",
                             ngram_buckets=50, loss_weights={"hashtag_ce": 1.0}, wide_fit="liblinear",
                             overrides={"wide_ngram_heads": True, "wide_pooling": "l2_sublinear", "wide_bias": True})
    wide = module.model.hashtag_wide
    assert not any(p.requires_grad for p in wide.parameters())
    assert module.loss_weights["hashtag_wide_bce"] == 0.0
    oof = torch.arange(18, dtype=torch.float32).reshape(3, 6)
    module._wide_oof["hashtag"] = ({"a": 0, "b": 1, "c": 2}, oof)
    out = module.model(batch)
    deep = out["hashtag_logits"] - out["hashtag_wide_logits"]
    mixed = module._out_of_fold("hashtag", out["hashtag_logits"], out["hashtag_wide_logits"], batch["ids"])
    torch.testing.assert_close(mixed[:3], deep[:3] + oof)
    torch.testing.assert_close(mixed[3], out["hashtag_logits"][3])  # not a fitted train row: its own scores
    _, terms = module._losses(batch, batch_idx=0)
    assert "hashtag_wide_bce" not in terms and "hashtag_ce" in terms
    deep_param = next(module.model.hashtag_branch.parameters())
    assert torch.autograd.grad(terms["hashtag_ce"], deep_param)[0].abs().sum() > 0
    with pytest.raises(ValueError, match="wide_fit='liblinear' fits the label heads' wide parts"):
        EmbeddingModule(preset="teacher_tiny", vocab_size=300, num_hashtags=6, ngram_buckets=50, wide_fit="liblinear")
    with pytest.raises(ValueError, match="wide_fit_folds"):
        EmbeddingModule(preset="teacher_tiny", vocab_size=300, num_hashtags=6, ngram_buckets=50, wide_fit_folds=1)
