"""Clips of a folder (or a glob) without a manifest: ids are the paths relative to the folder.

:func:`find_clips` lists the clips (sorted, by file extension) as ``(id, path)``; :func:`scan_folder`
turns a folder into manifest records (``mmemb data scan DIR OUT`` writes them), for those who then add
captions, hashtags or categories to the manifest.
"""

from __future__ import annotations

import glob
from pathlib import Path

from .manifest import VideoRecord

__all__ = ["VIDEO_EXTENSIONS", "find_clips", "scan_folder"]

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".flv", ".wmv", ".mpg", ".mpeg", ".ts",
                    ".3gp", ".ogv")

_GLOB_CHARS = "*?["


def _is_clip(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def find_clips(source: str | Path) -> list[tuple[str, Path]]:
    """``(id, path)`` of the clips of ``source``: a folder (searched recursively, files with a
    :data:`VIDEO_EXTENSIONS` suffix) or a glob pattern (``clips/**/*.mp4``; every matching file). The id
    is the POSIX path relative to the folder (for a glob: to the part of the pattern before its first
    wildcard). Sorted by id; a folder without clips or a pattern without matches is a
    ``FileNotFoundError`` naming it."""
    text = str(source)
    if any(c in text for c in _GLOB_CHARS):
        cut = min(text.index(c) for c in _GLOB_CHARS if c in text)
        base = Path(text[:cut]) if text[:cut].endswith(("/", "\\")) else Path(text[:cut]).parent
        paths = [Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file()]
    else:
        base = Path(text)
        if not base.is_dir():
            raise FileNotFoundError(f"{base}: no such folder of clips")
        paths = [p for p in base.rglob("*") if _is_clip(p)]
    if not paths:
        raise FileNotFoundError(f"{source}: no clips found (extensions {', '.join(VIDEO_EXTENSIONS)})")
    base = base.resolve()
    clips = sorted(((p.resolve().relative_to(base).as_posix(), p.resolve()) for p in paths), key=lambda x: x[0])
    return clips


def scan_folder(folder: str | Path) -> list[VideoRecord]:
    """Manifest records of the clips of ``folder`` (:func:`find_clips`): ``id`` and ``video`` only."""
    return [VideoRecord(id=clip_id, video=str(path)) for clip_id, path in find_clips(folder)]
