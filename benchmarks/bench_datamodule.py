"""Clips per second that the DataModule delivers with 0, 1 and 2 workers.

    python benchmarks/bench_datamodule.py [--manifest data/demo/manifest.jsonl] [--workers 0 1 2]

Runs the training loader (random segments, decoding, tokenisation, labels, collate) over the train
split once per worker count and prints clips/s, next to the single-process raw decode rate of
``bench_decode.py`` for the 2-worker target (>= 0.8 x 2 x raw).
"""

from __future__ import annotations

import argparse
import time

from mmemb.data.datamodule import VideoDataModule
from mmemb.data.decode import DecodeConfig
from mmemb.data.demo import ensure_demo


def delivered_rate(dm: VideoDataModule, workers: int, max_batches: int) -> tuple[float, int]:
    """(clips/s, clips) of one pass over the train loader, worker start-up excluded."""
    dm.num_workers = workers
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # start-up (worker spawn, first batch) is not throughput
    clips, start = 0, time.perf_counter()
    for i, batch in enumerate(it):
        clips += len(batch["ids"])
        if i + 1 >= max_batches:
            break
    return clips / (time.perf_counter() - start), clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", default=None, help="default: the demo corpus (built if missing)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-batches", type=int, default=20)
    parser.add_argument("--num-frames", type=int, default=4)
    parser.add_argument("--frame-size", type=int, default=64)
    args = parser.parse_args()
    manifest = args.manifest or str(ensure_demo())
    decode = DecodeConfig(num_frames=args.num_frames, frame_size=args.frame_size, audio_seconds=2.0)
    dm = VideoDataModule(manifest=manifest, batch_size=args.batch_size, decode=decode)
    _ = dm.vocabs  # build vocabularies outside the timed part
    print(f"manifest: {manifest}  frames: {args.num_frames}x{args.frame_size}px  batch: {args.batch_size}")
    print("| workers | clips/s | clips |")
    print("|---|---|---|")
    for workers in args.workers:
        rate, clips = delivered_rate(dm, workers, args.max_batches)
        print(f"| {workers} | {rate:.1f} | {clips} |")


if __name__ == "__main__":
    main()
