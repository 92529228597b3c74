"""The model config, the registry and the two-tower presets of the one model: shapes, masks, gradients,
local weights. (The full model's parts: tests/test_teacher.py.)"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmemb.losses import DEFAULT_WEIGHTS, clip_infonce, total_loss
from mmemb.models import (HeadsConfig, ModelConfig, TextEncoderConfig, VisionConfig, create_model, get_model_config,
                          list_models)
from mmemb.models.fusion import FusionConfig

VOCAB = 300


def synthetic_batch(b: int = 4, t: int = 3, size: int = 32, length: int = 16, vocab: int = VOCAB,
                    n_mels: int = 16, mel_frames: int = 20, num_hashtags: int = 10, num_categories: int = 3,
                    seed: int = 0) -> dict:
    """A random batch following the DataModule's batch contract exactly (see mmemb/data/dataset.py)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, length + 1, (b,), generator=g)  # real tokens per sample
    positions = torch.arange(length)[None, :]  # (1, L)
    attention = (positions < lengths[:, None]).long()  # (B, L)
    text_ids = torch.randint(5, vocab, (b, length), generator=g) * attention
    text_ids[:, 0] = 2  # [CLS]
    field_ids = torch.randint(1, 5, (b, length), generator=g) * attention
    field_ids[:, 0] = 0
    hashtag_targets = (torch.rand(b, num_hashtags, generator=g) < 0.3).float()
    return {
        "ids": [f"v{i}" for i in range(b)],
        "frames": torch.randn(b, t, 3, size, size, generator=g),
        "video_mask": torch.ones(b, dtype=torch.bool),
        "mel": torch.randn(b, n_mels, mel_frames, generator=g),
        "audio_mask": torch.ones(b, dtype=torch.bool),
        "text_ids": text_ids,
        "text_attention": attention,
        "text_field_ids": field_ids,
        "text_mask": torch.ones(b, dtype=torch.bool),
        "hashtag_targets": hashtag_targets,
        "hashtag_weights": hashtag_targets * torch.rand(b, num_hashtags, generator=g),
        "category": torch.arange(b) % num_categories,
        "video_error": [None] * b,
        "audio_error": [None] * b,
    }


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("two_tower_tiny", text={"vocab_size": VOCAB}).eval()


def test_two_tower_preset_is_the_towers_alone(model):
    assert [name for name, _ in model.named_children()] == ["visual", "text", "visual_proj", "text_proj"]
    cfg = model.cfg
    assert not cfg.use_audio and cfg.use_fusion == "none" and not cfg.has_multimodal and not cfg.has_ngram_bag
    assert cfg.vision.temporal_pool == "mean"
    out = model(synthetic_batch())
    assert "multimodal" not in out and "hashtag_logits" not in out


def test_forward_shapes_and_unit_norm(model):
    batch = synthetic_batch()
    out = model(batch)
    d = model.cfg.embed_dim
    assert out["video"].shape == (4, d) and out["text"].shape == (4, d)
    assert out["logit_scale"].shape == ()
    torch.testing.assert_close(out["video"].norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(out["text"].norm(dim=-1), torch.ones(4))
    assert out["video_weights"].shape == (4, 1) and torch.all(out["video_weights"] == 1)


def test_missing_modality_is_a_zero_row_and_makes_no_pair(model):
    batch = synthetic_batch()
    batch["video_mask"][1] = False
    batch["frames"][1] = 0.0
    batch["text_mask"][3] = False
    batch["text_ids"][3] = 0
    batch["text_attention"][3] = 0
    out = model(batch)
    assert torch.all(out["video"][1] == 0) and torch.all(out["text"][3] == 0)
    terms = clip_infonce(out["video"], out["text"], out["logit_scale"], batch["video_mask"], batch["text_mask"])
    # the same loss as over the two complete samples alone
    keep = torch.tensor([0, 2])
    alone = clip_infonce(out["video"][keep], out["text"][keep], out["logit_scale"])
    for k in terms:
        torch.testing.assert_close(terms[k], alone[k])


def test_masked_sample_content_cannot_change_the_loss(model):
    batch = synthetic_batch(seed=1)
    batch["video_mask"][0] = False
    losses = []
    for fill in (0.0, 5.0):
        batch["frames"][0] = fill
        out = model(batch)
        terms = clip_infonce(out["video"], out["text"], out["logit_scale"], batch["video_mask"], batch["text_mask"])
        losses.append(total_loss(terms, DEFAULT_WEIGHTS))
    torch.testing.assert_close(losses[0], losses[1])


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = create_model("two_tower_tiny", text={"vocab_size": VOCAB}).train()
    batch = synthetic_batch(b=6)
    out = model(batch)
    loss = total_loss(clip_infonce(out["video"], out["text"], out["logit_scale"]), DEFAULT_WEIGHTS)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert no_grad == []


def test_text_padding_and_frame_order_do_not_matter(model):
    batch = synthetic_batch(length=12)
    longer = dict(batch)
    pad = torch.zeros(4, 8, dtype=torch.long)
    for key in ("text_ids", "text_attention", "text_field_ids"):
        longer[key] = torch.cat([batch[key], pad], dim=1)  # (B, L + 8), all padding
    torch.testing.assert_close(model.encode_text(batch), model.encode_text(longer), atol=1e-5, rtol=1e-5)
    flipped = dict(batch, frames=batch["frames"].flip(1))  # mean over time is order-free
    torch.testing.assert_close(model.encode_video(batch), model.encode_video(flipped), atol=1e-5, rtol=1e-5)


def test_frame_mask_ignores_invalid_frames(model):
    batch = synthetic_batch()
    mask = torch.tensor([[True, True, False]] * 4)
    a = model.encode_video(dict(batch, frame_mask=mask))
    noisy = batch["frames"].clone()
    noisy[:, 2] = 100.0
    b = model.encode_video(dict(batch, frames=noisy, frame_mask=mask))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, model.encode_video(dict(batch, frames=noisy)))


