"""Clip latency: clip -> video embedding, teacher vs student, eager vs ONNX Runtime, batch 1 and 32.

    nice python benchmarks/bench_clip_latency.py [--clips 64] [--batches 1 32] [--export NAME=DIR ...] [--json OUT]

Without ``--export`` it times untrained exports of ``teacher_small`` and ``student_small`` with the
quickstart's preprocessing (4 frames of 64 px, 2 s of log-mel; made once under ``--work`` by
:mod:`bench_exports`). Clips are the demo corpus' (built if missing). One torch thread and one ONNX
Runtime intra-op thread throughout.

Per export and batch size it reports, in ms per batch and per clip:

* ``decode``: :meth:`ExportedModel.preprocess_clips` (PyAV frames + audio + log-mel, as ``mmemb embed``);
* ``torch`` / ``onnx``: :meth:`ExportedModel.encode_video` of the decoded batch (decode excluded);
* ``torch + decode`` / ``onnx + decode``: both (:meth:`ExportedModel.embed_videos`), measured as one call.

Every setting runs in turn on the same batches, round after round (a change of load hits them all), and
the median over the rounds is reported. Parameters and FLOPs of the clip path (visual + audio towers,
their projections and the video channel attention; a multiply-add = 2 FLOPs, ``torch.utils.flop_counter``)
are printed beside.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_exports import export_arg  # noqa: E402  (a sibling script)

REPO = Path(__file__).resolve().parents[1]


def clip_paths(manifest: str | Path | None, n: int) -> list[str]:
    """The first ``n`` video paths of ``manifest`` (default: the demo corpus)."""
    from mmemb.data.demo import ensure_demo
    from mmemb.data.manifest import read_manifest

    manifest = Path(manifest) if manifest else Path(ensure_demo())
    paths = [r.video for r in read_manifest(manifest) if r.video is not None][:n]
    if not paths:
        raise SystemExit(f"{manifest}: no videos")
    return [str(p) for p in paths]


def clip_cost(model) -> tuple[float, float]:
    """(parameters in M, GFLOPs per clip) of the clip path of a loaded export's torch model, counted on one
    clip of its preprocessing's size."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    m = model.model
    params = sum(p.numel() for part in (m.visual, m.audio, m.visual_proj, m.audio_proj, m.video_attention)
                 if part is not None for p in part.parameters())
    d = model.preprocessor.decode
    batch = {"frames": torch.zeros(1, d.num_frames, 3, d.frame_size, d.frame_size, dtype=torch.uint8),
             "video_mask": torch.ones(1, dtype=torch.bool)}
    if model.model_config.use_audio:
        batch.update(mel=torch.zeros(1, d.n_mels, d.mel_frames), audio_mask=torch.ones(1, dtype=torch.bool))
    from bench_teacher import flop_mapping  # the CPU attention kernels' formulas

    counter = FlopCounterMode(display=False, custom_mapping=flop_mapping())
    with counter:  # with autograd on: the counter's module tracker needs it
        m.encode_video(batch)
    return params / 1e6, counter.get_total_flops() / 1e9


def measure(exports: dict[str, Path], clips: list[str], batches: Sequence[int], rounds: int) -> list[dict]:
    """Rows ``{model, setting, batch, ms_per_batch, ms_per_clip, rounds}`` (medians over rounds)."""
    import torch

    import mmemb

    torch.set_num_threads(1)
    models = {name: {"torch": mmemb.load(folder, runtime="torch"),
                     "onnx": mmemb.load(folder, runtime="onnx", threads=1)} for name, folder in exports.items()}
    times: dict[tuple[str, str, int], list[float]] = {}
    clock = time.perf_counter
    with torch.inference_mode():
        for name, rt in models.items():  # warm-up: codecs, mel filterbank, allocator, ORT kernels
            for b in batches:
                rt["torch"].embed_videos(clips[:b])
                rt["onnx"].embed_videos(clips[:b])
        for r in range(rounds):
            for b in batches:
                start = (r * b) % max(len(clips) - b + 1, 1)
                chunk = clips[start:start + b]
                for name, rt in models.items():
                    t0 = clock()
                    decoded = rt["torch"].preprocess_clips(chunk)
                    times.setdefault((name, "decode", b), []).append(clock() - t0)
                    for runtime, model in rt.items():
                        t0 = clock()
                        model.encode_video(decoded)
                        times.setdefault((name, runtime, b), []).append(clock() - t0)
                        t0 = clock()
                        model.embed_videos(chunk)
                        times.setdefault((name, f"{runtime} + decode", b), []).append(clock() - t0)
    rows = []
    for (name, setting, b), ts in times.items():
        ms = statistics.median(ts) * 1e3
        rows.append({"model": name, "setting": setting, "batch": b, "ms_per_batch": ms, "ms_per_clip": ms / b,
                     "rounds": len(ts)})
    order = ["decode", "torch", "onnx", "torch + decode", "onnx + decode"]
    rows.sort(key=lambda r: (r["batch"], order.index(r["setting"]), list(exports).index(r["model"])))
    costs = {name: clip_cost(rt["torch"]) for name, rt in models.items()}
    for row in rows:
        row["params_m"], row["gflops_per_clip"] = costs[row["model"]]
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| batch | setting | model | ms / batch | ms / clip | params of the clip path (M) | GFLOPs / clip |",
             "|---:|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['batch']} | {r['setting']} | {r['model']} | {r['ms_per_batch']:.2f} | {r['ms_per_clip']:.2f} | "
              f"{r['params_m']:.2f} | {r['gflops_per_clip']:.3f} |" for r in rows]
    return "\n".join(lines)


def speedups(rows: list[dict], teacher: str, student: str) -> list[str]:
    """Teacher / student ms per clip for every (batch, setting) both were measured in."""
    by = {(r["model"], r["setting"], r["batch"]): r["ms_per_clip"] for r in rows}
    out = []
    for (model, setting, b), ms in by.items():
        if model == teacher and (student, setting, b) in by and setting != "decode":
            out.append(f"batch {b}, {setting}: student {ms / by[(student, setting, b)]:.1f}x faster than the teacher")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=64, help="clips read from the manifest (batches cycle over them)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--manifest", default=None, help="the clips (default: the demo corpus)")
    p.add_argument("--export", type=export_arg, action="append", default=[],
                   help="NAME=DIR of an export folder (repeatable); default: untrained teacher_small and student_small")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "bench_exports")
    p.add_argument("--teacher", default="teacher_small")
    p.add_argument("--student", default="student_small")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.export:
        exports = dict(args.export)
    else:
        from bench_exports import exported

        exports = exported(args.work, [args.teacher, args.student], args.manifest)
    clips = clip_paths(args.manifest, max(args.clips, max(args.batches)))
    print(f"{len(clips)} clips of {args.manifest or 'the demo corpus'}; batches {args.batches}; {args.rounds} rounds; "
          "1 thread")
    rows = measure(exports, clips, args.batches, args.rounds)
    print(table(rows))
    for line in speedups(rows, args.teacher, args.student):
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
