"""Throughput of ``mmemb embed`` on a manifest's clips against the raw single-process decode rate.

    nice python benchmarks/bench_embed_throughput.py [--clips 600] [--workers 0 2] [--rounds 3] [--export NAME=DIR ...]

Each round first measures the raw rate on the same clips (``load_clip`` in evaluation mode, as the export's
preprocessing decodes: PyAV frames + audio + log-mel, one process, one torch thread, no text, no model),
then times :func:`mmemb.export.embed.embed` (what ``mmemb embed --manifest M --out OUT --workers W``
runs, after its imports) per export and worker count, into a fresh Parquet file: decoding, tokenising,
n-gram hashing, collate, the encoders and the Parquet writes, worker start-up included. Prints clips/s
and the ratio to the round's raw rate (ratios are taken within a round: this box's speed drifts), then
the median ratio per setting. Without ``--export``: untrained ``teacher_small`` and ``student_small``
exports (:mod:`bench_exports`) on the demo corpus, ``--runtime torch`` (the command's default).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_exports import export_arg  # noqa: E402  (a sibling script)

REPO = Path(__file__).resolve().parents[1]


def raw_rate(paths: Sequence[str], decode) -> float:
    """Clips/s of single-process ``load_clip`` (evaluation sampling) over ``paths``, one torch thread."""
    import torch

    from mmemb.data.decode import load_clip

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        load_clip(paths[0], decode, train=False)  # warm-up (mel filterbank, codecs)
        start = time.perf_counter()
        for p in paths:
            load_clip(p, decode, train=False)
        return len(paths) / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def embed_rate(folder: Path, manifest: Path, workers: int, runtime: str, batch_size: int,
               threads: int | None = 1) -> tuple[float, int]:
    """(clips/s, clips) of one ``embed`` run of ``manifest`` into a fresh output."""
    from mmemb.export.embed import embed

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = embed(folder, Path(tmp) / "e.parquet", manifest=str(manifest), runtime=runtime,
                       batch_size=batch_size, workers=workers, threads=threads, show_progress=False)
        seconds = time.perf_counter() - start
    return result["added"] / seconds, result["added"]


def subset_manifest(manifest: Path, clips: int, out: Path) -> Path:
    """The first ``clips`` records of ``manifest`` with a video, as a JSONL manifest at ``out`` (absolute
    video paths)."""
    from mmemb.data.manifest import read_manifest

    lines = []
    for r in read_manifest(manifest):
        if r.video is None:
            continue
        r.video = str(Path(r.video).resolve())
        lines.append(json.dumps(r.to_json(), ensure_ascii=False))
        if len(lines) >= clips:
            break
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    import mmemb
    from mmemb.data.demo import ensure_demo
    from mmemb.data.manifest import read_manifest

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", default=None, help="default: the demo corpus (built if missing)")
    p.add_argument("--clips", type=int, default=600, help="the first N clips of the manifest")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runtime", choices=["torch", "onnx"], default="torch")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1,
                   help="the command's --threads (0: leave torch's default, as before that option existed)")
    p.add_argument("--export", type=export_arg, action="append", default=[],
                   help="NAME=DIR of an export folder (repeatable); default: untrained teacher_small and student_small")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "bench_exports")
    args = p.parse_args(argv)
    manifest = Path(args.manifest) if args.manifest else Path(ensure_demo())
    if args.export:
        exports = dict(args.export)
    else:
        from bench_exports import exported

        exports = exported(args.work, ["teacher_small", "student_small"], manifest)
    with tempfile.TemporaryDirectory() as tmp:
        sub = subset_manifest(manifest, args.clips, Path(tmp) / "manifest.jsonl")
        paths = [r.video for r in read_manifest(sub)]
        decode = mmemb.load(next(iter(exports.values()))).preprocessor.decode
        settings = [(name, w) for name in exports for w in args.workers]
        print(f"{len(paths)} clips of {manifest}; runtime {args.runtime}; batch {args.batch_size}; "
              f"threads {args.threads or f'torch default ({torch.get_num_threads()})'}; "
              f"{decode.num_frames} frames at {decode.frame_size} px + {decode.audio_seconds:g} s audio")
        print("| round | raw clips/s | " + " | ".join(f"{n}, {w} workers (x raw)" for n, w in settings) + " |")
        print("|---" * (2 + len(settings)) + "|")
        ratios: dict[tuple[str, int], list[float]] = {s: [] for s in settings}
        for r in range(args.rounds):
            raw = raw_rate(paths, decode)
            cells = []
            for name, w in settings:
                rate, _ = embed_rate(exports[name], sub, w, args.runtime, args.batch_size, args.threads or None)
                ratios[(name, w)].append(rate / raw)
                cells.append(f"{rate:.1f} ({rate / raw:.2f})")
            print(f"| {r + 1} | {raw:.1f} | " + " | ".join(cells) + " |")
        print("| median x raw | 1.00 | " + " | ".join(f"{statistics.median(ratios[s]):.2f}" for s in settings) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
