"""CPU latency per clip of candidate student visual towers against the quickstart teacher's.

    python benchmarks/bench_student_towers.py            # batch 1, one thread, median of 5 rounds x 200 calls

``encode_video`` (frames and log-mel in: decode excluded) of randomly initialised models at the
quickstart's input size (4 frames of 64 px, 2 s of 64-band log-mel), every candidate measured in
each round in turn (a change of load hits them all). It chose ``student_small``'s visual tower
(:mod:`mmemb.models.registry`): the smallest change from the teacher that leaves >= 5x headroom.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Sequence

import torch

from mmemb.models.registry import create_model, get_model_config

# name -> overrides of teacher_small (use_fusion="none": the fusion is not on the clip path, but the
# students have none); every candidate reads the same frames
CANDIDATES = {
    "teacher_small (4 x 128 ViT + 2 x 128 audio)": {},
    "ViT 2 x 64 + audio 1 x 64": dict(vision={"width": 64, "depth": 2, "heads": 2, "fusion_depths": [-1]},
                                      audio={"width": 64, "depth": 1, "heads": 2}, use_fusion="none"),
    "ViT 2 x 128, no audio": dict(vision={"width": 128, "depth": 2, "heads": 4, "fusion_depths": [-1]},
                                  use_audio=False, use_fusion="none"),
    "ViT 2 x 96, no audio": dict(vision={"width": 96, "depth": 2, "heads": 3, "fusion_depths": [-1]},
                                 use_audio=False, use_fusion="none"),
    "ViT 2 x 64, no audio (student_small)": "student_small",
    "ViT 1 x 64, no audio": dict(vision={"width": 64, "depth": 1, "heads": 2, "fusion_depths": [-1]},
                                 use_audio=False, use_fusion="none"),
    "ViT 2 x 64, no audio, mean over frames": dict(vision={"width": 64, "depth": 2, "heads": 2, "fusion_depths": [-1],
                                                           "temporal_pool": "mean"}, use_audio=False, use_fusion="none"),
}


def _batch(frames: int = 4, size: int = 64, mel_frames: int = 201) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"frames": torch.rand(1, frames, 3, size, size, generator=g), "video_mask": torch.ones(1, dtype=torch.bool),
            "mel": torch.randn(1, 64, mel_frames, generator=g), "audio_mask": torch.ones(1, dtype=torch.bool)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="calls per round")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    models = {}
    for name, spec in CANDIDATES.items():
        cfg = get_model_config(spec) if isinstance(spec, str) else get_model_config("teacher_small", **spec)
        models[name] = create_model(cfg).eval()
    batch = _batch()
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            for _ in range(20):
                model.encode_video(batch)
        for _ in range(args.rounds):
            for name, model in models.items():
                ts = []
                for _ in range(args.n):
                    t0 = time.perf_counter()
                    model.encode_video(batch)
                    ts.append(time.perf_counter() - t0)
                times[name].append(statistics.median(ts) * 1e3)
    teacher = statistics.median(next(iter(times.values())))
    print("| visual tower | CPU ms / clip | speed-up vs teacher | params of the clip path (M) |")
    print("|---|---:|---:|---:|")
    for name, model in models.items():
        ms = statistics.median(times[name])
        clip = sum(p.numel() for m in (model.visual, model.audio, model.visual_proj, model.audio_proj,
                                       model.video_attention) if m is not None for p in m.parameters())
        print(f"| {name} | {ms:.2f} | {teacher / ms:.1f}x | {clip / 1e6:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
