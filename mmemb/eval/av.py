"""Audio-visual correspondence: retrieve a segment's audio from its video and vice versa.

Row ``i`` of ``video_emb`` and ``audio_emb`` come from the same segment. Similarities are cosine
similarities (rows are L2-normalised; zero rows stay zero), ranks follow
:func:`mmemb.eval.metrics.first_relevant_rank` (pessimistic ties), so a collapsed model scores 0.
Decoding and segmentation are out of scope here: this module only scores embeddings.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .metrics import _np, chance_recall_at_k, first_relevant_rank, instance_chance_recall_at_k

__all__ = ["l2_normalize", "av_correspondence"]


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` ``(N, D)`` scaled to unit norm; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (N, 1)
    return x / np.maximum(norms, eps)


def _ranks(queries: np.ndarray, gallery: np.ndarray, relevance: Callable[[np.ndarray], np.ndarray], chunk: int) -> np.ndarray:
    """``(Q,)`` pessimistic ranks, computing ``(chunk, G)`` similarities at a time."""
    out = [np.zeros(0)]
    for start in range(0, queries.shape[0], chunk):
        rows = np.arange(start, min(start + chunk, queries.shape[0]))  # (chunk,)
        out.append(first_relevant_rank(queries[rows] @ gallery.T, relevance(rows)))
    return np.concatenate(out)


def _recall(ranks: np.ndarray, k: int) -> float:
    valid = ranks[~np.isnan(ranks)]
    return float((valid <= k).mean()) if valid.size else float("nan")


def av_correspondence(
    video_emb,
    audio_emb,
    groups=None,
    ks: Sequence[int] = (1,),
    chunk: int = 4096,
) -> dict[str, float]:
    """Audio->video (``a2v``) and video->audio (``v2a``) segment retrieval.

    Keys:

    * ``{dir}_r{k}``: recall@k of the exact segment; ``chance_r{k}`` = ``k / N``
    * with ``groups`` (a clip id per segment, any comparable values): ``{dir}_r{k}_clip``, recall@k
      where any segment of the query's clip counts as a hit; ``chance_r{k}_clip`` its value under
      a random ranking (for ``k = 1``: mean over segments of clip size / ``N``)
    * ``n``: number of segments
    """
    video, audio = _np(video_emb), _np(audio_emb)
    if video.ndim != 2 or video.shape != audio.shape:
        raise ValueError(f"video_emb {video.shape} and audio_emb {audio.shape} must be the same (N, D) shape")
    video, audio = l2_normalize(video), l2_normalize(audio)
    n = video.shape[0]
    cols = np.arange(n)  # (N,)
    levels: dict[str, Callable[[np.ndarray], np.ndarray]] = {"": lambda rows: rows[:, None] == cols[None, :]}
    if groups is not None:
        g = np.asarray(_np(groups))
        if g.shape != (n,):
            raise ValueError(f"groups must have shape ({n},), got {g.shape}")
        levels["_clip"] = lambda rows: g[rows, None] == g[None, :]
    out: dict[str, float] = {"n": float(n)}
    for k in ks:
        out[f"chance_r{k}"] = instance_chance_recall_at_k(n, k)
    for suffix, relevance in levels.items():
        for name, (q, gal) in {"a2v": (audio, video), "v2a": (video, audio)}.items():
            ranks = _ranks(q, gal, relevance, chunk)
            for k in ks:
                out[f"{name}_r{k}{suffix}"] = _recall(ranks, k)
    if groups is not None:
        _, inverse, counts = np.unique(g, return_inverse=True, return_counts=True)
        for k in ks:
            out[f"chance_r{k}_clip"] = chance_recall_at_k(counts[inverse], n, k)  # (N,) clip size per segment
    return out
