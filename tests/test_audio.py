"""Audio tower: shapes, padding and missing-audio masks, gradients."""

import pytest
import torch

from mmemb.models.audio import AudioConfig, AudioEncoder

torch.set_num_threads(1)


def _encoder(**kw) -> AudioEncoder:
    torch.manual_seed(0)
    cfg = AudioConfig(**{"n_mels": 8, "patch_frames": 4, "width": 16, "depth": 2, "heads": 2, "max_tokens": 16, **kw})
    return AudioEncoder(cfg).eval()


def test_shapes_and_partial_patch():
    enc = _encoder()
    mel = torch.randn(3, 8, 22)  # 22 frames -> 6 tokens, the last one of 2 real frames
    tokens, mask = enc.forward_tokens(mel)
    assert tokens.shape == (3, 6, 16) and mask.shape == (3, 6) and mask.all()
    pooled = enc(mel, torch.ones(3, dtype=torch.bool))
    assert pooled.shape == (3, 16)
    torch.testing.assert_close(pooled, tokens.mean(dim=1))


def test_padding_frames_are_masked():
    enc = _encoder()
    mel = torch.randn(3, 8, 22)
    valid = torch.tensor([22, 9, 4])  # 6, 3 and 1 tokens
    tokens, mask = enc.forward_tokens(mel, valid)
    assert mask.sum(dim=1).tolist() == [6, 3, 1]
    assert (tokens[~mask] == 0).all()
    pooled = enc(mel, torch.ones(3, dtype=torch.bool), valid)

    other = mel.clone()
    other[1, :, 9:] = torch.randn(8, 13) * 10  # padding of row 1, including inside its last real token
    other[2, :, 4:] = 5.0
    tokens2, _ = enc.forward_tokens(other, valid)
    torch.testing.assert_close(tokens2, tokens)
    torch.testing.assert_close(enc(other, torch.ones(3, dtype=torch.bool), valid), pooled)
    # a row's output depends only on its own real frames
    alone, _ = enc.forward_tokens(mel[1:2, :, :9])
    torch.testing.assert_close(alone, tokens[1:2, :3], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("train", [False, True])
def test_missing_audio_is_zero_and_finite(train):
    enc = _encoder()
    enc.train(train)
    mel = torch.randn(4, 8, 16, requires_grad=True)
    audio_mask = torch.tensor([True, False, True, True])
    valid = torch.tensor([16, 16, 0, 5])  # row 2: no real frame either
    tokens, mask = enc.forward_tokens(mel, valid, audio_mask)
    pooled = enc(mel, audio_mask, valid)
    assert torch.isfinite(tokens).all() and torch.isfinite(pooled).all()
    assert not mask[1].any() and not mask[2].any()
    assert (pooled[1:3] == 0).all() and (tokens[1:3] == 0).all()
    assert pooled[0].abs().sum() > 0 and pooled[3].abs().sum() > 0
    pooled.square().sum().backward()
    assert torch.isfinite(mel.grad).all()
    assert (mel.grad[1:3] == 0).all()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name

    # the content of a missing row does not matter
    with torch.no_grad():
        other = mel.detach().clone()
        other[1] = 7.0
        torch.testing.assert_close(enc.eval()(other, audio_mask, valid), enc(mel.detach(), audio_mask, valid))


def test_every_parameter_gets_a_gradient():
    enc = _encoder().train()
    enc(torch.randn(2, 8, 12), torch.ones(2, dtype=torch.bool)).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_errors():
    enc = _encoder()
    with pytest.raises(ValueError, match="n_mels"):
        enc.forward_tokens(torch.randn(1, 6, 8))
    with pytest.raises(ValueError, match="max_tokens"):
        enc.forward_tokens(torch.randn(1, 8, 4 * 16 + 1))
    with pytest.raises(ValueError, match="divisible"):
        AudioConfig(width=10, heads=3)
    with pytest.raises(ValueError, match="patch_frames"):
        AudioConfig(patch_frames=0)
