"""Import the KuaiRec caption/category CSV (``assets/kuairec/kuairec_caption_category.csv``) as a manifest.

KuaiRec (Gao et al., CIKM 2022, https://kuairec.com, CC BY-SA 4.0) ships one row per video with the
columns ``video_id, manual_cover_text, caption, topic_tag`` and three category levels as id + name.
Each row becomes a :class:`~mmemb.data.manifest.VideoRecord`:

=============  ===========================================================================================
``id``          ``video_id`` as a string
``caption``     ``caption`` with every ``#hashtag`` word and every account mention ``@name(O123)`` removed
                (see :func:`clean_caption`), whitespace collapsed; ``None`` when nothing is left
``cover_text``  ``manual_cover_text``; ``"UNKNOWN"`` becomes ``None``
``hashtags``    ``topic_tag`` parsed (``[a,b,c]``, not JSON; ``[]`` is empty), order kept, duplicates dropped
``category``    the chosen level's category name; ``"UNKNOWN"`` (id -124) becomes ``None``
=============  ===========================================================================================

KuaiRec has no clips, no ASR, no queries, no comments and no publish time.

Trap handled here: the file has bare ``\\r`` characters inside unquoted fields (videos 1378, 1613, 5910 and
6331). A CSV parser treats them as line ends and returns 10,732 rows instead of 10,728; we replace every
``\\r`` that is not followed by ``\\n`` with a space before parsing.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from .manifest import VideoRecord, write_manifest
from .text import strip_hashtags

__all__ = [
    "CategoryLevel",
    "KUAIREC_COLUMNS",
    "ImportReport",
    "read_kuairec",
    "import_kuairec",
    "kuairec_categories",
    "parse_topic_tag",
    "clean_caption",
    "strip_hashtags",
    "strip_mentions",
]

CategoryLevel = Literal[1, 2, 3]

KUAIREC_COLUMNS = (
    "video_id", "manual_cover_text", "caption", "topic_tag",
    "first_level_category_id", "first_level_category_name",
    "second_level_category_id", "second_level_category_name",
    "third_level_category_id", "third_level_category_name",
)
_LEVEL_COLUMNS = {1: "first_level_category_name", 2: "second_level_category_name", 3: "third_level_category_name"}
_UNKNOWN = "UNKNOWN"

_SPACES = re.compile(r"\s+")
# An account mention with its numeric id, '@快手创作者服务中心(O40300138)' (the id's ')' is sometimes cut off;
# names may contain '#': '@#徐朝帅(O1083707370)', '@#-l_-#(O1198399393)').
_MENTION = re.compile(r"@[^@\n]{1,30}?\(O\d+\)?")


# ----------------------------------------------------------------------------- field parsing


def parse_topic_tag(value: str) -> list[str]:
    """Parse a ``topic_tag`` cell: ``"[a,b,c]"`` -> ``["a", "b", "c"]``, ``"[]"`` -> ``[]``.

    Items are stripped, empty items and duplicates dropped, order kept. Raises ``ValueError`` when the
    cell is not bracketed.
    """
    value = value.strip()
    if not (value.startswith("[") and value.endswith("]")):
        raise ValueError(f"topic_tag must look like [a,b,c], got {value!r:.60}")
    items = (item.strip() for item in value[1:-1].split(","))
    return list(dict.fromkeys(item for item in items if item))


def strip_mentions(caption: str) -> str:
    """Remove account mentions ``@name(O<digits>)`` (1,153 KuaiRec captions have some).

    They name accounts, not content, and ``topic_tag`` often lists the mentioned account as a hashtag
    (``@快手舞蹈(O40300097)`` -> tag ``快手舞蹈``), so keeping them would leak labels into the input.
    Plain ``@word`` without an id is left alone (it cannot be told apart from text).
    """
    return _SPACES.sub(" ", _MENTION.sub(" ", caption)).strip()


def clean_caption(caption: str, tags: Sequence[str] = ()) -> str | None:
    """The caption as a model input: mentions and hashtags removed, whitespace collapsed, ``None`` if empty."""
    return strip_hashtags(strip_mentions(caption), tags) or None


def _none_if_unknown(value: str) -> str | None:
    value = _SPACES.sub(" ", value).strip()
    return None if not value or value == _UNKNOWN else value


# ----------------------------------------------------------------------------- reading the CSV


@dataclass
class _Row:
    line: int  # 1-based line where the row starts
    record: VideoRecord | None
    categories: tuple[str | None, str | None, str | None] | None
    error: str | None = None


def _read_text(csv_path: Path) -> str:
    """The file as text with bare ``\\r`` (not part of ``\\r\\n``) turned into spaces."""
    if not csv_path.exists():
        raise FileNotFoundError(f"KuaiRec CSV not found: {csv_path}")
    text = csv_path.read_bytes().decode("utf-8-sig")
    return re.sub(r"\r(?!\n)", " ", text)


def _rows(csv_path: str | Path, category_level: int) -> tuple[list[_Row], int]:
    """Parse every data row; returns the rows (good ones with a record, bad ones with an error) and the
    number of data rows read."""
    if category_level not in (1, 2, 3):
        raise ValueError(f"category_level must be 1, 2 or 3, got {category_level!r}")
    csv_path = Path(csv_path)
    reader = csv.reader(io.StringIO(_read_text(csv_path), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ValueError(f"{csv_path}: empty file, expected a header with {', '.join(KUAIREC_COLUMNS)}") from None
    missing = [c for c in KUAIREC_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{csv_path}:1: header lacks column(s) {', '.join(missing)}; got {', '.join(header)}")
    col = {name: header.index(name) for name in KUAIREC_COLUMNS}
    rows: list[_Row] = []
    seen: dict[str, int] = {}
    start = reader.line_num + 1
    for cells in reader:
        line, start = start, reader.line_num + 1
        rows.append(_parse_row(cells, line, col, len(header), category_level, seen))
    return rows, len(rows)


def _parse_row(
    cells: list[str], line: int, col: dict[str, int], width: int, level: int, seen: dict[str, int]
) -> _Row:
    """One CSV row -> record and its three category names, or an error naming the column."""
    if len(cells) != width:
        return _Row(line, None, None, f"expected {width} columns, got {len(cells)}")
    vid = cells[col["video_id"]].strip()
    if not vid.isdigit():
        return _Row(line, None, None, f"column 'video_id': not a non-negative integer: {vid!r:.40}")
    vid = str(int(vid))
    if vid in seen:
        return _Row(line, None, None, f"column 'video_id': duplicate id {vid} (first on line {seen[vid]})")
    try:
        hashtags = parse_topic_tag(cells[col["topic_tag"]])
    except ValueError as exc:
        return _Row(line, None, None, f"column 'topic_tag': {exc}")
    seen[vid] = line
    cats = tuple(_none_if_unknown(cells[col[_LEVEL_COLUMNS[k]]]) for k in (1, 2, 3))
    record = VideoRecord(
        id=vid,
        caption=clean_caption(cells[col["caption"]], hashtags),
        cover_text=_none_if_unknown(cells[col["manual_cover_text"]]),
        hashtags=hashtags,
        category=cats[level - 1],
    )
    return _Row(line, record, cats)  # type: ignore[arg-type]


def read_kuairec(csv_path: str | Path, category_level: CategoryLevel = 1, strict: bool = True) -> list[VideoRecord]:
    """Read the KuaiRec caption/category CSV into records (see the module docstring for the mapping).

    ``category_level`` picks the category names (KuaiRec uses 38 level-1, 137 level-2 and 220 level-3
    names; level 3 is the finest and the most often UNKNOWN). With ``strict`` a malformed
    row raises ``ValueError`` naming the file, line and column; otherwise it is skipped (use
    :func:`import_kuairec` to see why).
    """
    rows, _ = _rows(csv_path, category_level)
    bad = [r for r in rows if r.error is not None]
    if strict and bad:
        raise ValueError(f"{csv_path}:{bad[0].line}: {bad[0].error} ({len(bad)} bad row(s) in all)")
    return [r.record for r in rows if r.record is not None]


def kuairec_categories(csv_path: str | Path) -> dict[str, tuple[str | None, str | None, str | None]]:
    """Video id -> (level-1, level-2, level-3) category names, ``None`` where KuaiRec says UNKNOWN."""
    rows, _ = _rows(csv_path, 1)
    return {r.record.id: r.categories for r in rows if r.record is not None and r.categories is not None}


# ----------------------------------------------------------------------------- import


@dataclass
class ImportReport:
    """What :func:`import_kuairec` read and wrote."""

    csv_path: str
    out_path: str
    category_level: int
    rows_read: int  # data rows the CSV parser returned (header excluded)
    records: int  # records written
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, reason) of each row left out
    videos_with_hashtags: int = 0
    distinct_hashtags: int = 0
    videos_with_caption: int = 0
    videos_with_cover_text: int = 0
    videos_with_category: int = 0
    distinct_categories: int = 0

    def __str__(self) -> str:
        lines = [
            f"KuaiRec import: {self.csv_path} -> {self.out_path}",
            f"rows read: {self.rows_read}, records written: {self.records}, rows skipped: {len(self.skipped)}",
            f"videos with hashtags: {self.videos_with_hashtags}, distinct hashtags: {self.distinct_hashtags}",
            f"videos with caption: {self.videos_with_caption}, with cover text: {self.videos_with_cover_text}",
            f"category level {self.category_level}: {self.distinct_categories} categories, "
            f"{self.videos_with_category} videos with one",
        ]
        lines += [f"  skipped {self.csv_path}:{line}: {why}" for line, why in self.skipped]
        return "\n".join(lines)


def import_kuairec(
    csv_path: str | Path, out_path: str | Path, category_level: CategoryLevel = 1
) -> ImportReport:
    """Convert the KuaiRec CSV into a manifest at ``out_path`` (``.jsonl`` or ``.parquet``).

    Malformed rows are skipped and listed in the report rather than raised.
    """
    rows, rows_read = _rows(csv_path, category_level)
    records = [r.record for r in rows if r.record is not None]
    write_manifest(records, out_path)
    return ImportReport(
        csv_path=str(csv_path),
        out_path=str(out_path),
        category_level=int(category_level),
        rows_read=rows_read,
        records=len(records),
        skipped=[(r.line, r.error) for r in rows if r.error is not None],
        videos_with_hashtags=sum(1 for r in records if r.hashtags),
        distinct_hashtags=len({t for r in records for t in r.hashtags}),
        videos_with_caption=sum(1 for r in records if r.caption),
        videos_with_cover_text=sum(1 for r in records if r.cover_text),
        videos_with_category=sum(1 for r in records if r.category),
        distinct_categories=len({r.category for r in records if r.category}),
    )
