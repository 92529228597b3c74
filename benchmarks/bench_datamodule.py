"""Clips per second that the DataModule delivers with 0, 1 and 2 workers.

    python benchmarks/bench_datamodule.py [--manifest data/demo/manifest.jsonl] [--workers 0 1 2] [--rounds 3]

Runs the training loader (random segments, decoding, tokenisation, labels, collate) over the train
split per worker count (the second of two passes, see :func:`delivered_rate`) and prints clips/s. It first measures, in the same run and on the same
train clips, the single-process raw rate (``load_clip``: PyAV frames + audio + log-mel, one torch
thread, no text, labels or collate), and prints the 2-worker target (>= 0.8 x 2 x raw) beside it.

``--profile`` prints instead the process CPU time per clip of each part of a sample's way through
the loader, single process (CPU time, so that other jobs on a shared box do not stretch it):
decoding (``load_clip``), the rest of ``__getitem__`` (text tensors from the dataset's token
table, n-gram hashing, labels), tokenising a record's text on its own (what ``__getitem__`` did
before the token table), the collate, and pickling a batch for the trip to the main process.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import time
from multiprocessing.reduction import ForkingPickler

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


def profile(dm: VideoDataModule, repeat: int = 3) -> None:
    """Print the CPU ms per clip of each part of the loader's work (see the module docstring)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        _profile(dm, repeat)
    finally:
        torch.set_num_threads(threads)


def _profile(dm: VideoDataModule, repeat: int) -> None:
    import mmemb.data.dataset as dataset_module
    from mmemb.data.dataset import collate, encode_labels, tokenize_text

    dataset = dm.train_dataset()
    n = len(dataset)
    collate_fn = dm.collate_fn

    def cpu_ms(fn) -> float:
        best = float("inf")
        for _ in range(repeat):
            start = time.process_time()
            fn()
            best = min(best, time.process_time() - start)
        return 1000 * best / n

    records = dataset.records
    decode_ms = cpu_ms(lambda: [load_clip(r.video, dm.decode, train=True, generator=sample_generator(0, 0, i, "b"))
                                for i, r in enumerate(records)])
    clip = load_clip(records[0].video, dm.decode, train=True)
    real_load_clip = dataset_module.load_clip
    dataset_module.load_clip = lambda *args, **kwargs: clip  # the rest of __getitem__ alone
    try:
        getitem_ms = cpu_ms(lambda: [dataset[i] for i in range(n)])
        samples = [dataset[i] for i in range(n)]
    finally:
        dataset_module.load_clip = real_load_clip
    text_ms = cpu_ms(lambda: [tokenize_text(r, dataset.vocabs, dataset.text, dataset.tokens[i])
                              for i, r in enumerate(records)])
    tokenize_ms = cpu_ms(lambda: [tokenize_text(r, dataset.vocabs, dataset.text) for r in records])
    labels_ms = cpu_ms(lambda: [encode_labels(r, dataset.vocabs, dataset.half_life_days, dataset.now)
                                for r in records])
    size = dm.batch_size
    collate_ms = cpu_ms(lambda: [collate_fn(samples[i:i + size]) for i in range(0, n, size)])
    batches = [collate_fn(samples[i:i + size]) for i in range(0, n, size)]
    # a worker pickles each batch with ForkingPickler (tensors move to shared memory unless they are
    # there already); the main process unpickles it. Fresh batches each time, collated as in a worker
    # (into shared memory) or as outside one (plain), minus the plain collate's time.
    def transfer(shared: bool):
        for i in range(0, n, size):
            pickle.loads(ForkingPickler.dumps(collate(samples[i:i + size], shared=shared)))
    plain_ms = cpu_ms(lambda: [collate(samples[i:i + size], shared=False) for i in range(0, n, size)])
    transfer_ms = cpu_ms(lambda: transfer(True)) - plain_ms
    transfer_copy_ms = cpu_ms(lambda: transfer(False)) - plain_ms
    rows = [("decode (load_clip)", decode_ms), ("__getitem__ without decoding", getitem_ms),
            ("  of which text tensors from the token table", text_ms), ("  of which labels", labels_ms),
            ("(tokenising each record's text instead)", tokenize_ms), ("collate (with label weights)", collate_ms),
            ("pickle + unpickle a batch, per clip (collated into shared memory, as in a worker)", transfer_ms),
            ("(the same, collated outside shared memory: pickling copies it there)", transfer_copy_ms)]
    print(f"| part | CPU ms per clip ({n} train clips, best of {repeat}) |")
    print("|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.3f} |")
    own = getitem_ms + collate_ms + transfer_ms
    print(f"| loader's own work (getitem w/o decode + collate + transfer) | {own:.3f} ({own / decode_ms:.0%} of decode) |")


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
    parser.add_argument("--profile", action="store_true", help="CPU ms per clip of each part of the loader's work")
    args = parser.parse_args()
    manifest = args.manifest or str(ensure_demo())
    # one decoder thread everywhere, as in a DataLoader worker (the raw rate and 0 workers included)
    decode = DecodeConfig(num_frames=args.num_frames, frame_size=args.frame_size, audio_seconds=2.0,
                          decode_threads=1)
    dm = VideoDataModule(manifest=manifest, batch_size=args.batch_size, decode=decode)
    _ = dm.vocabs  # build vocabularies outside the timed part
    if args.profile:
        profile(dm)
        return
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
