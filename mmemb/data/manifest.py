"""The manifest: one record per video, in JSONL or Parquet.

Fields (every one but ``id`` may be missing; a missing modality is masked, never invented):

=============  ===========================================================================
``id``          unique string (ints are accepted and turned into strings)
``video``       path of the clip, relative to the manifest's folder (absolute paths allowed)
``title``       alias of ``caption`` (``caption`` wins when both are given)
``caption``     the creator's text (``#hashtag`` words are removed from every text field before
                tokenisation, see :func:`mmemb.data.vocab.record_texts`)
``cover_text``  text drawn on the cover (OCR-like)
``asr``         speech transcript
``hashtags``    list of strings
``queries``     list of ``{"text": str, "clicks": finite number >= 0}`` (a bare string means 1 click)
``comments``    list of strings
``category``    string, for evaluation only
``publish_time`` unix seconds (finite number) or an ISO-8601 date/time string
=============  ===========================================================================

:func:`read_manifest` raises :class:`ManifestError` naming the first bad record and counting the others;
:func:`check_manifest` collects every problem with its file, line and field and keeps the good records.
``NaN`` and ``Infinity`` (which JSON parsers accept) are errors in numeric fields.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

__all__ = [
    "Query",
    "VideoRecord",
    "ManifestIssue",
    "ManifestError",
    "read_manifest",
    "check_manifest",
    "manifest_errors",
    "write_manifest",
    "MANIFEST_FIELDS",
]

MANIFEST_FIELDS = (
    "id", "video", "title", "caption", "cover_text", "asr", "hashtags", "queries", "comments",
    "category", "publish_time",
)
_TEXT_FIELDS = ("caption", "cover_text", "asr", "category")
_LIST_FIELDS = ("hashtags", "comments")
UNKNOWN_FIELD = "unknown field"  # message prefix of the warnings of check_manifest (the record is kept)


@dataclass
class Query:
    """A search query that led to clicks on the video."""

    text: str
    clicks: float = 1.0


@dataclass
class VideoRecord:
    """One video of a manifest, with paths resolved and empty strings turned into ``None``."""

    id: str
    video: str | None = None  # absolute path, or None when the record has no clip
    caption: str | None = None
    cover_text: str | None = None
    asr: str | None = None
    hashtags: list[str] = field(default_factory=list)
    queries: list[Query] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    category: str | None = None
    publish_time: float | None = None  # unix seconds

    def to_json(self, root: Path | None = None) -> dict[str, Any]:
        """A JSON-ready dict; ``video`` is made relative to ``root`` when it lies below it."""
        out: dict[str, Any] = {"id": self.id}
        if self.video is not None:
            video = Path(self.video)
            if root is not None:
                try:
                    video = video.resolve().relative_to(Path(root).resolve())
                except ValueError:
                    pass
            out["video"] = video.as_posix()
        for name in ("caption", "cover_text", "asr", "category", "publish_time"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for name in ("hashtags", "comments"):
            if getattr(self, name):
                out[name] = list(getattr(self, name))
        if self.queries:
            out["queries"] = [dataclasses.asdict(q) for q in self.queries]
        return out


@dataclass(frozen=True)
class ManifestIssue:
    """One problem found in a manifest, located by file, line (1-based) and field."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: field '{self.field}': {self.message}"


class ManifestError(ValueError):
    """A manifest holds invalid records. The message is one line: the file, line and field of the
    first one, how many more there are, and the command that lists them all::

        m.jsonl:3: field 'publish_time': expected ... (2 more bad records; run `mmemb data check m.jsonl` to see them)

    ``issue`` is the first problem, ``issues`` all of them (one per bad record).
    """

    def __init__(self, issues: ManifestIssue | Sequence[ManifestIssue]):
        issues = [issues] if isinstance(issues, ManifestIssue) else list(issues)
        if not issues:
            raise ValueError("ManifestError needs at least one issue")
        first, more = issues[0], len(issues) - 1
        others = f"{more} more bad record{'s' if more != 1 else ''}" if more else "no other bad record"
        super().__init__(f"{first} ({others}; run `mmemb data check {first.file}` to see them)")
        self.issue = first
        self.issues = issues


# ----------------------------------------------------------------------------- parsing one record


class _FieldError(ValueError):
    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


def _opt_text(raw: dict, name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):  # Parquet/pandas nulls
        return None
    if not isinstance(value, str):
        raise _FieldError(name, f"expected a string, got {type(value).__name__} {value!r:.60}")
    value = value.strip()
    return value or None


def _str_list(raw: dict, name: str) -> list[str]:
    value = raw.get(name)
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)) and not hasattr(value, "tolist"):
        raise _FieldError(name, f"expected a list of strings, got {type(value).__name__} {value!r:.60}")
    items = value.tolist() if hasattr(value, "tolist") else list(value)
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise _FieldError(f"{name}[{i}]", f"expected a string, got {type(item).__name__} {item!r:.60}")
        if item.strip():
            out.append(item.strip())
    return out


