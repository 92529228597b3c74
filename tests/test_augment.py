"""Two-view batch augmentations."""

from __future__ import annotations

import pytest
import torch

from mmemb.data.augment import AugmentConfig, augment_frames, augment_mel, two_views


def _batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (3, 4, 3, 16, 16), generator=g, dtype=torch.uint8)
    frames[1] = 0  # a missing clip
    mel = torch.randn(3, 8, 20, generator=g)
    mel[2] = 0.0
    return {
        "ids": ["a", "b", "c"],
        "frames": frames,
        "video_mask": torch.tensor([True, False, True]),
        "mel": mel,
        "audio_mask": torch.tensor([True, True, False]),
        "text_ids": torch.ones(3, 5, dtype=torch.long),
    }


def test_shapes_dtypes_and_other_entries_kept():
    batch = _batch()
    v1, v2 = two_views(batch, AugmentConfig(), torch.Generator().manual_seed(1))
    for v in (v1, v2):
        assert v["frames"].shape == batch["frames"].shape and v["frames"].dtype == torch.uint8
        assert v["mel"].shape == batch["mel"].shape and v["mel"].dtype == torch.float32
        assert v["ids"] is batch["ids"] and v["text_ids"] is batch["text_ids"]
    floats = batch["frames"].float() / 255
    out = augment_frames(floats, AugmentConfig(), torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.shape == floats.shape and 0 <= out.min() and out.max() <= 1


def test_two_views_differ_and_differ_from_input():
    batch = _batch()
    v1, v2 = two_views(batch, AugmentConfig(), torch.Generator().manual_seed(1))
    assert not torch.equal(v1["frames"][0], v2["frames"][0])
    assert not torch.equal(v1["frames"][0], batch["frames"][0])
    assert not torch.equal(v1["mel"][0], v2["mel"][0])


def test_same_seed_same_views():
    batch = _batch()
    a = two_views(batch, AugmentConfig(), torch.Generator().manual_seed(7))
    b = two_views(batch, AugmentConfig(), torch.Generator().manual_seed(7))
    c = two_views(batch, AugmentConfig(), torch.Generator().manual_seed(8))
    for va, vb in zip(a, b):
        assert torch.equal(va["frames"], vb["frames"]) and torch.equal(va["mel"], vb["mel"])
    assert not torch.equal(a[0]["frames"], c[0]["frames"])


def test_masked_and_zero_clips_stay_zero():
    batch = _batch()
    v1, v2 = two_views(batch, AugmentConfig(color_jitter=0.9), torch.Generator().manual_seed(3))
    for v in (v1, v2):
        assert torch.all(v["frames"][1] == 0) and torch.all(v["mel"][2] == 0)
    # without the masks, all-zero clips still stay zero
    zeros = torch.zeros(2, 3, 3, 8, 8, dtype=torch.uint8)
    assert torch.all(augment_frames(zeros, AugmentConfig(color_jitter=0.9), torch.Generator().manual_seed(0)) == 0)
    assert torch.all(augment_mel(torch.zeros(2, 4, 10), AugmentConfig(audio_mask_frac=0.5)) == 0)
    # a masked but non-zero clip is returned unchanged
    frames = torch.full((2, 2, 3, 8, 8), 100, dtype=torch.uint8)
    out = augment_frames(frames, AugmentConfig(color_jitter=0.9), torch.Generator().manual_seed(0),
                         mask=torch.tensor([False, True]))
    assert torch.equal(out[0], frames[0])


def test_identity_config_keeps_frames_and_mel():
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), color_jitter=0.0, p_flip=0.0,
                        temporal_jitter=0, audio_mask_frac=0.0)
    batch = _batch()
    v1, _ = two_views(batch, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(v1["frames"], batch["frames"]) and torch.equal(v1["mel"], batch["mel"])
    flipped = augment_frames(batch["frames"], AugmentConfig(**{**cfg.__dict__, "p_flip": 1.0}))
    assert torch.equal(flipped, batch["frames"].flip(-1))


def test_temporal_jitter_keeps_time_order():
    frames = torch.arange(6, dtype=torch.uint8).view(1, 6, 1, 1, 1).expand(4, 6, 3, 4, 4).contiguous() * 40
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), color_jitter=0.0, p_flip=0.0,
                        temporal_jitter=2)
    out = augment_frames(frames, cfg, torch.Generator().manual_seed(0))
    order = out[:, :, 0, 0, 0].long() // 40  # (B, T) frame index used at each step
    assert torch.all(order[:, 1:] >= order[:, :-1]) and not torch.equal(order, frames[:, :, 0, 0, 0].long() // 40)
    assert torch.all((order - torch.arange(6)).abs() <= 2)


def test_spec_augment_masks_bands():
    mel = torch.randn(2, 16, 40, generator=torch.Generator().manual_seed(0)) + 5.0
    cfg = AugmentConfig(audio_mask_frac=0.25, num_time_masks=1, num_freq_masks=0)
    out = augment_mel(mel, cfg, torch.Generator().manual_seed(4))
    changed = (out != mel).any(dim=1)  # (B, F): masked frames
    assert changed.any()
    for row in range(2):
        cols = changed[row].nonzero().flatten()
        if cols.numel():
            assert cols.numel() <= 10 and cols.max() - cols.min() + 1 == cols.numel()  # one contiguous band
            assert torch.allclose(out[row][:, cols], mel[row].mean().expand(16, cols.numel()))


def test_config_checks():
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="p_flip"):
        AugmentConfig(p_flip=2.0)
    with pytest.raises(ValueError, match="expected"):
        augment_frames(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), AugmentConfig())
