"""The hashed char-n-gram bag channel of the text tower (Que2Search's char-3-gram ``EmbeddingBag``).

The data hashes the character n-grams of a video's text fields into ``num_buckets`` buckets
(:func:`mmemb.data.text.hash_field_ngrams`) and ships them as ``text_ngrams``: bucket + 1, 0-padded.
:class:`NgramBag` averages one learned vector per bucket over the video's n-grams. It reads spelling
directly (rare words, typos, names, Chinese character runs that the WordPiece vocabulary splits or
maps to ``[UNK]``) and costs one table look-up, so it complements the transformer cheaply.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["NgramBag"]

PAD = 0  # the id of "no n-gram"; bucket b is id b + 1


class NgramBag(nn.Module):
    """Mean of learned bucket vectors: ``(B, G)`` ids (bucket + 1, 0 = padding) -> ``(B, width)`` and
    ``(B,)`` availability (the row has at least one n-gram); rows without n-grams are zeros.

    Args:
        num_buckets: hash buckets of the data (``TextConfig.ngram_buckets``).
        width: vector width.
    """

    def __init__(self, num_buckets: int, width: int):
        super().__init__()
        if num_buckets < 1 or width < 1:
            raise ValueError(f"NgramBag needs num_buckets >= 1 and width >= 1, got {num_buckets}, {width}")
        self.num_buckets = num_buckets
        # padding_idx: row 0 stays zero, gets no gradient and is left out of each bag's mean
        self.bag = nn.EmbeddingBag(num_buckets + 1, width, mode="mean", padding_idx=PAD)
        nn.init.normal_(self.bag.weight, std=width ** -0.5)
        with torch.no_grad():
            self.bag.weight[PAD].zero_()

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if ids.dim() != 2:
            raise ValueError(f"text_ngrams must be (B, G) ids, got shape {tuple(ids.shape)}")
        ids = ids.long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) > self.num_buckets):
            raise ValueError(f"text_ngrams ids must lie in [0, {self.num_buckets}] (bucket + 1, 0 = padding), got "
                             f"[{int(ids.min())}, {int(ids.max())}]: the data's text.ngram_buckets must equal "
                             f"the model's ngram_buckets ({self.num_buckets})")
        available = (ids != PAD).any(dim=1)  # (B,)
        if ids.shape[1] == 0:
            return ids.new_zeros(ids.shape[0], self.bag.embedding_dim, dtype=self.bag.weight.dtype), available
        return self.bag(ids), available  # (B, W): mean over the non-padding ids, zeros for an empty row