def test_frames_of_the_wrong_size_are_refused(model):
    with pytest.raises(ValueError, match="frame_size"):
        model.encode_video(synthetic_batch(size=64))


def test_text_longer_than_positions_is_refused():
    model = create_model("two_tower_tiny", text={"vocab_size": VOCAB, "max_length": 8})
    with pytest.raises(ValueError, match="text.max_length"):
        model.encode_text(synthetic_batch(length=12))


def test_logit_scale_init_and_clamp():
    model = create_model("two_tower_tiny", text={"vocab_size": VOCAB})
    assert model.get_logit_scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    assert model.get_logit_scale().item() == pytest.approx(100.0)
    frozen = create_model("two_tower_tiny", text={"vocab_size": VOCAB}, learn_logit_scale=False)
    assert not frozen.logit_scale.requires_grad


def test_registry_presets_and_errors():
    assert list_models() == ["student_small", "student_small_ffn2", "student_tiny", "teacher_base", "teacher_small", "teacher_small_minilm",
                             "teacher_text_small", "teacher_text_wide", "teacher_tiny", "two_tower_base", "two_tower_small", "two_tower_tiny"]
    with pytest.raises(KeyError) as err:
        create_model("huge")
    assert all(name in str(err.value) for name in list_models())  # the error lists the valid names
    with pytest.raises(KeyError, match="'tiny' is now 'two_tower_tiny'"):
        get_model_config("tiny")
    with pytest.raises(TypeError, match="no_such_field"):
        get_model_config("two_tower_tiny", no_such_field=3)
    with pytest.raises(TypeError, match=r"vision_depth -> vision: \{depth"):  # the flat name of earlier versions
        get_model_config("two_tower_tiny", vision_depth=3)
    with pytest.raises(TypeError, match="bogus"):
        get_model_config("teacher_tiny", audio={"bogus": 1})
    cfg = get_model_config("two_tower_small", vision={"depth": 1}, text={"vocab_size": 123})
    assert (cfg.vision.depth, cfg.text.vocab_size, cfg.vision.frame_size, cfg.vision.width) == (1, 123, 64, 128)
    base = get_model_config("two_tower_base")
    assert (base.vision.frame_size, base.vision.patch_size, base.vision.width, base.vision.depth) == (224, 16, 768, 12)


def test_parts_are_dataclasses_or_dicts_and_fusion_fields_are_derived():
    cfg = ModelConfig(vision={"width": 32, "heads": 2, "depth": 3, "fusion_depths": [0, -1]},
                      text=TextEncoderConfig(width=48, heads=4), heads={"num_hashtags": 5}, use_audio=False)
    assert isinstance(cfg.vision, VisionConfig) and isinstance(cfg.heads, HeadsConfig)
    assert cfg.vision.fusion_blocks == [0, 2] and cfg.heads.num_hashtags == 5
    f = cfg.fusion
    assert (f.text_width, f.visual_width, f.num_layers, f.modalities) == (48, 32, 2, ("text", "visual"))
    with pytest.raises(TypeError, match="ModelConfig.fusion must be a FusionConfig"):
        ModelConfig(fusion=3)
    assert isinstance(get_model_config("teacher_tiny", fusion={"heads": 4}).fusion, FusionConfig)


