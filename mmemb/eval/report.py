"""Reporting helpers of ``mmemb eval`` (``evaluate.py``): progress bars, JSON / CSV / Markdown outputs, bar charts.

Progress (:func:`progress`)
---------------------------
* on a terminal (``stderr.isatty()``): a ``tqdm`` bar;
* anywhere else (CI logs, ``nohup``, ``| tee``): plain lines on stderr, one when the loop starts, one
  at most every ``interval`` seconds (default 30, environment variable ``MMEMB_PROGRESS_INTERVAL``)
  and one when it ends, e.g. ``[12:03:04] embedding test: 3/5 batch (60%), 4.1 s, ~2.7 s left``:
  no carriage returns, so a log file stays one update per line;
* ``enabled=False`` (``--no-progress``): nothing.

Outputs
-------
:func:`json_ready` turns nan/inf into ``null`` and numpy scalars into Python numbers;
:func:`write_json`, :func:`write_csv` and :func:`markdown_table` write what ``evaluate.py`` prints;
:func:`plot_bars` draws grouped bars (one group per metric, one bar per model) with the chance or
baseline of each metric as a black tick, on the Agg backend (no display needed).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

__all__ = [
    "LineProgress",
    "progress",
    "is_tty",
    "json_ready",
    "write_json",
    "write_csv",
    "markdown_table",
    "fmt",
    "plot_bars",
    "replace_block",
    "write_readme_block",
]

DEFAULT_INTERVAL_S = 30.0


# ----------------------------------------------------------------------------------------- progress


def is_tty(stream=None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


class LineProgress:
    """A progress report for logs: whole lines, throttled to one per ``interval`` seconds.

    Iterate over it like a ``tqdm`` bar, or call :meth:`update` and :meth:`close` (also a context
    manager). :meth:`set_postfix_str` adds a note to the next line.
    """

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", stream=None, interval: float | None = None):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        self.desc = desc or "progress"
        self.unit = unit
        self.stream = stream
        env = os.environ.get("MMEMB_PROGRESS_INTERVAL")
        self.interval = float(env) if interval is None and env else (DEFAULT_INTERVAL_S if interval is None
                                                                     else float(interval))
        self.n = 0
        self.start = self._last = time.monotonic()
        self.postfix = ""
        self.closed = False
        self._write(f"{self.desc}: start" + (f" ({self.total} {self._units(self.total)})" if self.total is not None
                                             else ""))

    def _units(self, n: int) -> str:
        return self.unit if n == 1 or self.unit.endswith("s") else self.unit + ("es" if self.unit.endswith("h")
                                                                              else "s")

    def _write(self, text: str) -> None:
        stream = sys.stderr if self.stream is None else self.stream
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=stream, flush=True)

    def _status(self) -> str:
        elapsed = time.monotonic() - self.start
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        eta = ""
        if self.total and 0 < self.n < self.total:
            eta = f", ~{_seconds(elapsed / self.n * (self.total - self.n))} left"
        note = f" [{self.postfix}]" if self.postfix else ""
        return f"{self.desc}: {done} {self._units(self.total or self.n)}{pct}, {_seconds(elapsed)}{eta}{note}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._write(self._status())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = str(text)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write(self._status().replace(f"{self.desc}: ", f"{self.desc}: done, ", 1))

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("LineProgress was created without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _NoProgress:
    """The disabled bar: the iterable itself, and no-op methods."""

    def __init__(self, iterable: Iterable | None = None, **_: Any):
        self.iterable = iterable
        self.n = 0

    def __iter__(self) -> Iterator:
        return iter(self.iterable if self.iterable is not None else ())

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_NoProgress":
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True, stream=None, interval: float | None = None):
    """A progress bar over ``iterable`` (or a manual one: ``update`` / ``close``); see the module docstring."""
    if not enabled:
        return _NoProgress(iterable)
    if is_tty(stream):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, file=stream)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, stream=stream, interval=interval)


# ------------------------------------------------------------------------------------------ outputs


def json_ready(value: Any) -> Any:
    """``value`` with nan/inf as None, numpy scalars/arrays as Python numbers/lists, paths as strings."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(data: Any, path: str | Path) -> Path:
    """Write ``data`` (through :func:`json_ready`) as indented UTF-8 JSON; creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_ready(data), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path, columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` as CSV; columns = ``columns`` or the union of the keys in first-seen order;
    missing values and nan are empty cells."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(columns) if columns is not None else list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if json_ready(row.get(k)) is None else json_ready(row.get(k)) for k in columns})
    return path


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: ``–`` for None/nan, floats with ``digits`` decimals, the rest as strings."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None) -> str:
    """A Markdown table; ``align`` per column ``"l"`` or ``"r"`` (default: first left, others right)."""
    align = list(align) if align is not None else ["l"] + ["r"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" if a == "l" else "---:" for a in align) + " |"]
    lines += ["| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- plots


def plot_bars(metrics: Sequence[str], series: Mapping[str, Sequence[float | None]], path: str | Path,
              reference: Sequence[float | None] | None = None, reference_label: str = "chance / baseline",
              title: str = "", ylabel: str = "value") -> Path:
    """Grouped bar chart: one group per metric, one bar per series (model); ``reference`` values
    (chance or baseline, None = none) are drawn as black ticks over each group. Written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(series)
    if not metrics or not names:
        raise ValueError("plot_bars needs at least one metric and one series")
    n_groups, n_series = len(metrics), len(names)
    width = 0.8 / n_series
    x = np.arange(n_groups)
    fig, ax = plt.subplots(figsize=(min(16.0, max(7.0, 0.8 * n_groups + 0.2 * n_groups * n_series + 2.5)), 5.0))
    try:
        for i, name in enumerate(names):
            values = [np.nan if v is None else float(v) for v in series[name]]
            bars = ax.bar(x - 0.4 + width * (i + 0.5), values, width, label=name)
            for bar, v in zip(bars, values):
                if not math.isnan(v) and n_series <= 3:  # more series: the labels would overlap
                    ax.annotate(f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, v), textcoords="offset points",
                                xytext=(0, 2), ha="center", fontsize=7)
        if reference is not None:
            shown = False
            for xi, ref in zip(x, reference):
                if ref is not None and not math.isnan(float(ref)):
                    ax.hlines(float(ref), xi - 0.45, xi + 0.45, colors="black", linestyles="--", lw=1.2,
                              label=None if shown else reference_label, zorder=3)
                    shown = True
        ax.set_xticks(x)
        ax.set_xticklabels(metrics, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        top = max([float(v) for s in series.values() for v in s if v is not None and not math.isnan(float(v))]
                  + [float(r) for r in (reference or []) if r is not None and not math.isnan(float(r))] + [1e-9])
        ax.set_ylim(0, top * 1.15)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: bars stay readable
        if title:
            ax.set_title(title)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------- README blocks


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the lines between ``<!-- table:name -->`` and ``<!-- /table:name -->`` replaced by
    ``body`` (a ValueError when the block is missing); an empty block (the two markers on consecutive lines,
    as a new table starts) is filled."""
    pattern = re.compile(rf"(<!-- table:{re.escape(name)} -->\n)(?:.*?\n)?(<!-- /table:{re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"the README has no <!-- table:{name} --> ... <!-- /table:{name} --> block")
    return pattern.sub(lambda m: m.group(1) + body.strip("\n") + "\n" + m.group(2), text)


def write_readme_block(path: str | Path, name: str, body: str) -> Path:
    """Rewrite the block ``name`` of the Markdown file at ``path`` (:func:`replace_block`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no README at {path}")
    path.write_text(replace_block(path.read_text(encoding="utf-8"), name, body), encoding="utf-8")
    return path
