"""The training loader's own work per clip (everything but decoding), with and without the n-gram hash cache.

    nice python benchmarks/bench_loader_work.py [--manifest data/demo/manifest.jsonl] [--rounds 2]

Runs :func:`mmemb.data.dataset.encode_record` (train mode: tokenising, n-gram hashing, labels, tensors) over
the train split with decoding replaced by a fixed decoded clip, then :func:`collate` of the batches, one
torch thread, and prints ms per clip for: BLAKE2b per n-gram (``uncached``, as before the cache), the
cache cold (cleared, then one pass: n-grams repeat between a corpus' texts) and warm (a second pass,
as in a later epoch). The first round also pays first-use costs; compare within the last round.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    import mmemb.data.dataset as dataset
    import mmemb.data.text as text
    from mmemb.data.datamodule import VideoDataModule
    from mmemb.data.decode import ClipSample, DecodeConfig
    from mmemb.data.demo import ensure_demo
    from mmemb.data.vocab import TextConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", default=None, help="default: the demo corpus (built if missing)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="at most this many train records")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    decode = DecodeConfig(num_frames=4, frame_size=64, audio_seconds=2.0)  # the quickstart's
    dm = VideoDataModule(manifest=args.manifest or str(ensure_demo()), batch_size=32, decode=decode,
                         text=TextConfig(max_length=64, ngram_buckets=32768, ngram_max_length=256))
    records = dm.splits["train"][: args.limit]
    frames = torch.zeros(decode.num_frames, 3, decode.frame_size, decode.frame_size, dtype=torch.uint8)
    mel = torch.zeros(decode.n_mels, decode.mel_frames)
    cached = text._cached_hash
    real_load = dataset.load_clip
    dataset.load_clip = lambda *a, **k: ClipSample(frames, mel, None, None)  # decoding excluded
    print(f"{len(records)} train records; ms per clip of encode_record + collate, decoding excluded")
    print("| round | uncached (BLAKE2b per n-gram) | cache cold | cache warm |")
    print("|---|---:|---:|---:|")
    try:
        for r in range(args.rounds):
            cells = []
            for hasher, clear in ((text.stable_hash, False), (cached, True), (cached, False)):
                text._cached_hash = hasher
                if clear:
                    cached.cache_clear()
                start = time.perf_counter()
                samples = [dataset.encode_record(rec, dm.vocabs, dm.decode, dm.text, train=True) for rec in records]
                for i in range(0, len(samples), 32):
                    dataset.collate(samples[i:i + 32])
                cells.append(f"{(time.perf_counter() - start) / len(records) * 1e3:.3f}")
            print(f"| {r + 1} | " + " | ".join(cells) + " |")
    finally:
        text._cached_hash = cached
        dataset.load_clip = real_load
    return 0


if __name__ == "__main__":
    sys.exit(main())
