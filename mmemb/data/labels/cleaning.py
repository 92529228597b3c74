"""Hashtag cleaning: :func:`clean_hashtags` removes boilerplate hashtags (``感谢快手我要上热门``,
``作品推广``, ...) by two detectors, reported per tag in a :class:`CleaningReport`:

* rules: regular expressions for promotional phrases (:data:`DEFAULT_PATTERNS`);
* spread: a frequent tag whose distribution over content categories is no further from the global
  category distribution than chance says nothing about the content (chance-corrected
  Jensen-Shannon divergence, see :func:`clean_hashtags`).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .vocabulary import normalize_label

__all__ = ["DEFAULT_PATTERNS", "CleaningConfig", "CleaningReport", "clean_hashtags"]

# Promotional / boilerplate hashtag phrases, matched (re.search) against normalized tags. Chosen by reading
# the KuaiRec tags: each removes requests for promotion, thanks to the platform, platform programs or
# follow/like requests. Bare 快手 is deliberately absent (快手宠物天团, 跟着快手去旅行, 快手厨房 are content),
# and so are bare 粉丝 / 直播 (杰伦粉丝报到, 周杰伦直播首秀 are content).
DEFAULT_PATTERNS: tuple[str, ...] = (
    r"上热|上熱",  # 我要上热门, 用快影上热门, 感谢快手官大大送上热 (truncated)
    r"热门(?!歌|音乐|游戏|电影|电视剧|综艺|健康|养生|话题|事件|新闻|景点|美食|壁纸)",  # 热门, 爱热门, 申请热门, 同城热门; not 热门歌曲
    r"熱門",
    r"推广|推廣",  # 作品推广, 推广小助手, 智能推广
    r"官方|官大大|官大|管方|管大大|关大大",  # 爱官方爱热门, 官方别屏蔽
    r"感谢|谢谢|多谢|感恩(快手|官方|平台|遇见|所有|老铁|家人|大家)",  # 感谢快手平台; not 感恩父母
    r"创作者|创作中心|创造者|创作激励|激励计划|激励创作",  # 快手创作者服务中心, 快手创作者激励计划
    r"(服务|主播|直播)中心",  # 主播中心, 快手创业者服务中心
    r"小助手|推广助手|作者助手|商家号助手|卖货助手",  # 快手小助手
    r"助推|扶新|扶持",  # 时尚助推官, 作品推广扶新
    r"双击|点赞|关注|红心|评论666",  # 喜欢的双击加关注
    r"涨粉|互粉|粉丝(上万|过万|破万)",  # 我要涨粉丝, 粉丝上万说赚就赚
    r"限流|屏蔽",  # 跪求官方别限流
    r"^(快手)?直播(中心|中)?$|正在直播|每天直播|马上直播",  # 直播, 正在直播中
    r"dou\+|抖音",
    r"同城热|同城发现|^同城$",  # 同城热点
    r"支持快手|热爱快手|爱快手|快手平台|绿色平台|快手官方",  # 支持快手传播正能量, 感谢快手绿色平台
    r"商家号|赚流量|邀新",  # 快手创业用商家号, 商家号邀新赚流量
    r"带货王|短视频带货",  # 短视频带货王
    r"快影|一甜相机|电脑高清上传",  # editing/camera app tags: 用快影上热门, 快影助力商家号
    r"快手(九|9)周年|九周年",  # 快手九周年
    r"^(作品|视频)?(每天|每日)更新",  # 作品每天更新; not 生活小妙招每天更新
)


@dataclass
class CleaningConfig:
    """How :func:`clean_hashtags` finds boilerplate hashtags."""

    rules: bool = True  # apply the regular expressions in ``patterns``
    patterns: tuple[str, ...] = DEFAULT_PATTERNS  # re.search against the normalized tag; see DEFAULT_PATTERNS
    spread: bool = True  # apply the data-driven detector (needs categories)
    min_count_for_spread: int = 20  # the spread detector looks at tags on at least this many categorized samples
    min_divergence: float = 0.12  # remove a tag whose chance-corrected JS divergence (bits) is below this
    null_draws: int = 200  # random samples per tag count to estimate the chance divergence
    seed: int = 0  # seed of those draws (the result is deterministic)

    def __post_init__(self) -> None:
        if self.min_count_for_spread < 2:
            raise ValueError(f"CleaningConfig.min_count_for_spread must be >= 2, got {self.min_count_for_spread}")
        if not 0.0 <= self.min_divergence <= 1.0:
            raise ValueError(f"CleaningConfig.min_divergence must be in [0, 1] (bits), got {self.min_divergence}")
        if self.null_draws < 1:
            raise ValueError(f"CleaningConfig.null_draws must be >= 1, got {self.null_draws}")
        self.patterns = tuple(self.patterns)
        for i, pattern in enumerate(self.patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"CleaningConfig.patterns[{i}] {pattern!r} is not a valid regex: {exc}") from None


@dataclass
class CleaningReport:
    """What :func:`clean_hashtags` removed and why."""

    removed: dict[str, str]  # tag -> reason ("rule: <matched text>" or "spread: JS=... over K categories")
    kept: int  # distinct tags kept
    removed_uses: int  # (sample, tag) pairs removed
    total_uses: int = 0  # (sample, tag) pairs before cleaning
    uses: dict[str, int] = field(default_factory=dict)  # removed tag -> samples that carried it
    tags_min5_before: int = 0  # distinct tags on >= 5 samples before cleaning
    tags_min5_after: int = 0  # ... and after

    @property
    def removed_share(self) -> float:
        """Share of tag uses removed."""
        return self.removed_uses / self.total_uses if self.total_uses else 0.0

    def by_detector(self) -> dict[str, int]:
        """Number of removed tags per detector (``rule`` / ``spread``)."""
        return dict(Counter(reason.split(":", 1)[0] for reason in self.removed.values()))

    def to_markdown(self, top: int = 50) -> str:
        """A summary and the ``top`` most used removed tags as a Markdown table."""
        detectors = ", ".join(f"{k}: {v}" for k, v in sorted(self.by_detector().items())) or "none"
        lines = [
            "## Hashtag cleaning",
            "",
            f"- removed {len(self.removed)} distinct tags ({detectors}), kept {self.kept}",
            f"- removed {self.removed_uses} of {self.total_uses} tag uses ({100 * self.removed_share:.1f}%)",
            f"- tags on >= 5 samples: {self.tags_min5_before} before, {self.tags_min5_after} after",
            "",
            "| tag | uses | reason |",
            "|---|---:|---|",
        ]
        ranked = sorted(self.removed, key=lambda t: (-self.uses.get(t, 0), t))[:top]
        lines += [f"| {_md(t)} | {self.uses.get(t, 0)} | {_md(self.removed[t])} |" for t in ranked]
        return "\n".join(lines)


def _md(text: str) -> str:
    """Escape a table cell for Markdown."""
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _entropy_bits(p: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits along the last axis (0 log 0 = 0)."""
    safe = np.where(p > 0, p, 1.0)
    return -(p * np.log2(safe)).sum(axis=-1)


