"""``mmemb data check``: validate a manifest and report coverage, labels, decode failures and
partial clips (streams that decode only partway, with the share that decodes)."""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .decode import PARTIAL, DecodeConfig, load_clip
from .failures import FailureLog
from .labels import clean_hashtags, normalize_label
from .manifest import ManifestIssue, VideoRecord, check_manifest

__all__ = ["CheckReport", "check"]

_COVERAGE_FIELDS = ("video", "caption", "cover_text", "asr", "hashtags", "queries", "comments", "category",
                    "publish_time")


@dataclass
class CheckReport:
    manifest: str
    records: int
    issues: list[ManifestIssue]
    coverage: dict[str, int]  # field -> records that have it
    hashtag_uses: int = 0
    distinct_hashtags: int = 0
    hashtags_min_freq: int = 0  # distinct hashtags used by >= min_freq videos
    min_freq: int = 5
    removed_hashtags: dict[str, str] = field(default_factory=dict)
    distinct_queries: int = 0
    categories: dict[str, int] = field(default_factory=dict)
    decoded: int = 0  # clips whose decoding was attempted
    failures: FailureLog = field(default_factory=FailureLog)
    no_audio: int = 0  # clips that decode but have no audio track (masked, not a failure)
    # streams that decode only partway (a file cut short): (path, modality, share of the stated
    # duration that decodes); kept for training, counted in ``failures`` as (modality, "partial")
    partial: list[tuple[str, str, float]] = field(default_factory=list)

    @property
    def errors(self) -> list[ManifestIssue]:
        return [i for i in self.issues if not i.message.startswith("unknown field")]

    @property
    def ok(self) -> bool:
        """No manifest errors, no decode failures and no partial clips."""
        return not self.errors and self.failures.total() == 0

    def to_text(self, max_issues: int = 50) -> str:
        lines = [f"manifest: {self.manifest}", f"valid records: {self.records}"]
        if self.issues:
            lines.append(f"problems: {len(self.errors)} errors, {len(self.issues) - len(self.errors)} warnings")
            for issue in self.issues[:max_issues]:
                lines.append(f"  {issue}")
            if len(self.issues) > max_issues:
                lines.append(f"  ... and {len(self.issues) - max_issues} more")
        else:
            lines.append("problems: none")
        lines.append("modality coverage:")
        for name in _COVERAGE_FIELDS:
            n = self.coverage.get(name, 0)
            share = n / self.records if self.records else 0.0
            lines.append(f"  {name:<13} {n:>8}  {share:6.1%}")
        lines.append(f"hashtags: {self.hashtag_uses} uses, {self.distinct_hashtags} distinct, "
                     f"{self.hashtags_min_freq} used by >= {self.min_freq} videos")
        if self.removed_hashtags:
            lines.append(f"boilerplate hashtags the cleaner would remove: {len(self.removed_hashtags)}")
            for tag, why in list(self.removed_hashtags.items())[:10]:
                lines.append(f"  {tag}: {why}")
        lines.append(f"queries: {self.distinct_queries} distinct")
        if self.categories:
            top = ", ".join(f"{k} ({v})" for k, v in list(self.categories.items())[:12])
            lines.append(f"categories: {len(self.categories)}: {top}")
        if self.decoded:
            lines.append(f"decoded clips: {self.decoded}, failures: {self.failures.total() - len(self.partial)}, "
                         f"partial: {len(self.partial)}, without audio track: {self.no_audio}")
            lines.append(self.failures.summary())
            if self.partial:
                lines.append("partial streams (they train on the part that decodes):")
                for path, modality, share in self.partial[:max_issues]:
                    lines.append(f"  {modality} {share:6.1%} decodes  {path}")
                if len(self.partial) > max_issues:
                    lines.append(f"  ... and {len(self.partial) - max_issues} more")
        lines.append("status: OK" if self.ok else "status: PROBLEMS FOUND")
        return "\n".join(lines)


def _coverage(records: list[VideoRecord]) -> dict[str, int]:
    counts = collections.Counter()
    for r in records:
        for name in _COVERAGE_FIELDS:
            value = getattr(r, name)
            if value not in (None, [], ""):
                counts[name] += 1
    return dict(counts)


def _decode_all(records: list[VideoRecord], cfg: DecodeConfig, report: CheckReport, workers: int,
                progress: bool) -> None:
    from tqdm.auto import tqdm

    with_video = [r for r in records if r.video]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda r: (r, load_clip(r.video, cfg)), with_video)
        for record, clip in tqdm(results, total=len(with_video), desc="decoding", unit="clip", disable=not progress):
            report.decoded += 1
            if clip.video_error:
                report.failures.record(record.video, "video", clip.video_error)
            if clip.audio_error == "no_audio":
                report.no_audio += 1
            elif clip.audio_error and not clip.video_error:
                report.failures.record(record.video, "audio", clip.audio_error)
            for modality, share in (("video", clip.video_partial), ("audio", clip.audio_partial)):
                if share is not None:
                    report.partial.append((record.video, modality, share))
                    report.failures.record(record.video, modality, PARTIAL, f"decodes {share:.0%}")


def check(manifest: str | Path, decode: bool = True, min_freq: int = 5, workers: int = 2,
          progress: bool = True, decode_cfg: DecodeConfig | None = None) -> CheckReport:
    """Validate every record, then (with ``decode``) try decoding every clip; never raises on bad data."""
    records, issues = check_manifest(manifest)
    report = CheckReport(str(manifest), len(records), issues, _coverage(records), min_freq=min_freq)
    tags = [[normalize_label(t) for t in r.hashtags] for r in records]
    counts = collections.Counter(t for ts in tags for t in set(ts) if t)
    report.hashtag_uses = sum(len(t) for t in tags)
    report.distinct_hashtags = len(counts)
    report.hashtags_min_freq = sum(1 for c in counts.values() if c >= min_freq)
    if counts:
        _, cleaning = clean_hashtags(tags, [r.category for r in records])
        report.removed_hashtags = dict(cleaning.removed)
    report.distinct_queries = len({normalize_label(q.text) for r in records for q in r.queries})
    report.categories = dict(collections.Counter(r.category for r in records if r.category).most_common())
    if decode:
        cfg = decode_cfg or DecodeConfig(num_frames=4, frame_size=64, decode_threads=1)  # the pool fills the cores
        _decode_all(records, cfg, report, workers, progress)
    return report
