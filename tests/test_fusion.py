"""Fusion: cross-attention blocks, multi-scale fusion, channel attention, temporal pooling, ViT depths."""

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from mmemb.models.fusion import (ChannelAttentionFusion, CrossAttentionBlock, FusionConfig, MultiScaleFusion,
                                 masked_mean)
from mmemb.models.temporal import TemporalAttentionPool
from mmemb.models.vit_features import block_prefix_tokens, vit_multiscale_tokens

torch.set_num_threads(1)

B, L, NV, NA = 8, 5, 6, 4
TW, VW, AW, W = 12, 10, 14, 16
MODS = ("text", "visual", "audio")


def _fusion(**kw) -> MultiScaleFusion:
    torch.manual_seed(0)
    cfg = FusionConfig(**{"width": W, "heads": 2, "num_layers": 2, "mlp_ratio": 2.0, "text_width": TW,
                          "visual_width": VW, "audio_width": AW, **kw})
    return MultiScaleFusion(cfg).eval()


def _inputs(all_present: bool = False):
    """Row r has text if bit 0 of r, visual if bit 1, audio if bit 2 (all 8 combinations), plus
    padding tokens inside present rows."""
    g = torch.Generator().manual_seed(1)
    rows = torch.arange(B)
    has = {m: torch.ones(B, dtype=torch.bool) if all_present else (rows >> i) & 1 == 1 for i, m in enumerate(MODS)}
    text_mask = torch.arange(L) < torch.randint(2, L + 1, (B, 1), generator=g)  # (B, L)
    visual_mask = torch.arange(NV) < torch.randint(1, NV + 1, (B, 1), generator=g)  # (B, NV)
    audio_mask = torch.arange(NA) < torch.randint(1, NA + 1, (B, 1), generator=g)  # (B, NA)
    return dict(
        text_tokens=torch.randn(B, L, TW, generator=g),
        text_mask=text_mask & has["text"][:, None],
        visual_tokens=[torch.randn(B, NV, VW, generator=g) for _ in range(2)],
        visual_mask=visual_mask & has["visual"][:, None],
        audio_tokens=torch.randn(B, NA, AW, generator=g),
        audio_mask=audio_mask & has["audio"][:, None],
    ), has


def test_config_checks():
    with pytest.raises(ValueError, match="hub"):
        FusionConfig(modalities=("visual", "audio"))
    with pytest.raises(ValueError, match="distinct"):
        FusionConfig(modalities=("text", "text"))
    with pytest.raises(ValueError, match="distinct"):
        FusionConfig(modalities=("text", "video"))
    with pytest.raises(ValueError, match="divisible"):
        FusionConfig(width=10, heads=4)


def test_cross_attention_block_fully_masked_rows_are_identity():
    torch.manual_seed(0)
    block = CrossAttentionBlock(W, 2, 2.0)
    x = torch.randn(3, 4, W, requires_grad=True)
    ctx = torch.randn(3, 5, W, requires_grad=True)
    mask = torch.tensor([[True] * 5, [False] * 5, [True, False, False, False, False]])
    y = block(x, ctx, mask)
    assert torch.isfinite(y).all()
    assert torch.equal(y[1], x[1])
    assert not torch.allclose(y[0], x[0])
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(ctx.grad).all()
    assert (ctx.grad[1] == 0).all() and (ctx.grad[2, 1:] == 0).all()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_shapes_and_every_missing_combination():
    fusion = _fusion()
    inputs, has = _inputs()
    for train in (False, True):
        fusion.train(train)
        out = fusion(**inputs)
        assert set(out.pooled) == set(MODS)
        for m, n in zip(MODS, (L, NV, NA)):
            assert out.pooled[m].shape == (B, W)
            assert out.tokens[m].shape == (B, n, W)
            assert torch.equal(out.available[m], has[m])
            assert torch.isfinite(out.pooled[m]).all() and torch.isfinite(out.tokens[m]).all()
            assert (out.pooled[m][~has[m]] == 0).all()
            assert (out.pooled[m][has[m]].abs().sum(dim=-1) > 0).all()
            assert (out.tokens[m][~out.token_masks[m]] == 0).all()
        fused, weights = ChannelAttentionFusion(W, MODS)(out.pooled, out.available)
        loss = fused.square().sum() + sum(v.square().sum() for v in out.pooled.values())
        loss.backward()
        for name, p in fusion.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), name
        fusion.zero_grad()