def _js_bits(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence in bits (in [0, 1]) between rows of ``p`` and the distribution ``q``."""
    return _entropy_bits((p + q) / 2) - (_entropy_bits(p) + _entropy_bits(q)) / 2


def _spread_outliers(
    tag_lists: Sequence[Sequence[str]], categories: Sequence[str | None], cfg: CleaningConfig, skip: set[str]
) -> dict[str, str]:
    """Tags (not in ``skip``) whose category distribution is as close to the global one as chance allows."""
    names = sorted({c for c, tags in zip(categories, tag_lists) if c and tags})
    if len(names) < 2:
        return {}
    col = {c: i for i, c in enumerate(names)}
    global_counts = np.zeros(len(names))
    per_tag: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(names)))
    for tags, cat in zip(tag_lists, categories):
        if not cat or not tags:
            continue
        global_counts[col[cat]] += 1
        for tag in set(tags):
            per_tag[tag][col[cat]] += 1
    q = global_counts / global_counts.sum()
    rng = np.random.default_rng(cfg.seed)
    chance: dict[int, float] = {}
    out = {}
    for tag in sorted(per_tag):
        counts = per_tag[tag]
        n = int(counts.sum())
        if n < cfg.min_count_for_spread or tag in skip:
            continue
        if n not in chance:  # expected JS of n samples drawn from the global distribution itself
            draws = rng.multinomial(n, q, size=cfg.null_draws) / n
            chance[n] = float(_js_bits(draws, q).mean())
        js = float(_js_bits(counts / n, q))
        excess = js - chance[n]
        if excess < cfg.min_divergence:
            out[tag] = (f"spread: JS={js:.3f} (chance {chance[n]:.3f}, excess {excess:.3f} < {cfg.min_divergence})"
                        f" over {int((counts > 0).sum())} categories, n={n}")
    return out


def clean_hashtags(
    label_lists: Sequence[Sequence[str]],
    categories: Sequence[str | None],
    cfg: CleaningConfig | None = None,
) -> tuple[list[list[str]], CleaningReport]:
    """Remove boilerplate hashtags; returns the cleaned lists (aligned with the input) and a report.

    Tags are normalized (:func:`normalize_label`; empty ones and repeats within a sample dropped) before
    anything else, so the output and the report's keys are normalized tags.

    * rules (``cfg.rules``): a tag matching one of ``cfg.patterns`` is removed ("rule: <matched text>",
      e.g. "rule: 上热" for 感谢快手我要上热门).
    * spread (``cfg.spread``): for every other tag on at least ``cfg.min_count_for_spread`` samples with
      a category, take its distribution over categories p and the global distribution q over the
      samples that have tags and a category. JS(p, q) in bits is biased upwards for small counts, so
      we subtract its expectation for n samples drawn from q itself (estimated from
      ``cfg.null_draws`` seeded draws). A tag whose excess divergence is below ``cfg.min_divergence``
      is spread over categories like random videos are: it says nothing about the content
      ("spread: JS=..."). Samples without a category are ignored by this detector; when fewer than
      two categories are present it does nothing.
    """
    cfg = cfg or CleaningConfig()
    if len(label_lists) != len(categories):
        raise ValueError(f"clean_hashtags: {len(label_lists)} label lists but {len(categories)} categories")
    tag_lists = [list(dict.fromkeys(t for t in (normalize_label(x) for x in labels) if t)) for labels in label_lists]
    uses: Counter = Counter(t for tags in tag_lists for t in tags)
    removed: dict[str, str] = {}
    if cfg.rules and cfg.patterns:
        compiled = [re.compile(p) for p in cfg.patterns]
        for tag in sorted(uses):
            hit = next((m for m in (rx.search(tag) for rx in compiled) if m), None)
            if hit is not None:
                removed[tag] = f"rule: {hit.group(0) or hit.re.pattern}"
    if cfg.spread:
        removed.update(_spread_outliers(tag_lists, categories, cfg, skip=set(removed)))
    cleaned = [[t for t in tags if t not in removed] for tags in tag_lists]
    report = CleaningReport(
        removed=removed,
        kept=len(uses) - len(removed),
        removed_uses=sum(uses[t] for t in removed),
        total_uses=sum(uses.values()),
        uses={t: uses[t] for t in removed},
        tags_min5_before=sum(1 for c in uses.values() if c >= 5),
        tags_min5_after=sum(1 for t, c in uses.items() if c >= 5 and t not in removed),
    )
    return cleaned, report
