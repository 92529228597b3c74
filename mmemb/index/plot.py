"""Recall-vs-latency plots of index sweeps, with the Pareto front (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Sequence

__all__ = ["pareto_front", "plot_recall_latency"]

Latency = Literal["p50_ms", "p99_ms"]
LATENCIES: tuple[str, ...] = ("p50_ms", "p99_ms")
KIND_COLOURS = {"flat": "black", "ivf_flat": "tab:blue", "ivf_pq": "tab:orange", "opq_ivf_pq": "tab:red",
                "hnsw": "tab:green"}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the ``(latency, recall)`` points no other point dominates, by increasing latency.

    A point is dominated when another has latency ``<=`` and recall ``>=`` with at least one
    strict; exact duplicates do not dominate each other, so both are kept. Points with a nan
    coordinate are never on the front.
    """
    valid = [i for i, (lat, rec) in enumerate(points) if not (math.isnan(lat) or math.isnan(rec))]
    order = sorted(valid, key=lambda i: (points[i][0], -points[i][1]))  # faster first, then better
    front: list[int] = []
    best_recall = -math.inf
    for i in order:
        lat, rec = points[i]
        if rec > best_recall:
            front.append(i)
            best_recall = rec
        elif front and (lat, rec) == tuple(points[front[-1]]):  # exact duplicate of a front point
            front.append(i)
    return front


def plot_recall_latency(rows: Sequence[dict], path: str | Path, k: int = 10, latency: Latency = "p50_ms",
                        title: str | None = None) -> Path:
    """Scatter recall@k against single-query latency (log scale) of sweep rows, one colour per
    kind (Flat as a star), the Pareto front circled, joined and labelled; written as a PNG.
    Rows without that recall or latency are left out."""
    if latency not in LATENCIES:
        raise ValueError(f"latency={latency!r} is not one of {LATENCIES}")
    key = f"recall@{k}"
    usable = [r for r in rows if r.get(latency) is not None and r.get(key) is not None and r[latency] > 0]
    if not usable:
        raise ValueError(f"no row has both {key} and a positive {latency} to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    try:
        for kind in dict.fromkeys(r["kind"] for r in usable):
            mine = [r for r in usable if r["kind"] == kind]
            flat = kind == "flat"
            ax.scatter([r[latency] for r in mine], [r[key] for r in mine], s=90 if flat else 28, alpha=0.8,
                       marker="*" if flat else "o", color=KIND_COLOURS.get(kind, "tab:gray"), label=kind, zorder=3)
        front = [usable[i] for i in pareto_front([(r[latency], r[key]) for r in usable])]
        ax.plot([r[latency] for r in front], [r[key] for r in front], "--", color="gray", lw=1,
                label="Pareto front", zorder=2)
        ax.scatter([r[latency] for r in front], [r[key] for r in front], s=80, facecolors="none",
                   edgecolors="black", lw=0.8, zorder=4)
        labelled = front + [r for r in usable if r["kind"] == "flat" and r not in front]
        for r in labelled:
            ax.annotate(r["setting"], (r[latency], r[key]), textcoords="offset points", xytext=(4, -10), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel(f"single-query latency {latency.split('_')[0]} (ms, 1 thread, log scale)")
        ax.set_ylabel(f"recall@{k} vs exact")
        ax.set_title(title or f"recall@{k} vs {latency.split('_')[0]} latency")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path
