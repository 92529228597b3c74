"""DistillModule: a student_tiny distilled from a teacher_tiny trained for a few steps on the small corpus."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

from mmemb.errors import ConfigError, InputError
from mmemb.lit.distill import DistillModule, TeacherStore
from mmemb.lit.module import EmbeddingModule

CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.precision=32-true"]
TINY_DATA = ["--data.batch_size=8", "--data.num_workers=0", "--data.decode.frame_size=32",
             "--data.decode.audio_seconds=1.0", "--data.text.max_length=48", "--data.text.ngram_buckets=4096",
             "--data.text.ngram_max_length=128"]
PLAIN = {"clip_v2t": 0.5, "clip_t2v": 0.5, "simclr": 0.0, "hashtag_bce": 1.0, "query_bce": 1.0}
DISTILL = {"distill_embed": 1.0, "distill_relation": 1.0, "distill_label": 1.0}


def _fit(args: list[str], run: bool = True):
    from mmemb.lit.cli import main

    return main(["fit", *args] if run else args, run=run)


@pytest.fixture(scope="module")
def teacher(small_demo, tmp_path_factory) -> Path:
    """A teacher_tiny run folder (vocab/, version_0/{config.yaml, checkpoints/}) after 3 training steps."""
    root = tmp_path_factory.mktemp("teacher")
    old = sys.argv
    sys.argv = ["train.py"]
    try:
        _fit(["--config", str(REPO / "configs" / "teacher_tiny.yaml"), "--data.manifest", str(small_demo),
              "--trainer.default_root_dir", str(root), "--trainer.max_steps=3", "--trainer.limit_val_batches=1",
              "--data.batch_size=8", "--data.num_workers=0", *CPU])
    finally:
        sys.argv = old
    return root


@pytest.fixture(scope="module")
def teacher_ckpt(teacher) -> Path:
    from mmemb.eval.loading import resolve_checkpoint

    return resolve_checkpoint(teacher)


@pytest.fixture(scope="module")
def teacher_run(teacher_ckpt):
    """The teacher's module and data module (with its vocabularies)."""
    from mmemb.eval.loading import load_run

    return load_run(teacher_ckpt, num_workers=0)


def _batch(run, split: str = "train") -> dict:
    from mmemb.eval.loading import split_loader

    return next(iter(split_loader(run.datamodule, split)))


def _student(run, weights: dict, **kwargs) -> DistillModule:
    dm = run.datamodule
    module = DistillModule(preset="student_tiny", vocab_size=dm.vocab_size, num_hashtags=dm.num_hashtags,
                           num_queries=dm.num_queries, ngram_buckets=dm.ngram_buckets, loss_weights=weights, **kwargs)
    module.set_vocabularies(dm.vocabs)
    return module


def _distill_args(small_demo, teacher, root, *extra) -> list[str]:
    return ["--config", str(REPO / "configs" / "distill.yaml"), "--model.preset=student_tiny",
            "--model.teacher_ckpt", str(teacher), "--data.manifest", str(small_demo), "--data.vocab_dir",
            str(teacher / "vocab"), "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar=false",
            *CPU, *TINY_DATA, *extra]


