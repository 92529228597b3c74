"""Approximate nearest-neighbour indexes (faiss): one factory, sweeps and recall/latency plots.

* :mod:`.factory`: :class:`IndexSpec`, :func:`build_index`, search parameters, I/O, memory,
  documents scanned per query.
* :mod:`.sweep`: :func:`run_sweep` over index settings against exact search (recall@k, latency,
  QPS, memory, build time) and its JSON/CSV/Markdown outputs.
* :mod:`.plot`: :func:`pareto_front` and :func:`plot_recall_latency`.
"""

from .factory import (
    KINDS,
    IndexSpec,
    add_refine,
    build_index,
    docs_scanned_per_query,
    gpu_available,
    index_memory_bytes,
    ivf_docs_scanned,
    load_index,
    save_index,
    search,
    set_search_params,
)
from .plot import pareto_front, plot_recall_latency
from .sweep import (
    SweepConfig,
    markdown_table,
    recall_at_k,
    run_sweep,
    target_report,
    write_csv,
    write_json,
)

__all__ = [
    "KINDS",
    "IndexSpec",
    "SweepConfig",
    "add_refine",
    "build_index",
    "docs_scanned_per_query",
    "gpu_available",
    "index_memory_bytes",
    "ivf_docs_scanned",
    "load_index",
    "markdown_table",
    "pareto_front",
    "plot_recall_latency",
    "recall_at_k",
    "run_sweep",
    "save_index",
    "search",
    "set_search_params",
    "target_report",
    "write_csv",
    "write_json",
]