@pytest.mark.parametrize("bad, match", [
    (dict(vision={"frame_size": 30}), "VisionConfig.frame_size"),
    (dict(vision={"heads": 3}), "VisionConfig.width"),
    (dict(vision={"temporal_pool": "max"}), "VisionConfig.temporal_pool"),
    (dict(vision={"fusion_depths": [1, 0]}), "fusion_depths"),
    (dict(vision={"fusion_depths": [0, 5]}), "fusion_depths"),
    (dict(text={"heads": 5}), "TextEncoderConfig.width"),
    (dict(text={"ngram_buckets": -1}), "ngram_buckets"),
    (dict(text={"ffn_ratio": 0}), "TextEncoderConfig.ffn_ratio"),
    (dict(heads={"label_init_prob": 1.0}), "label_init_prob"),
    (dict(init_temperature=0.001), "init_temperature"),
    (dict(embed_dim=0), "embed_dim"),
    (dict(use_fusion="late"), "use_fusion"),
    (dict(use_fusion="multiscale"), "heads"),  # fusing for no head
])
def test_config_checks(bad, match):
    with pytest.raises(ValueError, match=match):
        get_model_config("two_tower_tiny", **bad)


def test_text_ffn_ratio_sets_the_feed_forward_width():
    default = create_model("two_tower_tiny", text={"vocab_size": VOCAB})
    narrow = create_model("two_tower_tiny", text={"vocab_size": VOCAB, "ffn_ratio": 2})
    width = narrow.cfg.text.width
    assert default.text.bert.config.intermediate_size == 4 * width  # BERT's, the default
    assert narrow.text.bert.config.intermediate_size == 2 * width
    assert narrow.text.bert.encoder.layer[0].intermediate.dense.weight.shape == (2 * width, width)
    ids = torch.randint(5, VOCAB, (2, 6))
    assert narrow.text(ids, torch.ones_like(ids)).shape == (2, width)
    # an export's config.json carries it; one written before the field existed reads as BERT's 4
    from dataclasses import asdict

    from mmemb.export.loader import model_config_from_dict

    values = asdict(narrow.cfg)
    assert model_config_from_dict(values, Path("config.json")).text.ffn_ratio == 2
    del values["text"]["ffn_ratio"]
    assert model_config_from_dict(values, Path("config.json")).text.ffn_ratio == 4


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_vit_weights_are_loaded(tmp_path, suffix):
    torch.manual_seed(1)
    source = create_model("two_tower_tiny", text={"vocab_size": VOCAB})
    state = {k: v.contiguous() for k, v in source.visual.vit.state_dict().items()}
    path = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    torch.manual_seed(2)
    loaded = create_model("two_tower_tiny", text={"vocab_size": VOCAB}, vision={"pretrained_path": str(path)})
    for k, v in loaded.visual.vit.state_dict().items():
        torch.testing.assert_close(v, state[k], msg=k)
    with pytest.raises(FileNotFoundError):
        create_model("two_tower_tiny", text={"vocab_size": VOCAB}, vision={"pretrained_path": str(tmp_path / "missing.pth")})


def test_model_code_does_not_import_lightning():
    code = ("import sys, mmemb.models, mmemb.losses, mmemb.eval.metrics; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('pytorch_lightning', 'lightning')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_uint8_frames_are_normalised_by_the_model(model):
    from mmemb.models.visual import normalize_frames

    g = torch.Generator().manual_seed(1)
    size = model.cfg.vision.frame_size
    raw = torch.randint(0, 256, (2, 3, 3, size, size), dtype=torch.uint8, generator=g)
    by_hand = (raw.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(3, 1, 1)
    torch.testing.assert_close(normalize_frames(raw), by_hand)
    batch = synthetic_batch(b=2)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_video(dict(batch, frames=raw)),
                                   model.encode_video(dict(batch, frames=by_hand)))


def test_matmul_patch_embed_equals_timms_convolution():
    from timm.layers import PatchEmbed

    from mmemb.models.visual import MatmulPatchEmbed

    torch.manual_seed(0)
    for size, patch, width in ((32, 8, 16), (64, 16, 64)):
        conv, mm = PatchEmbed(size, patch, 3, width), MatmulPatchEmbed(size, patch, 3, width)
        mm.load_state_dict(conv.state_dict())  # the same parameters, by the same names
        x = torch.randn(3, 3, size, size)
        torch.testing.assert_close(mm(x), conv(x), atol=1e-5, rtol=1e-5)  # (B, N, W)
    with pytest.raises(ValueError, match="frames of 48x48 px, the ViT's are 64x64"):
        mm(torch.randn(1, 3, 48, 48))
    vit = create_model("student_tiny").visual.vit
    assert isinstance(vit.patch_embed, MatmulPatchEmbed)