def test_online_distillation_freezes_the_teacher_logs_every_term_and_saves_a_student_checkpoint(
        small_demo, teacher, teacher_ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py"])
    cli = _fit(_distill_args(small_demo, teacher, tmp_path, "--trainer.max_steps=2", "--trainer.limit_val_batches=1",
                             "--trainer.log_every_n_steps=1", "--trainer.num_sanity_val_steps=0"))
    module = cli.model
    assert isinstance(module, DistillModule) and cli.trainer.global_step == 2
    t = module.teacher
    reference = EmbeddingModule.from_checkpoint_weights(str(teacher_ckpt))
    assert t.hparams.preset == "teacher_tiny"  # its own hyper-parameters, not the student's the CLI gave
    # frozen: evaluation mode, no gradient, unchanged, outside the module tree and the optimizer
    assert not t.training and not any(m.training for m in t.modules())
    assert all(not p.requires_grad and p.grad is None for p in t.parameters())
    for (name, p), q in zip(t.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(p, q), name
    teacher_ids = {id(p) for p in t.parameters()}
    assert not teacher_ids & {id(p) for p in module.parameters()}
    optimized = {id(p) for group in cli.trainer.optimizers[0].param_groups for p in group["params"]}
    assert not teacher_ids & optimized
    assert {id(p) for p in module.distill_proj.parameters()} <= optimized  # widths 32 -> 64: projected
    # every term logged, each with its weight
    metrics = cli.trainer.callback_metrics
    assert {"train/distill_embed", "train/distill_relation", "train/distill_label", "train/clip_v2t",
            "train/hashtag_bce"} <= set(metrics)
    assert all(torch.isfinite(metrics[k]) for k in metrics if k.startswith("train/distill"))
    # the checkpoint is the student's: an EmbeddingModule checkpoint with no teacher weight
    ckpt = next((tmp_path / "version_0" / "checkpoints").glob("last.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert all(k.startswith("model.") or "." not in k for k in state["state_dict"]), sorted(state["state_dict"])[:5]
    assert state["distill"]["hyper_parameters"]["teacher_ckpt"] == str(teacher)
    assert set(state["distill"]["state_dict"]) == {f"distill_proj.{n}.{w}" for n in ("video", "text", "multimodal")
                                                  for w in ("weight", "bias")}
    student = EmbeddingModule.from_checkpoint_weights(str(ckpt))
    assert type(student) is EmbeddingModule and student.hparams.preset == "student_tiny"
    assert "distill_embed" not in student.loss_weights
    assert student.config.embed_dim == 32 and student.model.audio is None


def test_zero_distillation_weights_train_the_plain_student(teacher_run, teacher_ckpt):
    batch = _batch(teacher_run)
    torch.manual_seed(0)
    off = _student(teacher_run, {**PLAIN, **{k: 0.0 for k in DISTILL}}, teacher_ckpt=str(teacher_ckpt))
    torch.manual_seed(0)
    hp = off.hparams
    plain = EmbeddingModule(preset="student_tiny", vocab_size=hp.vocab_size, num_hashtags=hp.num_hashtags,
                            num_queries=hp.num_queries, ngram_buckets=hp.ngram_buckets, loss_weights=PLAIN)
    plain.set_vocabularies(teacher_run.datamodule.vocabs)
    assert off.teacher is None and off.distill_proj is None  # nothing of the teacher is loaded
    for a, b in zip(off.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)
    off.train(), plain.train()
    _, terms_off = off._losses(batch, batch_idx=0)
    _, terms_plain = plain._losses(batch, batch_idx=0)
    assert set(terms_off) == set(terms_plain) == {"clip_v2t", "clip_t2v", "hashtag_bce"}
    for k in terms_plain:
        assert torch.equal(terms_off[k], terms_plain[k]), k
    assert torch.equal(off._total(terms_off), plain._total(terms_plain))
    # with the weights on, the task terms stay the same and the distillation terms are added
    torch.manual_seed(0)
    on = _student(teacher_run, {**PLAIN, **DISTILL}, teacher_ckpt=str(teacher_ckpt)).train()
    _, terms_on = on._losses(batch, batch_idx=0)
    assert set(terms_on) == set(terms_plain) | set(DISTILL)
    for k in terms_plain:
        assert torch.allclose(terms_on[k], terms_plain[k]), k
    # evaluation steps compute no distillation term
    assert set(on.eval()._losses(batch)[1]) == set(terms_plain)


def test_offline_store_targets_equal_the_online_teacher(teacher_run, teacher_ckpt, tmp_path):
    from mmemb.eval.checkpoint import extract_checkpoint

    store = tmp_path / "store"
    extract_checkpoint(teacher_ckpt, store, split="train", num_workers=0, parquet=False, show_progress=False,
                       logits=True)
    online = _student(teacher_run, {**PLAIN, **DISTILL}, teacher_ckpt=str(teacher_ckpt))
    offline = _student(teacher_run, {**PLAIN, **DISTILL}, teacher_store=str(store))
    assert offline.teacher is None
    batch = _batch(teacher_run)  # evaluation-mode decode: what the store holds
    a, b = online._teacher_targets(batch), offline._teacher_targets(batch)
    keys = {"video", "text", "multimodal", "hashtag_logits", "video_mask", "text_mask", "multimodal_mask"}
    assert keys <= set(a) and keys <= set(b)
    for k in keys:
        if a[k].dtype == torch.bool:
            assert torch.equal(a[k], b[k]), k
        else:
            assert torch.allclose(a[k], b[k], atol=1e-5), (k, (a[k] - b[k]).abs().max())
    # and so do the terms on that batch (the same student and projections)
    offline.load_state_dict(online.state_dict())
    online.train(), offline.train()
    torch.manual_seed(0)
    out = online.model(batch)
    t_on = online._extra_terms(batch, out, 0)
    t_off = offline._extra_terms(batch, out, 0)
    for k in DISTILL:
        assert torch.allclose(t_on[k], t_off[k], atol=1e-5), k


def test_offline_errors_name_what_is_missing(teacher_run, teacher_ckpt, tmp_path):
    from types import SimpleNamespace

    from mmemb.data.decode import DecodeConfig
    from mmemb.eval.checkpoint import extract_checkpoint

    test_only = tmp_path / "test_store"
    extract_checkpoint(teacher_ckpt, test_only, split="test", num_workers=0, parquet=False, show_progress=False,
                       logits=True)
    store = TeacherStore(test_only)
    train_ids = [str(r.id) for r in teacher_run.datamodule.splits["train"]]
    with pytest.raises(InputError, match=rf"{len(train_ids)} of the {len(train_ids)} training videos .*e\.g\. id "
                                         rf"'{train_ids[0]}'.*--split train --logits"):
        store.check_ids(train_ids, "training videos")
    no_logits = tmp_path / "no_logits"
    extract_checkpoint(teacher_ckpt, no_logits, split="test", num_workers=0, parquet=False, show_progress=False)
    with pytest.raises(InputError, match="hashtag_logits.*--logits"):
        _student(teacher_run, {**PLAIN, **DISTILL}, teacher_store=str(no_logits))
    module = _student(teacher_run, {**PLAIN, "simclr": 0.5, **DISTILL}, teacher_store=str(test_only))
    with pytest.raises(ConfigError, match="augmentations must be off.*simclr 0.*train_jitter 0"):
        module._check_offline_data(SimpleNamespace(decode=DecodeConfig(train_jitter=0.5)))
    module.loss_weights["simclr"] = 0.0
    module._check_offline_data(SimpleNamespace(decode=DecodeConfig(train_jitter=0.0)))  # off: accepted
    with pytest.raises(ValueError, match="need a teacher"):
        _student(teacher_run, {**PLAIN, **DISTILL})


def test_vocabularies_must_be_the_teachers(teacher_run, teacher_ckpt):
    dm = teacher_run.datamodule
    with pytest.raises(ValueError, match=r"heads.num_hashtags \(data.num_hashtags\): student 3, teacher"):
        DistillModule(preset="student_tiny", vocab_size=dm.vocab_size, num_hashtags=3, ngram_buckets=dm.ngram_buckets,
                      loss_weights={**PLAIN, **DISTILL}, teacher_ckpt=str(teacher_ckpt))
    with pytest.raises(ValueError, match=r"text.vocab_size \(data.vocab_size\): student 77"):
        DistillModule(preset="student_tiny", vocab_size=77, num_hashtags=dm.num_hashtags,
                      ngram_buckets=dm.ngram_buckets, loss_weights={**PLAIN, **DISTILL}, teacher_ckpt=str(teacher_ckpt))
    module = _student(teacher_run, {**PLAIN, **DISTILL}, teacher_ckpt=str(teacher_ckpt))
    module._check_vocabularies(dm.vocabs)  # the teacher's own: accepted
    # the same sizes, the hashtags in another order: refused
    vocabs = dm.vocabs
    labels, counts = list(vocabs.hashtags.labels), list(vocabs.hashtags.counts)
    shuffled = dataclasses.replace(vocabs.hashtags, labels=labels[1:] + labels[:1], counts=counts[1:] + counts[:1])
    other = dataclasses.replace(vocabs, hashtags=shuffled)
    with pytest.raises(ConfigError, match="vocabularies differ from the teacher's.*--data.vocab_dir"):
        module._check_vocabularies(other)


def test_checkpoint_hooks_keep_the_student_loadable_and_the_projections_resumable(teacher_run, teacher_ckpt):
    module = _student(teacher_run, {**PLAIN, **DISTILL}, teacher_ckpt=str(teacher_ckpt))
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    assert not any(k.startswith("distill_proj") for k in checkpoint["state_dict"])
    hp = checkpoint["hyper_parameters"]
    assert "teacher_ckpt" not in hp and not set(hp["loss_weights"]) & set(DISTILL)
    plain = EmbeddingModule(**hp)  # what mmemb eval builds from the checkpoint
    plain.load_state_dict(checkpoint["state_dict"])
    # a resumed distillation gets its projections back
    torch.manual_seed(1)
    resumed = _student(teacher_run, {**PLAIN, **DISTILL}, teacher_ckpt=str(teacher_ckpt))
    assert not torch.equal(resumed.distill_proj["video"].weight, module.distill_proj["video"].weight)
    resumed.on_load_checkpoint(checkpoint)
    resumed.load_state_dict(checkpoint["state_dict"])
    assert torch.equal(resumed.distill_proj["video"].weight, module.distill_proj["video"].weight)


def test_teacher_init_copies_the_matching_teacher_weights_when_training_starts(teacher_run, teacher_ckpt):
    from types import SimpleNamespace

    from mmemb.models.checkpoint import read_checkpoint

    dm = teacher_run.datamodule
    wide = {"text": {"width": 64}, "embed_dim": 64, "heads": {"gcn_hidden": 64}}  # teacher_tiny's text side
    torch.manual_seed(0)
    module = _student(teacher_run, {**PLAIN, **DISTILL}, teacher_ckpt=str(teacher_ckpt), teacher_init=True,
                      overrides=wide)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    _, state = read_checkpoint(str(teacher_ckpt))
    teacher = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    module._trainer = SimpleNamespace(datamodule=dm)  # what Lightning attaches before setup
    module.setup("fit")
    after = module.model.state_dict()
    copied = [k for k, v in after.items() if k in teacher and teacher[k].shape == v.shape]
    assert any(k.startswith("text.") for k in copied) and any(k.startswith("hashtag_branch.") for k in copied)
    for k in copied:
        assert torch.equal(after[k], teacher[k]), k
    kept = [k for k in after if k not in copied]
    assert any(k.startswith("visual.") for k in kept)  # width 32 against the teacher's 64: left as initialised
    for k in kept:
        assert torch.equal(after[k], before[k]), k
    # off (the default): nothing copied
    torch.manual_seed(0)
    plain = _student(teacher_run, {**PLAIN, **DISTILL}, teacher_ckpt=str(teacher_ckpt), overrides=wide)
    plain._trainer = SimpleNamespace(datamodule=dm)
    plain.setup("fit")
    assert all(torch.equal(v, before[k]) for k, v in plain.model.state_dict().items())
    with pytest.raises(ValueError, match="teacher_init copies the teacher checkpoint's weights.*--model.teacher_ckpt"):
        _student(teacher_run, {**PLAIN, **{k: 0.0 for k in DISTILL}}, teacher_init=True)
    with pytest.raises(ValueError, match="one of model.teacher_init .* and model.init_from"):
        _student(teacher_run, {**PLAIN, **DISTILL}, teacher_ckpt=str(teacher_ckpt), teacher_init=True,
                 init_from=str(teacher_ckpt))


def test_teacher_text_frozen_gives_the_teachers_text_embeddings_and_keeps_them(teacher_run, teacher_ckpt):
    from types import SimpleNamespace

    dm = teacher_run.datamodule
    wide = {"text": {"width": 64}, "embed_dim": 64, "heads": {"gcn_hidden": 64}}  # teacher_tiny's text side
    module = _student(teacher_run, {**PLAIN, **DISTILL}, teacher_ckpt=str(teacher_ckpt), teacher_text="frozen",
                      overrides=wide)
    tower = module.model.text_tower()
    assert set(tower) == {"text", "text_proj", "ngram_bag", "text_attention"}
    frozen = {id(p) for m in tower.values() for p in m.parameters()}
    assert all(not p.requires_grad for m in tower.values() for p in m.parameters())
    assert any(p.requires_grad for p in module.model.visual.parameters())
    module._trainer = SimpleNamespace(datamodule=dm)
    module.setup("fit")
    module.train()
    assert all(not m.training for t in tower.values() for m in t.modules())  # no dropout in the frozen tower
    assert module.model.visual.training
    batch = _batch(teacher_run, "val")
    with torch.no_grad():
        ours, theirs = module.model.encode_text(batch), teacher_run.module.model.encode_text(batch)
    assert torch.allclose(ours, theirs, atol=1e-6)
    # the optimizer holds none of the frozen parameters
    module._trainer = SimpleNamespace(datamodule=dm, estimated_stepping_batches=10)
    opt = module.configure_optimizers()["optimizer"]
    held = {id(p) for group in opt.param_groups for p in group["params"]}
    assert held and not held & frozen
    # "init": the same weights, trainable
    module = _student(teacher_run, {**PLAIN, **DISTILL}, teacher_ckpt=str(teacher_ckpt), teacher_text="init",
                      overrides=wide)
    module._trainer = SimpleNamespace(datamodule=dm)
    module.setup("fit")
    assert all(p.requires_grad for m in module.model.text_tower().values() for p in m.parameters())
    with torch.no_grad():
        assert torch.allclose(module.model.eval().encode_text(batch), theirs, atol=1e-6)


def test_teacher_text_errors_name_the_option(teacher_run, teacher_ckpt):
    from types import SimpleNamespace

    with pytest.raises(ValueError, match="teacher_text='frozen' copies .*--model.teacher_ckpt"):
        _student(teacher_run, {**PLAIN, **{k: 0.0 for k in DISTILL}}, teacher_text="frozen")
    with pytest.raises(ValueError, match="teacher_text='init' copies .*--model.teacher_ckpt CKPT .a teacher store "
                                         "holds the teacher's outputs, not its weights"):
        _student(teacher_run, {**PLAIN, **{k: 0.0 for k in DISTILL}}, teacher_text="init",
                 teacher_store=str(teacher_ckpt))
    with pytest.raises(ValueError, match="must be 'learn', 'init' or 'frozen'"):
        _student(teacher_run, {**PLAIN, **DISTILL}, teacher_ckpt=str(teacher_ckpt), teacher_text="copy")
    module = _student(teacher_run, {**PLAIN, **DISTILL}, teacher_ckpt=str(teacher_ckpt), teacher_text="init")
    module._trainer = SimpleNamespace(datamodule=teacher_run.datamodule)
    with pytest.raises(ConfigError, match="teacher_text: only .* text-tower tensors"):
        module.setup("fit")  # student_tiny's text tower is 32 wide, the teacher's 64
