"""Chunked exact top-k equals the top-k of the full similarity matrix, ties included."""

import numpy as np
import pytest
import torch

from mmemb.eval.topk import chunked_topk, full_topk, topk_peak_bytes


def _reference(q: np.ndarray, g: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by a stable argsort of the whole ``(Q, G)`` matrix (ties: lower index first)."""
    sim = q.astype(np.float32) @ g.astype(np.float32).T
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sim, order, axis=1), order


def _int_data(seed: int, q: int, g: int, d: int, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Small-integer vectors: dot products are exact in float32 and ties are frequent."""
    rng = np.random.default_rng(seed)
    return (rng.integers(-levels, levels + 1, (q, d)).astype(np.float32),
            rng.integers(-levels, levels + 1, (g, d)).astype(np.float32))


@pytest.mark.parametrize(
    "k,chunk,gchunk",
    [(1, 7, 13), (5, 3, 4), (20, 16, 8), (37, 5, 100), (150, 64, 64), (150, 150, 1)],
)
def test_matches_full_topk_with_ties(k, chunk, gchunk):
    q, g = _int_data(0, 23, 150, 4, 1)  # 3**4 = 81 distinct vectors over 150 rows: many exact ties
    scores, idx = chunked_topk(q, g, k, chunk_size=chunk, gallery_chunk_size=gchunk)
    ref_s, ref_i = _reference(q, g, k)
    assert scores.dtype == np.float32 and idx.dtype == np.int64 and idx.shape == (23, k)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_array_equal(scores, ref_s)


def test_all_equal_scores_keep_index_order():
    q, g = np.zeros((3, 5), np.float32), np.ones((40, 5), np.float32)  # every score is 0
    _, idx = chunked_topk(q, g, 10, chunk_size=2, gallery_chunk_size=3)
    np.testing.assert_array_equal(idx, np.tile(np.arange(10), (3, 1)))


def test_each_chunk_beats_the_last():
    g = np.arange(200, dtype=np.float32)[:, None].repeat(3, axis=1)  # score grows with the index
    g[::7] = g[1::7][: len(g[::7])]  # plus ties across chunk borders
    q = np.ones((4, 3), np.float32)
    for k, gchunk in [(5, 10), (30, 7), (200, 33)]:
        _, idx = chunked_topk(q, g, k, chunk_size=3, gallery_chunk_size=gchunk)
        np.testing.assert_array_equal(idx, _reference(q, g, k)[1])


def test_gaussian_and_k_equal_gallery_size():
    rng = np.random.default_rng(1)
    q, g = rng.standard_normal((31, 16)), rng.standard_normal((97, 16))
    for k, chunk, gchunk in [(10, 8, 10), (97, 4, 7), (97, 31, 97)]:
        scores, idx = chunked_topk(q, g, k, chunk_size=chunk, gallery_chunk_size=gchunk)
        ref_s, ref_i = _reference(q, g, k)
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_allclose(scores, ref_s, rtol=1e-5, atol=1e-5)
    assert sorted(idx[0].tolist()) == list(range(97))  # k == G returns a permutation


def test_cosine_and_torch_inputs():
    rng = np.random.default_rng(2)
    q, g = rng.standard_normal((9, 8)).astype(np.float32), rng.standard_normal((50, 8)).astype(np.float32)
    g[3] *= 100.0  # a long vector wins by inner product, not by cosine
    s_t, i_t = chunked_topk(torch.from_numpy(q), torch.from_numpy(g), 5, 4, 6, metric="cosine")
    qn, gn = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
    ref_s, ref_i = _reference(qn, gn, 5)
    np.testing.assert_array_equal(i_t, ref_i)
    np.testing.assert_allclose(s_t, ref_s, rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(s_t) <= 1.0 + 1e-5)
    s_f, i_f = full_topk(q, g, 5, metric="cosine")
    np.testing.assert_array_equal(i_f, ref_i)


def test_errors_are_clear():
    q, g = np.ones((2, 4), np.float32), np.ones((6, 4), np.float32)
    with pytest.raises(ValueError, match=r"k=7 must be between 1 and the gallery size 6"):
        chunked_topk(q, g, 7)
    with pytest.raises(ValueError, match=r"k=0"):
        chunked_topk(q, g, 0)
    with pytest.raises(ValueError, match=r"dimension 4 but the gallery has 3"):
        chunked_topk(q, g[:, :3], 1)
    with pytest.raises(ValueError, match=r"metric='l2' is not one of \('ip', 'cosine'\)"):
        chunked_topk(q, g, 1, metric="l2")
    bad = g.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"gallery \(rows\) holds 1 NaN .* \[1\]"):
        chunked_topk(q, bad, 1)
    with pytest.raises(ValueError, match="chunk_size=0"):
        chunked_topk(q, g, 1, chunk_size=0)


def test_peak_bytes_estimate():
    small = topk_peak_bytes(1000, 1_000_000, 128, 100, chunk_size=256, gallery_chunk_size=8192)
    large = topk_peak_bytes(1000, 1_000_000, 128, 100, chunk_size=1024, gallery_chunk_size=65536)
    assert 0 < small < large
    assert small == 1000 * 100 * 12 + 256 * 8192 * 15 + 256 * 100 * 88
    assert topk_peak_bytes(3, 50, 8, 5) == 3 * 5 * 12 + 3 * 50 * 15 + 3 * 5 * 88  # blocks capped by the sizes
    cos = topk_peak_bytes(1000, 1_000_000, 128, 100, 256, 8192, metric="cosine")
    assert cos - small == (1000 + 1_000_000) * 128 * 4
    with pytest.raises(ValueError, match="k=200 must be between 1 and the gallery size 100"):
        topk_peak_bytes(10, 100, 8, 200)


def test_peak_bytes_bounds_measured_peak():
    import tracemalloc

    rng = np.random.default_rng(3)
    q = rng.standard_normal((200, 16)).astype(np.float32)
    g = np.sort(rng.standard_normal((5000, 16)).astype(np.float32), axis=0)  # later chunks score higher
    for queries in (q, np.abs(q)):
        tracemalloc.start()
        chunked_topk(queries, g, 50, chunk_size=64, gallery_chunk_size=512)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        estimate = topk_peak_bytes(200, 5000, 16, 50, chunk_size=64, gallery_chunk_size=512)
        assert estimate / 3 < peak <= estimate