def _finite(x: int | float) -> bool:
    """Whether ``x`` is a finite number (NaN, +-Infinity and ints beyond float range are not)."""
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _queries(raw: dict) -> list[Query]:
    value = raw.get("queries")
    if value is None:
        return []
    if isinstance(value, (str, dict)) or not hasattr(value, "__iter__"):
        raise _FieldError("queries", f"expected a list of {{text, clicks}}, got {type(value).__name__}")
    items = value.tolist() if hasattr(value, "tolist") else list(value)
    out = []
    for i, item in enumerate(items):
        where = f"queries[{i}]"
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict):
            raise _FieldError(where, f"expected {{text, clicks}} or a string, got {type(item).__name__}")
        text = item.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _FieldError(f"{where}.text", f"expected a non-empty string, got {text!r:.60}")
        clicks = item.get("clicks", 1)
        if clicks is None:
            clicks = 1
        if isinstance(clicks, bool) or not isinstance(clicks, (int, float)) or not _finite(clicks) or clicks < 0:
            raise _FieldError(f"{where}.clicks", f"expected a finite number >= 0, got {clicks!r:.60}")
        out.append(Query(text=text.strip(), clicks=float(clicks)))
    return out


def _publish_time(raw: dict) -> float | None:
    value = raw.get("publish_time")
    if value is None:
        return None
    if isinstance(value, bool):
        raise _FieldError("publish_time", f"expected unix seconds or an ISO-8601 string, got {value!r}")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond float range
            seconds = math.inf
        if not math.isfinite(seconds):
            raise _FieldError("publish_time", f"expected a finite number of unix seconds, got {value!r:.60}")
        return seconds
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            parsed = _dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise _FieldError("publish_time", f"not an ISO-8601 date/time: {value!r:.60}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=_dt.timezone.utc)
        return parsed.timestamp()
    raise _FieldError("publish_time", f"expected unix seconds or an ISO-8601 string, got {type(value).__name__}")


def parse_record(raw: Any, root: Path) -> VideoRecord:
    """Turn one raw JSON object into a :class:`VideoRecord`; raises ``_FieldError`` naming the field."""
    if not isinstance(raw, dict):
        raise _FieldError("<record>", f"expected a JSON object, got {type(raw).__name__}")
    vid = raw.get("id")
    if isinstance(vid, bool) or not isinstance(vid, (str, int)) or (isinstance(vid, str) and not vid.strip()):
        raise _FieldError("id", f"required: a non-empty string or integer, got {vid!r:.60}")
    video = _opt_text(raw, "video")
    if video is not None:
        path = Path(video)
        video = str(path if path.is_absolute() else (root / path))
    caption = _opt_text(raw, "caption") or _opt_text(raw, "title")
    return VideoRecord(
        id=str(vid).strip(),
        video=video,
        caption=caption,
        cover_text=_opt_text(raw, "cover_text"),
        asr=_opt_text(raw, "asr"),
        hashtags=_str_list(raw, "hashtags"),
        queries=_queries(raw),
        comments=_str_list(raw, "comments"),
        category=_opt_text(raw, "category"),
        publish_time=_publish_time(raw),
    )


# ----------------------------------------------------------------------------- reading files


def _raw_records(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """Yield ``(line, raw_record, error)`` for a JSONL or Parquet manifest (Parquet "lines" are rows, 1-based)."""
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        for i, row in enumerate(table.to_pylist(), start=1):
            yield i, {k: v for k, v in row.items() if v is not None}, None
        return
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line), None
            except json.JSONDecodeError as exc:
                yield lineno, None, f"not valid JSON: {exc.msg} (column {exc.colno})"


def check_manifest(path: str | Path) -> tuple[list[VideoRecord], list[ManifestIssue]]:
    """Read every record, keeping the valid ones and reporting every problem (file, line, field).

    Besides per-field errors this reports duplicate ids and unknown fields (the latter as warnings
    in the issue list, prefixed ``unknown field``; such records are still kept).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"manifest not found: {path}")
    root = path.parent
    records: list[VideoRecord] = []
    issues: list[ManifestIssue] = []
    seen: dict[str, int] = {}
    for lineno, raw, error in _raw_records(path):
        if error is not None:
            issues.append(ManifestIssue(str(path), lineno, "<line>", error))
            continue
        try:
            record = parse_record(raw, root)
        except _FieldError as exc:
            issues.append(ManifestIssue(str(path), lineno, exc.field, str(exc)))
            continue
        if record.id in seen:
            issues.append(ManifestIssue(str(path), lineno, "id", f"duplicate id {record.id!r} (first on line {seen[record.id]})"))
            continue
        seen[record.id] = lineno
        for name in sorted(set(raw) - set(MANIFEST_FIELDS)):
            issues.append(ManifestIssue(str(path), lineno, name, f"{UNKNOWN_FIELD} (ignored)"))
        records.append(record)
    return records, issues


def manifest_errors(issues: Sequence[ManifestIssue]) -> list[ManifestIssue]:
    """The issues of :func:`check_manifest` that dropped a record (not the ``unknown field`` warnings)."""
    return [i for i in issues if not i.message.startswith(UNKNOWN_FIELD)]


def read_manifest(path: str | Path, strict: bool = True) -> list[VideoRecord]:
    """Read a manifest. With ``strict`` invalid records raise one :class:`ManifestError` (the first
    one's file, line and field, and how many more); otherwise they are dropped (use
    :func:`check_manifest` to see why)."""
    records, issues = check_manifest(path)
    errors = manifest_errors(issues)
    if strict and errors:
        raise ManifestError(errors)
    return records


def write_manifest(records: Iterable[VideoRecord], path: str | Path) -> Path:
    """Write records as JSONL (or Parquet when the suffix is ``.parquet``); video paths relative to the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [r.to_json(root=path.parent) for r in records]
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
        return path
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
