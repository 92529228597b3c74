"""Counting bad inputs (undecodable or missing modalities) by modality and reason.

DataLoader workers never log failures themselves: :func:`mmemb.data.decode.load_clip` puts the
reason into each sample and the main process feeds it to one :class:`FailureLog` per split. The
log is a plain picklable object, so per-worker or per-run logs can also be combined with
:meth:`FailureLog.merge`.

Reasons are those of :data:`mmemb.data.decode.REASONS`, plus ``"partial"``
(:data:`mmemb.data.decode.PARTIAL`: a stream that decodes only partway, kept for training but
reported), and ``"no_audio"`` for clips without an audio track (recorded when a caller chooses to,
but it is not a broken input: no warning is logged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

__all__ = ["FailureLog"]

log = logging.getLogger(__name__)

_SILENT_REASONS = ("no_audio",)  # expected absences: counted, never warned about


@dataclass
class FailureLog:
    """Counts of bad inputs by ``(modality, reason)``, with one example path each."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (modality, reason) -> count
    examples: dict[tuple[str, str], str] = field(default_factory=dict)  # (modality, reason) -> first path
    warned: set[tuple[str, str]] = field(default_factory=set)  # (path, modality) already warned about

    def record(self, path: str, modality: str, reason: str, detail: str = "") -> None:
        """Count one failure; log a warning the first time this ``(path, modality)`` is seen."""
        if not modality or not reason:
            raise ValueError("mmemb/data/failures.py: record needs a modality and a reason, "
                             f"got {modality!r}, {reason!r}")
        key = (modality, reason)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.examples.setdefault(key, str(path))
        seen = (str(path), modality)
        if seen not in self.warned:
            self.warned.add(seen)
            if reason not in _SILENT_REASONS:
                log.warning("bad %s in %s: %s%s", modality, path, reason, f" ({detail})" if detail else "")

    def total(self) -> int:
        """All recorded failures."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """An aligned table (modality, reason, count, example path), most frequent first."""
        if not self.counts:
            return "no decode failures"
        rows = [("modality", "reason", "count", "example")]
        for (modality, reason), n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])):
            rows.append((modality, reason, str(n), self.examples.get((modality, reason), "")))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{m:<{widths[0]}}  {r:<{widths[1]}}  {n:>{widths[2]}}  {ex}".rstrip() for m, r, n, ex in rows]
        lines.append(f"{'total':<{widths[0]}}  {'':<{widths[1]}}  {self.total():>{widths[2]}}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, int]:
        """Counts keyed ``"modality/reason"``, e.g. ``{"video/truncated": 3}``."""
        return {f"{m}/{r}": n for (m, r), n in sorted(self.counts.items())}

    def merge(self, other: "FailureLog") -> None:
        """Add ``other``'s counts (and examples, and warned paths) to this log."""
        for key, n in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + n
        for key, path in other.examples.items():
            self.examples.setdefault(key, path)
        self.warned |= other.warned

    def reset(self) -> None:
        """Forget all counts (e.g. at the end of an epoch); paths already warned about stay quiet."""
        self.counts.clear()
        self.examples.clear()