def test_masks_mask():
    fusion = _fusion()
    inputs, _ = _inputs()
    with torch.no_grad():
        ref = fusion(**inputs)
        noisy = {k: (v.clone() if isinstance(v, torch.Tensor) else [t.clone() for t in v]) for k, v in inputs.items()}
        g = torch.Generator().manual_seed(2)
        t_off = ~inputs["text_mask"]
        noisy["text_tokens"][t_off] = torch.randn(int(t_off.sum()), TW, generator=g) * 5
        v_off = ~inputs["visual_mask"]
        for v in noisy["visual_tokens"]:
            v[v_off] = torch.randn(int(v_off.sum()), VW, generator=g) * 5
        a_off = ~inputs["audio_mask"]
        noisy["audio_tokens"][a_off] = torch.randn(int(a_off.sum()), AW, generator=g) * 5
        out = fusion(**noisy)
        # control: changing real tokens does change the outputs
        control = fusion(**{**inputs, "text_tokens": inputs["text_tokens"] + torch.randn(B, L, TW, generator=g)})
    assert not torch.allclose(control.pooled["visual"], ref.pooled["visual"])
    for m in MODS:
        torch.testing.assert_close(out.pooled[m], ref.pooled[m], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.tokens[m], ref.tokens[m], atol=1e-5, rtol=1e-5)


def test_missing_modality_matches_fusion_without_it():
    """A row without audio fuses as if the model had no audio input at all (same weights)."""
    fusion = _fusion()
    inputs, _ = _inputs(all_present=True)
    with torch.no_grad():
        masked = fusion(**{**inputs, "audio_mask": torch.zeros(B, dtype=torch.bool)})
        absent = fusion(**{**inputs, "audio_tokens": None, "audio_mask": None})
    for m in ("text", "visual"):
        torch.testing.assert_close(masked.pooled[m], absent.pooled[m])
    assert (absent.pooled["audio"] == 0).all() and not absent.available["audio"].any()


def test_every_parameter_gets_a_gradient():
    fusion = _fusion().train()
    inputs, _ = _inputs(all_present=True)
    out = fusion(**inputs)
    loss = sum(v.square().sum() for v in out.pooled.values()) + sum(t.sum() for t in out.tokens.values())
    loss.backward()
    for name, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_scales_with_different_token_counts_and_modality_subset():
    fusion = _fusion(modalities=("text", "visual"), num_layers=3)
    assert not any("audio" in n for n, _ in fusion.named_parameters())
    text = torch.randn(2, L, TW)
    visual = [torch.randn(2, n, VW) for n in (9, 5, 3)]  # e.g. pooled more coarsely at shallow depths
    out = fusion(text, torch.ones(2, L, dtype=torch.bool), visual, torch.tensor([True, False]))
    assert set(out.pooled) == {"text", "visual"}
    assert out.tokens["visual"].shape == (2, 3, W)
    assert (out.pooled["visual"][1] == 0).all() and out.pooled["visual"][0].abs().sum() > 0
    with pytest.raises(ValueError, match="modalities"):
        fusion(text, None, visual, None, torch.randn(2, NA, AW))
    with pytest.raises(ValueError, match="num_layers"):
        fusion(text, None, visual[:2])


def test_channel_attention_weights():
    torch.manual_seed(0)
    cf = ChannelAttentionFusion(W, MODS)
    x = torch.randn(B, 3, W, requires_grad=True)
    mask = torch.stack([(torch.arange(B) >> i) & 1 == 1 for i in range(3)], dim=1)  # all 8 combinations
    fused, weights = cf(x, mask)
    assert fused.shape == (B, W) and weights.shape == (B, 3)
    assert torch.isfinite(fused).all() and torch.isfinite(weights).all()
    assert (weights[~mask] == 0).all()
    torch.testing.assert_close(weights.sum(dim=1), mask.any(dim=1).float())
    assert (fused[0] == 0).all()
    one = mask.sum(dim=1) == 1  # a single channel passes through unchanged
    torch.testing.assert_close(fused[one], x[one][mask[one]])
    torch.testing.assert_close(fused, (weights.unsqueeze(-1) * x).sum(dim=1))
    # a missing channel's content does not matter
    with torch.no_grad():
        x2 = x.detach().clone()
        x2[~mask] = 100.0
        torch.testing.assert_close(cf(x2, mask)[0], fused.detach())
    fused.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in cf.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    # named inputs give the same result
    named = {m: x.detach()[:, i] for i, m in enumerate(MODS)}
    avail = {m: mask[:, i] for i, m in enumerate(MODS)}
    torch.testing.assert_close(cf(named, avail)[1], weights.detach())
    with pytest.raises(ValueError, match="channels"):
        cf(torch.randn(2, 2, W))
    # a checkpoint from when the score's last layer had a bias (a shift of every score) still loads
    old = {**cf.state_dict(), "score.2.bias": torch.tensor([3.0])}
    fresh = ChannelAttentionFusion(W, MODS)
    fresh.load_state_dict(old)
    torch.testing.assert_close(fresh(x.detach(), mask)[1], weights.detach())


