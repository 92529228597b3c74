"""Label vocabularies, hashtag cleaning, TF-IDF label weights and the tag co-occurrence graph.

* :class:`LabelVocab` / :func:`build_label_vocab`: frequent labels (hashtags, queries) -> ids.
* :func:`normalize_label`: one spelling per label (NFKC, lowercase, no surrounding ``#``/punctuation).
* :func:`clean_hashtags`: removes boilerplate hashtags (``感谢快手我要上热门``, ``作品推广``, ...) by two
  detectors, reported per tag in a :class:`CleaningReport`:

  - rules: regular expressions for promotional phrases (:data:`DEFAULT_PATTERNS`);
  - spread: a frequent tag whose distribution over content categories is no further from the global
    category distribution than chance says nothing about the content (chance-corrected
    Jensen-Shannon divergence, see :func:`clean_hashtags`).

* :func:`label_idf` / :func:`label_weights`: per-sample weights of positive labels (IDF, clicks,
  freshness).
* :class:`TagGraph` / :func:`build_tag_graph`: tag co-occurrence edges (NPMI, PMI or P(j|i)) for a GCN.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np

__all__ = [
    "LabelVocab",
    "build_label_vocab",
    "normalize_label",
    "DEFAULT_PATTERNS",
    "CleaningConfig",
    "CleaningReport",
    "clean_hashtags",
    "label_idf",
    "label_weights",
    "GraphMeasure",
    "TagGraph",
    "build_tag_graph",
]

GraphMeasure = Literal["cond_prob", "pmi", "npmi"]


# ----------------------------------------------------------------------------- normalization


def _is_edge_junk(ch: str) -> bool:
    """Characters stripped from both ends of a label: whitespace, '#', punctuation, format/control chars."""
    return ch.isspace() or ch == "#" or unicodedata.category(ch)[0] in ("P", "C", "Z")


def normalize_label(label: str) -> str:
    """One spelling per label: NFKC (full-width ``＃ＡＢＣ`` -> ``#ABC``), lowercase, inner whitespace
    collapsed, and whitespace, ``#``, punctuation and control characters stripped from both ends.

    ``" #Python！ "`` -> ``"python"``; ``"#情感视频#"`` -> ``"情感视频"``; ``"中医·中药"`` unchanged.
    Idempotent; may return ``""`` (callers drop empty labels).
    """
    text = " ".join(unicodedata.normalize("NFKC", label).lower().split())
    start, end = 0, len(text)
    while start < end and _is_edge_junk(text[start]):
        start += 1
    while end > start and _is_edge_junk(text[end - 1]):
        end -= 1
    return text[start:end]


# ----------------------------------------------------------------------------- vocabulary


@dataclass
class LabelVocab:
    """Labels kept for training, most frequent first; a label's id is its position in ``labels``."""

    labels: list[str]  # id -> label
    counts: list[int]  # id -> number of samples that carried the label when the vocabulary was built
    min_freq: int  # the frequency threshold used to build it
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.counts):
            raise ValueError(f"LabelVocab: {len(self.labels)} labels but {len(self.counts)} counts")
        self._index = {}
        for i, label in enumerate(self.labels):
            if label in self._index:
                raise ValueError(f"LabelVocab: duplicate label {label!r} at ids {self._index[label]} and {i}")
            self._index[label] = i

    def index(self, label: str) -> int | None:
        """Id of ``label`` (exact match, normalize first), ``None`` when it is not in the vocabulary."""
        return self._index.get(label)

    def encode(self, labels: Iterable[str]) -> list[int]:
        """Ids of the known ``labels`` in order; unknown labels are dropped, repeats kept once."""
        ids = (self._index.get(label) for label in labels)
        return list(dict.fromkeys(i for i in ids if i is not None))

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: object) -> bool:
        return label in self._index

    def save(self, path: str | Path) -> Path:
        """Write ``{"labels", "counts", "min_freq"}`` as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"labels": self.labels, "counts": self.counts, "min_freq": self.min_freq}
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LabelVocab":
        """Read what :meth:`save` wrote; errors name the file."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"label vocabulary not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(list(data["labels"]), [int(c) for c in data["counts"]], int(data["min_freq"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a valid label vocabulary ({exc})") from None


def build_label_vocab(
    label_lists: Iterable[Sequence[str]], min_freq: int = 5, max_size: int | None = None
) -> LabelVocab:
    """Labels carried by at least ``min_freq`` samples (a label counts once per sample; empty labels are
    ignored), ordered by count (desc) then label, cut to ``max_size``."""
    if min_freq < 1:
        raise ValueError(f"min_freq must be >= 1, got {min_freq}")
    if max_size is not None and max_size < 0:
        raise ValueError(f"max_size must be >= 0, got {max_size}")
    counts: Counter = Counter()
    for labels in label_lists:
        counts.update({label for label in labels if label})
    kept = sorted(((c, label) for label, c in counts.items() if c >= min_freq), key=lambda x: (-x[0], x[1]))
    if max_size is not None:
        kept = kept[:max_size]
    return LabelVocab([label for _, label in kept], [c for c, _ in kept], min_freq)


# ----------------------------------------------------------------------------- cleaning

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


# ----------------------------------------------------------------------------- TF-IDF and freshness


def _check_ids(ids: Sequence[int], num_labels: int, where: str) -> None:
    for i in ids:
        if not 0 <= i < num_labels:
            raise ValueError(f"{where}: label id {i} out of range [0, {num_labels})")


def label_idf(label_id_lists: Sequence[Sequence[int]], num_labels: int) -> np.ndarray:
    """Smoothed inverse document frequency per label id: ``idf[l] = ln((1 + N) / (1 + df[l])) + 1``.

    N is the number of samples (lists, empty ones included), df[l] the number of samples whose list
    contains l (repeats within a sample count once). Rarer labels weigh more; a label on every sample
    gets 1, an unseen one ``ln(1 + N) + 1``. Returns float64 of shape ``(num_labels,)``.
    """
    if num_labels < 0:
        raise ValueError(f"num_labels must be >= 0, got {num_labels}")
    df = np.zeros(num_labels, dtype=np.int64)
    for k, ids in enumerate(label_id_lists):
        unique = set(int(i) for i in ids)
        _check_ids(list(unique), num_labels, f"label_id_lists[{k}]")
        df[list(unique)] += 1
    n = len(label_id_lists)
    return np.log((1.0 + n) / (1.0 + df)) + 1.0


def label_weights(
    label_ids: Sequence[int],
    idf: np.ndarray,
    clicks: Sequence[float] | None = None,
    publish_time: float | None = None,
    now: float | None = None,
    half_life_days: float | None = None,
) -> np.ndarray:
    """Weight of each positive label of one sample (aligned with ``label_ids``), float32.

    ``m[k] = idf[label_ids[k]] * (1 + ln(1 + clicks[k]))`` (the click factor only when ``clicks`` is
    given, for queries), then ``w = f * m / mean(m)``: the sample's weights have mean ``f`` over its
    positives. ``f`` is the freshness ``0.5 ** (age_days / half_life_days)`` with
    ``age_days = max(0, now - publish_time) / 86400`` when ``half_life_days`` is set and
    ``publish_time`` is known (``now`` is then required), else 1; so without freshness the mean is 1,
    and a sample one half-life old weighs half as much in total.
    """
    idf = np.asarray(idf, dtype=np.float64)
    ids = [int(i) for i in label_ids]
    if not ids:
        return np.zeros(0, dtype=np.float32)
    _check_ids(ids, len(idf), "label_weights")
    m = idf[ids]
    if clicks is not None:
        c = np.asarray(clicks, dtype=np.float64)
        if c.shape != (len(ids),):
            raise ValueError(f"label_weights: {len(ids)} labels but clicks has shape {c.shape}")
        if (c < 0).any() or not np.isfinite(c).all():
            raise ValueError(f"label_weights: clicks must be finite and >= 0, got {c.tolist()}")
        m = m * (1.0 + np.log1p(c))
    w = m / m.mean()
    if half_life_days is not None and publish_time is not None:
        if half_life_days <= 0:
            raise ValueError(f"label_weights: half_life_days must be > 0, got {half_life_days}")
        if now is None:
            raise ValueError("label_weights: now (unix seconds) is required with half_life_days and publish_time")
        age_days = max(0.0, float(now) - float(publish_time)) / 86400.0
        w = w * 0.5 ** (age_days / half_life_days)
    return w.astype(np.float32)


# ----------------------------------------------------------------------------- tag graph


@dataclass
class TagGraph:
    """Weighted tag co-occurrence edges, PyTorch Geometric style (no self-loops: the GCN adds them)."""

    edge_index: np.ndarray  # (2, E) int64: row 0 source ids, row 1 target ids, sorted by (source, target)
    edge_weight: np.ndarray  # (E,) float32
    num_nodes: int  # number of labels
    labels: list[str]  # node id -> label, or [] when unknown
    measure: str  # "npmi", "pmi" or "cond_prob"

    def __post_init__(self) -> None:
        self.edge_index = np.asarray(self.edge_index, dtype=np.int64).reshape(2, -1)
        self.edge_weight = np.asarray(self.edge_weight, dtype=np.float32).reshape(-1)
        if self.edge_weight.shape[0] != self.edge_index.shape[1]:
            raise ValueError(f"TagGraph: {self.edge_index.shape[1]} edges but {self.edge_weight.shape[0]} weights")
        if self.edge_index.size and (self.edge_index.min() < 0 or self.edge_index.max() >= self.num_nodes):
            raise ValueError(f"TagGraph: edge_index has ids outside [0, {self.num_nodes})")
        if self.labels and len(self.labels) != self.num_nodes:
            raise ValueError(f"TagGraph: {len(self.labels)} labels for {self.num_nodes} nodes")

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def save(self, path: str | Path) -> Path:
        """Write a ``.npz`` (readable without pickle)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            edge_index=self.edge_index,
            edge_weight=self.edge_weight,
            num_nodes=np.int64(self.num_nodes),
            labels=np.array(self.labels, dtype=np.str_),
            measure=np.array(self.measure),
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TagGraph":
        """Read what :meth:`save` wrote; errors name the file."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"tag graph not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(
                    edge_index=data["edge_index"],
                    edge_weight=data["edge_weight"],
                    num_nodes=int(data["num_nodes"]),
                    labels=[str(x) for x in data["labels"].tolist()],
                    measure=str(data["measure"]),
                )
        except (KeyError, ValueError, OSError) as exc:
            raise ValueError(f"{path}: not a valid tag graph ({exc})") from None


def build_tag_graph(
    label_id_lists: Sequence[Sequence[int]],
    num_labels: int,
    measure: GraphMeasure = "npmi",
    threshold: float = 0.1,
    min_cooccurrence: int = 2,
    labels: Sequence[str] | None = None,
) -> TagGraph:
    """Co-occurrence graph of labels over samples (repeats within a sample count once).

    With N the number of samples that have at least one label, c_i the samples with label i and c_ij
    those with both i and j:

    * ``pmi``: ``ln(c_ij * N / (c_i * c_j))``, both directions;
    * ``npmi``: ``pmi / -ln(c_ij / N)`` in [-1, 1] (1 when c_ij = N), both directions;
    * ``cond_prob``: edge i -> j weighs ``P(j | i) = c_ij / c_i`` (directed: j -> i weighs c_ij / c_j).

    An edge is kept when ``c_ij >= min_cooccurrence`` and its weight ``>= threshold`` (for cond_prob each
    direction on its own). No self-loops. Edges are sorted by (source, target).
    """
    if measure not in ("cond_prob", "pmi", "npmi"):
        raise ValueError(f"measure must be 'cond_prob', 'pmi' or 'npmi', got {measure!r}")
    if min_cooccurrence < 1:
        raise ValueError(f"min_cooccurrence must be >= 1, got {min_cooccurrence}")
    if labels is not None and len(labels) != num_labels:
        raise ValueError(f"build_tag_graph: {len(labels)} labels for num_labels={num_labels}")
    count = np.zeros(num_labels, dtype=np.int64)
    pair_keys: list[np.ndarray] = []
    n_samples = 0
    for k, ids in enumerate(label_id_lists):
        unique = np.array(sorted(set(int(i) for i in ids)), dtype=np.int64)
        if unique.size == 0:
            continue
        _check_ids(unique.tolist(), num_labels, f"label_id_lists[{k}]")
        n_samples += 1
        count[unique] += 1
        if unique.size > 1:
            a, b = np.triu_indices(unique.size, k=1)
            pair_keys.append(unique[a] * num_labels + unique[b])
    empty = TagGraph(np.zeros((2, 0), np.int64), np.zeros(0, np.float32), num_labels, list(labels or []), measure)
    if not pair_keys:
        return empty
    keys, c_ij = np.unique(np.concatenate(pair_keys), return_counts=True)
    keep = c_ij >= min_cooccurrence
    keys, c_ij = keys[keep], c_ij[keep].astype(np.float64)
    i, j = keys // num_labels, keys % num_labels
    if measure == "cond_prob":
        src = np.concatenate([i, j])
        dst = np.concatenate([j, i])
        weight = np.concatenate([c_ij / count[i], c_ij / count[j]])
    else:
        n = float(n_samples)
        pmi = np.log(c_ij * n / (count[i] * count[j]))
        if measure == "npmi":
            denom = -np.log(c_ij / n)
            pmi = np.where(denom > 0, pmi / np.where(denom > 0, denom, 1.0), 1.0)
        src = np.concatenate([i, j])
        dst = np.concatenate([j, i])
        weight = np.concatenate([pmi, pmi])
    keep = weight >= threshold
    src, dst, weight = src[keep], dst[keep], weight[keep]
    order = np.lexsort((dst, src))
    return TagGraph(np.stack([src[order], dst[order]]), weight[order].astype(np.float32), num_labels,
                    list(labels or []), measure)
