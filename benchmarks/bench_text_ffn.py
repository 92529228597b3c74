"""The exported text graph's latency by the text tower's feed-forward width (``text.ffn_ratio``).

    python benchmarks/bench_text_ffn.py [--preset student_small] [--ratios 4 2 1] [--lengths 7 13 23] [--rounds 6]

For each ratio, a randomly initialised ``--preset`` text tower (latency does not depend on the weights) with
``text.ffn_ratio`` set and the quickstart's n-gram bag (32,768 buckets) is exported as ``mmemb export`` exports it
(:func:`mmemb.export.graphs.export_onnx`, and the int8 graph of ``--int8-text``:
:func:`mmemb.export.quantize.quantize_text_graph`); then ONNX Runtime's ``session.run`` of each graph is timed
alone (batch 1, one thread, random token and n-gram ids of each length; tokenising excluded). Rounds go over the
lengths, and within a length every graph takes its turn (``--repeats`` calls after 20 warm-up calls), so that a
change of the machine's speed hits every graph alike. Prints p50 / p99 ms per graph and length, and each ratio's
p50 against the first ratio's in the same rows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_query_latency import random_query_feed  # noqa: E402  (a sibling script)

NGRAM_BUCKETS = 32768  # configs/quickstart.yaml's
SIZES = dict(T=4, S=64, M=64, F=101, L=64, G=256)  # the trace's sizes: the quickstart's text lengths


def export_graphs(preset: str, ratios: Sequence[int], folder: Path, int8: bool = True) -> dict[str, Path]:
    """``{"r4 float": path, "r4 int8": path, ...}``: the text graph of ``preset`` at each ``text.ffn_ratio``."""
    import torch

    from mmemb.export.graphs import example_inputs, export_onnx, graph_specs
    from mmemb.export.quantize import quantize_text_graph
    from mmemb.models.registry import create_model

    graphs = {}
    for ratio in ratios:
        torch.manual_seed(0)
        model = create_model(preset, text={"ffn_ratio": ratio, "ngram_buckets": NGRAM_BUCKETS}).eval()
        spec = graph_specs(model.cfg)["text"]
        path = export_onnx(model, "text", example_inputs(model.cfg, SIZES, 2, 1)["text"], spec,
                           folder / f"text_r{ratio}.onnx")
        graphs[f"r{ratio} float"] = path
        if int8:
            graphs[f"r{ratio} int8"] = quantize_text_graph(path, folder / f"text_r{ratio}.int8.onnx")
    return graphs


def time_graphs(graphs: dict[str, Path], lengths: Sequence[int], rounds: int, repeats: int,
                seed: int = 0) -> dict[tuple[str, int], list[float]]:
    """Seconds per ``session.run`` of every graph at every length, taking turns (see the module docstring)."""
    from mmemb.export.parity import onnx_session

    sessions = {k: onnx_session(p, 1) for k, p in graphs.items()}
    rng = np.random.default_rng(seed)
    times: dict[tuple[str, int], list[float]] = {(k, n): [] for k in sessions for n in lengths}
    for _ in range(rounds):
        for n in lengths:
            feeds = random_query_feed(rng, n, ["text_ids", "text_attention", "text_field_ids", "text_ngrams"],
                                      ngram_high=NGRAM_BUCKETS)
            for name, session in sessions.items():
                x = {i.name: feeds[i.name] for i in session.get_inputs()}
                for _ in range(20):
                    session.run(None, x)
                for _ in range(repeats):
                    start = time.perf_counter()
                    session.run(None, x)
                    times[(name, n)].append(time.perf_counter() - start)
    return times


def table(times: dict[tuple[str, int], list[float]], lengths: Sequence[int]) -> str:
    names = list(dict.fromkeys(k for k, _ in times))
    lines = ["| graph | tokens | p50 ms | p99 ms | p50 vs first ratio |", "|---|---:|---:|---:|---:|"]
    for n in lengths:
        for name in names:
            ms = np.asarray(times[(name, n)]) * 1e3
            kind = name.split()[1]
            first = next(k for k in names if k.endswith(kind))
            ratio = np.median(ms) / np.median(np.asarray(times[(first, n)]) * 1e3)
            lines.append(f"| {name} | {n} | {np.percentile(ms, 50):.3f} | {np.percentile(ms, 99):.3f} | {ratio:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="student_small")
    p.add_argument("--ratios", type=int, nargs="+", default=[4, 2, 1], help="text.ffn_ratio values; the first is the reference")
    p.add_argument("--lengths", type=int, nargs="+", default=[7, 13, 23], help="tokens per query (the demo's p50, p90, p99)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--repeats", type=int, default=200, help="timed calls per graph, length and round")
    p.add_argument("--no-int8", action="store_true", help="the float graphs only")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        graphs = export_graphs(args.preset, args.ratios, Path(tmp), int8=not args.no_int8)
        times = time_graphs(graphs, args.lengths, args.rounds, args.repeats)
    print(f"{args.preset}: session.run of the text graph alone, batch 1, one thread; {args.rounds} rounds x "
          f"{args.repeats} calls per graph and length")
    print(table(times, args.lengths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