def test_temporal_attention_pool():
    torch.manual_seed(0)
    pool = TemporalAttentionPool(W, 2)
    x = torch.randn(3, 4, W, requires_grad=True)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False], [False] * 4])
    y = pool(x, mask)
    assert y.shape == (3, W) and torch.isfinite(y).all()
    assert (y[2] == 0).all() and y[1].abs().sum() > 0
    torch.testing.assert_close(pool(x[1:2, :2]), y[1:2])
    x2 = x.detach().clone()
    x2[~mask] = 50.0
    torch.testing.assert_close(pool(x2, mask), y.detach())
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[2] == 0).all()
    for name, p in pool.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_masked_mean():
    x = torch.arange(12.0).view(2, 3, 2)
    m = torch.tensor([[True, False, True], [False, False, False]])
    torch.testing.assert_close(masked_mean(x, m), torch.tensor([[2.0, 3.0], [0.0, 0.0]]))


def _vit(drop_path: float = 0.0) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=3, num_heads=2, num_classes=0,
                             drop_path_rate=drop_path)


def test_vit_multiscale_tokens_match_forward_features():
    vit = _vit().eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        feats = vit_multiscale_tokens(vit, x, [0, 1, -1])
        ref = vit.forward_features(x)
        assert [f.shape for f in feats] == [(3, 5, 16)] * 3
        torch.testing.assert_close(feats[-1], ref)
        raw = vit_multiscale_tokens(vit, x, [0, 2], norm="none")
        torch.testing.assert_close(vit.norm(raw[0]), feats[0])
        torch.testing.assert_close(vit.norm(raw[1]), ref)
        last = vit_multiscale_tokens(vit, x, [0, 2], norm="last")
        torch.testing.assert_close(last[0], raw[0])
        torch.testing.assert_close(last[1], ref)
    for bad in ([1, 0], [0, 0], [3], []):
        with pytest.raises(ValueError):
            vit_multiscale_tokens(vit, x, bad)


def test_vit_gradient_checkpointing_same_outputs_and_grads():
    vit = _vit(drop_path=0.2).train()  # stochastic depth: the recomputation must replay the same RNG
    x = torch.randn(2, 3, 16, 16)
    results = []
    for ckpt in (False, True):
        vit.zero_grad()
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(3)
        feats = vit_multiscale_tokens(vit, xi, [0, 2], grad_checkpointing=ckpt)
        sum(f.square().mean() for f in feats).backward()
        results.append(([f.detach() for f in feats], xi.grad, {n: p.grad.clone() for n, p in vit.named_parameters()
                                                             if p.grad is not None}))
    (f0, g0, p0), (f1, g1, p1) = results
    for a, b in zip(f0, f1):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(g0, g1)
    assert p0.keys() == p1.keys() and len(p0) > 0
    for n in p0:
        torch.testing.assert_close(p0[n], p1[n], msg=n)


@pytest.mark.parametrize("fused", [True, False])
def test_prefix_only_last_block_gives_the_cls_outputs_and_gradients_of_the_full_block(fused):
    vit = _vit()
    for block in vit.blocks:
        block.attn.fused_attn = fused  # both of timm's attention paths
    x = torch.randn(3, 3, 16, 16)
    results = []
    for prefix_only in (False, True):
        vit.zero_grad()
        xi = x.clone().requires_grad_(True)
        feats = vit_multiscale_tokens(vit, xi, [0, 2], prefix_only_last=prefix_only)
        cls = feats[-1][:, 0]  # (B, W)
        (feats[0].square().mean() + cls.square().mean()).backward()
        results.append((feats, cls.detach(), xi.grad, {n: p.grad.clone() for n, p in vit.named_parameters()
                                                       if p.grad is not None}))
    (full, c0, g0, p0), (pre, c1, g1, p1) = results
    assert full[-1].shape == (3, 5, 16) and pre[-1].shape == (3, 1, 16)  # the [CLS] token only
    torch.testing.assert_close(pre[0], full[0])
    torch.testing.assert_close(c1, c0)
    torch.testing.assert_close(g1, g0)
    assert p0.keys() == p1.keys() and len(p0) > 0
    for n in p0:
        torch.testing.assert_close(p1[n], p0[n], msg=n)
    with torch.no_grad():  # the function alone, at several prefix lengths
        tokens = torch.randn(2, 5, 16)
        for p in (1, 2, 5):
            torch.testing.assert_close(block_prefix_tokens(vit.blocks[1].eval(), tokens, p),
                                       vit.blocks[1](tokens)[:, :p])
    no_cls = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=0,
                               class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="prefix_only_last needs a ViT with prefix tokens"):
        vit_multiscale_tokens(no_cls, x, [0], prefix_only_last=True)
