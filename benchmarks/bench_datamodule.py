"""Clips per second that the DataModule delivers with 0, 1 and 2 workers.

    python benchmarks/bench_datamodule.py [--manifest data/demo/manifest.jsonl] [--workers 0 1 2] [--rounds 3]

Runs the training loader (random segments, decoding, tokenisation, labels, collate) over the train
split per worker count (the second of two passes, see :func:`delivered_rate`) and prints clips/s. It first measures, in the same run and on the same
train clips, the single-process raw rate (``load_clip``: PyAV frames + audio + log-mel, one torch
thread, no text, labels or collate), and prints the 2-worker target (>= 0.8 x 2 x raw) beside it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mmemb.data.datamodule import VideoDataModule
from mmemb.data.dataset import sample_generator
from mmemb.data.decode import DecodeConfig, load_clip
from mmemb.data.demo import ensure_demo


def delivered_rate(dm: VideoDataModule, workers: int, max_batches: int) -> tuple[float, int]:
    """(clips/s, clips) of the second of two passes over the train loader.

    The first pass starts the (persistent) workers and is not timed; the second is timed from
    ``iter()`` to its last batch, so it pays the pipeline fill once (conservative).
    """
    dm.num_workers = workers
    loader = dm.train_dataloader()
    for i, _ in enumerate(loader):  # warm-up pass: worker start-up is not throughput
        if i + 1 >= max_batches:
            break
    clips, start = 0, time.perf_counter()
    for i, batch in enumerate(loader):
        clips += len(batch["ids"])
        if i + 1 >= max_batches:
            break
    return clips / (time.perf_counter() - start), clips


def raw_rate(dm: VideoDataModule, clips: int) -> float:
    """Clips/s of single-process ``load_clip`` (train sampling) over the first ``clips`` train videos."""
    records = [r for r in dm.splits["train"] if r.video is not None][:clips]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        load_clip(records[0].video, dm.decode, train=True)  # warm-up (mel filterbank, codecs)
        start = time.perf_counter()
        for i, r in enumerate(records):
            load_clip(r.video, dm.decode, train=True, generator=sample_generator(0, 0, i, "bench"))
        return len(records) / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", default=None, help="default: the demo corpus (built if missing)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-batches", type=int, default=30, help="batches per pass (30 x 32 = the demo's train split)")
    parser.add_argument("--num-frames", type=int, default=4)
    parser.add_argument("--frame-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of (raw, each worker count); the ratio to raw is taken within a round, "
                             "so that drifts in machine speed between rounds cancel, and the median is reported")
    args = parser.parse_args()
    manifest = args.manifest or str(ensure_demo())
    decode = DecodeConfig(num_frames=args.num_frames, frame_size=args.frame_size, audio_seconds=2.0)
    dm = VideoDataModule(manifest=manifest, batch_size=args.batch_size, decode=decode)
    _ = dm.vocabs  # build vocabularies outside the timed part
    print(f"manifest: {manifest}  frames: {args.num_frames}x{args.frame_size}px  batch: {args.batch_size}")
    header = " | ".join(f"{w} workers (x raw)" for w in args.workers)
    print(f"| round | raw clips/s | {header} |")
    print("|---" * (2 + len(args.workers)) + "|")
    ratios: dict[int, list[float]] = {w: [] for w in args.workers}
    for r in range(args.rounds):
        raw = raw_rate(dm, args.batch_size * args.max_batches)
        cells = []
        for workers in args.workers:
            rate, _ = delivered_rate(dm, workers, args.max_batches)
            ratios[workers].append(rate / raw)
            cells.append(f"{rate:.1f} ({rate / raw:.2f})")
        print(f"| {r + 1} | {raw:.1f} | " + " | ".join(cells) + " |")
    medians = " | ".join(f"{statistics.median(ratios[w]):.2f}" for w in args.workers)
    print(f"| median x raw | 1.00 | {medians} |")
    if 2 in ratios:
        verdict = "met" if statistics.median(ratios[2]) >= 1.6 else "NOT met"
        print(f"2-worker target (>= 0.8 x 2 x raw = 1.60 x raw): {verdict}")


if __name__ == "__main__":
    main()
