"""Real-data benchmarks with a trained checkpoint's rows next to the classical baselines.

:func:`load_embedders` turns a checkpoint into the embedding functions the benchmarks take:

* ``mmemb_text``: the text tower's embedding of each KuaiRec text (caption + cover text, tokenised
  with the run's saved tokenizer as one caption field, at the run's ``data.text.max_length``);
* ``mmemb_fused`` (models with a fused path, the teacher): the ``multimodal`` embedding of the same
  text with the video and audio marked missing (frames and mel are zeros and masked), i.e. the
  fused path on text-only input;
* the audio-visual function (models with an audio tower, the teacher): the ``video`` embedding of a
  segment computed from its frames alone (audio masked) against the same embedding computed from
  its audio alone (frames masked). Frames are resized to the model's frame size; the model has no
  audio-visual objective, so this measures what the shared video space carries, zero-shot.

:func:`load_model` also gives the model's own hashtag head (``mmemb_head``, models with one): its
scores of each test video, the inputs built by the run's own data module
(:meth:`~mmemb.data.datamodule.VideoDataModule.dataset_of`: caption and cover text as the separate
fields they were in training, the n-gram bag, the clip marked missing), scored against the benchmark's
labels (:func:`mmemb.eval.kuairec_bench.evaluate_head_scores`), and the run's split, on which every
row is then computed: the baselines and the model are scored on the test videos the model never
trained on. A head with a wide part (``wide_ngram_heads``) also gets its parts scored alone:
``mmemb_head_wide`` (the linear n-gram scores) and ``mmemb_head_deep`` (the deep head's logits).

:func:`run_kuairec` is :func:`mmemb.eval.kuairec_bench.run_kuairec_benchmark` for several embedding
functions at once: one data preparation and one set of baselines, then for each function the same
one-vs-rest tagging classifier and the same category probe, on the same split.
:func:`run_real_data` adds :func:`mmemb.eval.av_bench.run_av_benchmark` and returns every row;
:func:`real_data_report` (``mmemb eval real-data``) adds the machine and timing header and writes
``results.json``, ``results.csv``, ``results.md`` and ``results.png`` (:func:`write_outputs`).

Caveat: the demo corpus takes its captions from KuaiRec, so a model trained on the demo corpus has
seen some of the KuaiRec test texts (not their hashtags or categories) during pretraining.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch

from ..data.split import SplitConfig
from . import av_bench, kuairec_bench
from .report import progress

__all__ = ["RealDataModel", "load_model", "load_embedders", "run_kuairec", "run_real_data", "real_data_report",
           "write_outputs"]

TextEmbedFn = Callable[[Sequence[str]], np.ndarray]
# records -> ({row name: (N, H) scores}, the H label names)
HeadFn = Callable[[Sequence], tuple[dict[str, np.ndarray], list[str]]]


@dataclass
class RealDataModel:
    """What the real-data benchmarks need of a checkpoint (:func:`load_model`)."""

    text_fns: dict[str, TextEmbedFn]  # row name -> texts -> (N, D) embeddings
    av_fn: Callable | None = None  # (frames, mel) -> (video_emb, audio_emb); None without an audio tower
    head_fn: HeadFn | None = None  # the hashtag head's scores of records (and its parts'); None without a head
    split: SplitConfig = field(default_factory=SplitConfig)  # the run's train/val/test split
    # the run's hashtag vocabulary and the tags its cleaning removed (None: no checkpoint)
    hashtag_labels: list[str] | None = None
    removed_hashtags: dict[str, str] | None = None


LabelSource = Literal["auto", "protocol", "run"]
LABEL_NOTE = {"protocol": "the protocol's (hashtags cleaned on the train split with the level-1 categories)",
              "run": "the run's own (hashtags cleaned as its vocabulary was: its removed tags)"}


def _text_batch(tokenizer, texts: Sequence[str], text_cfg) -> dict[str, torch.Tensor]:
    """The text keys of the batch contract for ``texts`` as caption fields (``text_cfg``: the run's
    ``TextConfig``: ``max_length`` and the n-gram bag's settings)."""
    from ..data.dataset import encode_ngrams

    b, max_length = len(texts), text_cfg.max_length
    ids = torch.zeros(b, max_length, dtype=torch.long)
    fields = torch.zeros_like(ids)
    att = torch.zeros_like(ids)
    mask = torch.zeros(b, dtype=torch.bool)
    for i, text in enumerate(texts):
        if not text:
            continue
        row, field_ids = tokenizer.encode_fields([text], max_length)
        ids[i, : len(row)] = torch.tensor(row)
        fields[i, : len(row)] = torch.tensor(field_ids)
        att[i, : len(row)] = 1
        mask[i] = True
    att[:, 0] = torch.where(mask, att[:, 0], torch.ones_like(att[:, 0]))  # empty text: a lone [PAD], masked
    batch = {"text_ids": ids, "text_attention": att, "text_field_ids": fields, "text_mask": mask}
    if text_cfg.ngram_buckets:
        batch["text_ngrams"] = torch.stack([encode_ngrams([t], text_cfg) for t in texts])  # (B, G)
    return batch


def _missing_video(module, dm, b: int) -> dict[str, torch.Tensor]:
    """Zero frames and mel of ``b`` samples, marked missing: one frame and one audio patch are enough,
    they are masked (the fused output does not depend on their count)."""
    s = dm.decode.frame_size
    audio = getattr(module.model, "audio", None)
    mel_frames = int(audio.cfg.patch_frames) if audio is not None else dm.decode.mel_frames
    return {"frames": torch.zeros(b, 1, 3, s, s, dtype=torch.uint8), "video_mask": torch.zeros(b, dtype=torch.bool),
            "mel": torch.zeros(b, dm.decode.n_mels, mel_frames), "audio_mask": torch.zeros(b, dtype=torch.bool)}


def load_embedders(ckpt: str | Path, config: str | Path | None = None, batch_size: int = 64,
                   device: str | None = None, show_progress: bool = True):
    """``(text_fns, av_fn)`` of a checkpoint (:func:`load_model` without the head and the split)."""
    model = load_model(ckpt, config, batch_size, device, show_progress)
    return model.text_fns, model.av_fn


def load_model(ckpt: str | Path, config: str | Path | None = None, batch_size: int = 64,
               device: str | None = None, show_progress: bool = True) -> RealDataModel:
    """The :class:`RealDataModel` of a checkpoint (a file or a run folder): ``text_fns`` maps a row name
    (``mmemb_text``, and ``mmemb_fused`` when the model has a fused path) to ``texts -> (N, D)``;
    ``av_fn(frames, mel) -> (video_emb, audio_emb)`` or None without an audio tower; ``head_fn`` the
    hashtag head's scores (:func:`_head_fn`); ``split`` the run's data split."""
    from .loading import load_run, resolve_checkpoint

    run = load_run(resolve_checkpoint(ckpt), config, num_workers=0)
    module, dm = run.module, run.datamodule
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    module.to(dev).eval()
    model = module.model
    tokenizer, text_cfg = dm.vocabs.tokenizer, dm.text
    to = lambda batch: {k: v.to(dev) for k, v in batch.items()}  # noqa: E731
    model_dim = int(getattr(module.config, "embed_dim", 0))

    def batched(fn, texts: Sequence[str], desc: str) -> np.ndarray:
        chunks = range(0, len(texts), batch_size)
        out = []
        with torch.inference_mode():
            for start in progress(chunks, desc=desc, unit="batch", enabled=show_progress):
                out.append(fn(list(texts[start:start + batch_size])).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, model_dim), np.float32)

    def text_fn(texts: Sequence[str]) -> np.ndarray:
        return batched(lambda t: model.encode_text(to(_text_batch(tokenizer, t, text_cfg))), texts,
                       f"text path ({len(texts)} texts)")

    fns: dict[str, TextEmbedFn] = {"mmemb_text": text_fn}
    outputs = _probe_outputs(module, dm, dev, tokenizer, text_cfg)
    has_fused = "multimodal" in outputs
    if has_fused:
        def fused_fn(texts: Sequence[str]) -> np.ndarray:
            def one(t):
                batch = {**_text_batch(tokenizer, t, text_cfg), **_missing_video(module, dm, len(t))}
                return module(to(batch))["multimodal"]
            return batched(one, texts, f"fused path ({len(texts)} texts)")

        fns["mmemb_fused"] = fused_fn

    av_fn = None
    audio = getattr(model, "audio", None)
    if audio is not None and hasattr(model, "encode_video"):
        frame_size = int(module.config.vision.frame_size)
        n_mels = int(audio.cfg.n_mels)

        def av_fn(frames: torch.Tensor, mel: torch.Tensor):
            if mel.shape[1] != n_mels:
                raise ValueError(f"the clips' log-mel has {mel.shape[1]} bands, the model's audio tower {n_mels}")
            videos, audios = [], []
            step = max(1, batch_size // 8)
            with torch.inference_mode():
                for start in progress(range(0, frames.shape[0], step), desc="audio-visual segments", unit="batch",
                                      enabled=show_progress):
                    f = frames[start:start + step]
                    if f.shape[-1] != frame_size:
                        b, t = f.shape[:2]
                        f = torch.nn.functional.interpolate(f.reshape(b * t, *f.shape[2:]).float(),
                                                            size=(frame_size, frame_size), mode="bilinear",
                                                            antialias=True, align_corners=False)
                        f = f.round().clamp(0, 255).to(torch.uint8).reshape(b, t, 3, frame_size, frame_size)
                    m = mel[start:start + step]
                    ones = torch.ones(f.shape[0], dtype=torch.bool)
                    base = {"frames": f, "mel": m}
                    videos.append(model.encode_video(to({**base, "video_mask": ones, "audio_mask": ~ones})).cpu())
                    audios.append(model.encode_video(to({**base, "video_mask": ~ones, "audio_mask": ones})).cpu())
            return torch.cat(videos).numpy(), torch.cat(audios).numpy()

    head_fn = (_head_fn(module, dm, dev, batch_size, show_progress, parts="hashtag_wide_logits" in outputs)
               if "hashtag_logits" in outputs else None)
    return RealDataModel(fns, av_fn, head_fn, SplitConfig(**run.split_config),
                         hashtag_labels=list(dm.vocabs.hashtags.labels),
                         removed_hashtags=dict(dm.vocabs.removed_hashtags))


def _head_fn(module, dm, dev: torch.device, batch_size: int, show_progress: bool, parts: bool = False) -> HeadFn:
    """``records -> ({row: (N, H) scores}, names)``: the hashtag head's logits of ``records`` (row
    ``mmemb_head``), encoded by the run's data module exactly as its test split is
    (:meth:`~mmemb.data.datamodule.VideoDataModule.dataset_of`), over the run's hashtag vocabulary ``names``.
    With ``parts`` (a head with a wide part) also its two parts alone: ``mmemb_head_wide`` (the wide part's
    n-gram scores) and ``mmemb_head_deep`` (the deep head's logits: the head's minus the wide part's)."""
    from torch.utils.data import DataLoader

    names = list(dm.vocabs.hashtags.labels)

    def fn(records: Sequence) -> tuple[dict[str, np.ndarray], list[str]]:
        loader = DataLoader(dm.dataset_of(list(records)), batch_size=batch_size, num_workers=0,
                            collate_fn=dm.collate_fn)
        keys = ("hashtag_logits", "hashtag_wide_logits") if parts else ("hashtag_logits",)
        out: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        with torch.inference_mode():
            for batch in progress(loader, desc=f"hashtag head ({len(records)} videos)", unit="batch",
                                  enabled=show_progress):
                batch = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in batch.items()}
                result = module.model(batch)
                for k in keys:
                    out[k].append(result[k].float().cpu())  # (B, H)
        scores = {k: torch.cat(v).numpy() if v else np.zeros((0, len(names)), np.float32) for k, v in out.items()}
        rows = {"mmemb_head": scores["hashtag_logits"]}
        if parts:
            rows["mmemb_head_wide"] = scores["hashtag_wide_logits"]
            rows["mmemb_head_deep"] = scores["hashtag_logits"] - scores["hashtag_wide_logits"]  # (N, H)
        return rows, names

    return fn




def _probe_outputs(module, dm, dev, tokenizer, text_cfg) -> dict:
    """One forward pass on a dummy text-only sample: which outputs the model has."""
    with torch.inference_mode():
        batch = {**_text_batch(tokenizer, ["x"], text_cfg), **_missing_video(module, dm, 1)}
        return dict(module({k: v.to(dev) for k, v in batch.items()}))


def kuairec_task(csv_path: str | Path, max_rows: int | None = None, split: SplitConfig | None = None,
                 model: RealDataModel | None = None, labels: LabelSource = "auto",
                 say: Callable[..., None] = print) -> tuple[kuairec_bench.KuaiRecTaggingTask, str]:
    """The KuaiRec tagging task on ``split`` and where its labels come from (``"protocol"`` or ``"run"``;
    ``labels`` and the rule: the module docstring). ``labels="run"`` without the ``model``'s vocabulary, or
    with a vocabulary other than the run's cleaning gives on this split, is a ValueError."""
    kb = kuairec_bench
    if labels not in ("auto", "protocol", "run"):
        raise ValueError(f"labels must be 'auto', 'protocol' or 'run', got {labels!r}")
    known = model is not None and model.hashtag_labels is not None and model.removed_hashtags is not None
    if labels == "run" and not known:
        raise ValueError("labels='run' needs a checkpoint (--run/--ckpt): the labels are the run's own")
    if labels == "protocol" or not known:
        return kb.prepare_kuairec_tagging(csv_path, max_rows=max_rows, split=split), "protocol"
    own = kb.prepare_kuairec_tagging(csv_path, max_rows=max_rows, split=split, removed_hashtags=model.removed_hashtags)
    learned = set(model.hashtag_labels)
    if set(own.labels) == learned:
        return own, "run"
    why = (f"the run's hashtag vocabulary ({len(learned)} labels) is not the {len(own.labels)} labels its cleaning "
           f"gives on this KuaiRec train split ({len(learned - set(own.labels))} only in the run, "
           f"{len(set(own.labels) - learned)} only here): it was not trained on this corpus's train split"
           + (" (or --max-rows cut it)" if max_rows is not None else ""))
    if labels == "run":
        raise ValueError(f"labels='run': {why}; score it on the protocol's labels (--labels protocol)")
    say(f"[kuairec] {why}: the protocol's labels")
    return kb.prepare_kuairec_tagging(csv_path, max_rows=max_rows, split=split), "protocol"


def run_kuairec(csv_path: str | Path, embed_fns: dict[str, TextEmbedFn] | None = None, max_rows: int | None = None,
                show_progress: bool = True, head_fn: HeadFn | None = None,
                split: SplitConfig | None = None, model: RealDataModel | None = None,
                labels: LabelSource = "auto") -> list[dict]:
    """KuaiRec rows on ``split`` (default: the data module's default split): the baselines once, then
    ``mmemb_head`` (``head_fn``: a model's own hashtag head) and each of ``embed_fns`` (see the module
    docstring), on the labels :func:`kuairec_task` picks (``model``: the run's vocabulary)."""
    kb = kuairec_bench
    say = print if show_progress else (lambda *a, **k: None)
    t0 = time.perf_counter()
    task, source = kuairec_task(csv_path, max_rows, split, model, labels, say=say)
    info = task.summary()
    say(f"[kuairec] data prepared in {time.perf_counter() - t0:.1f}s ({source}'s labels): "
        + ", ".join(f"{k}={int(v)}" for k, v in info.items()))
    rows: list[dict] = []

    def add(method: str, name: str, metrics: dict) -> None:
        rows.append({"method": method, "task": name, **metrics})
        say(f"[kuairec] {method} / {name}: " + ", ".join(
            f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))

    add("label_popularity", "tagging", kb.popularity_baseline(task))
    tv = time.perf_counter()
    feats = kb.tfidf_features(task)
    vec_seconds = time.perf_counter() - tv
    tag = kb.tfidf_baseline(task, features=feats)
    tag["seconds"] += vec_seconds
    add("tfidf_char13_lr", "tagging", tag)
    add("tfidf_char13_svd256_lr", "category_l2", kb.category_probe_tfidf(task, features=feats))
    if head_fn is not None:
        th = time.perf_counter()
        by_row, names = head_fn(task.test_records)
        embed_seconds = time.perf_counter() - th
        for row, scores in by_row.items():
            add(row, "tagging", {**kb.evaluate_head_scores(scores, names, task), "embed_seconds": embed_seconds})
    for name, fn in (embed_fns or {}).items():
        te = time.perf_counter()
        tr_emb = np.asarray(fn(task.train_texts), dtype=np.float32)
        te_emb = np.asarray(fn(task.test_texts), dtype=np.float32)
        embed_seconds = time.perf_counter() - te
        say(f"[kuairec] {name}: embedded {len(tr_emb) + len(te_emb)} texts in {embed_seconds:.1f}s")
        add(name, "tagging", {**kb.evaluate_embeddings(tr_emb, te_emb, task), "embed_seconds": embed_seconds})
        add(name, "category_l2", kb.category_probe_embeddings(tr_emb, te_emb, task))
    for row in rows:
        row.update({f"data_{k}": v for k, v in info.items()}, labels=source)
    return rows


def run_real_data(csv_path: str | Path | None, clip_dir: str | Path | None, ckpt: str | Path | None = None,
                  config: str | Path | None = None, max_rows: int | None = None, device: str | None = None,
                  show_progress: bool = True, labels: LabelSource = "auto") -> tuple[list[dict], str]:
    """Every real-data row (KuaiRec unless ``csv_path`` is None, AV unless ``clip_dir`` is None) and
    their Markdown tables; with ``ckpt``, the checkpoint's rows next to the baselines (``labels``: the
    KuaiRec labels, :func:`kuairec_task`)."""
    model = RealDataModel({})
    if ckpt is not None:
        model = load_model(ckpt, config, device=device, show_progress=show_progress)
    text_fns, av_fn = model.text_fns, model.av_fn
    rows: list[dict] = []
    tables: list[str] = []
    if csv_path is not None:
        k_rows = run_kuairec(csv_path, text_fns, max_rows=max_rows, show_progress=show_progress,
                             head_fn=model.head_fn, split=model.split, model=model, labels=labels)
        rows += k_rows
        tables.append(f"KuaiRec labels: {LABEL_NOTE[k_rows[0]['labels']]}\n\n" + kuairec_bench.markdown_table(k_rows))
    if clip_dir is not None:
        if ckpt is not None and av_fn is None:
            print("[av] the checkpoint's model has no audio tower: baseline only")
        a_rows = av_bench.run_av_benchmark(clip_dir, embed_fn=av_fn, progress=show_progress, embed_name="mmemb_av")
        rows += a_rows
        tables.append(av_bench.markdown_table(a_rows))
    return rows, "\n".join(tables)


def headline(rows: Sequence[dict]) -> tuple[list[str], dict[str, list[float | None]]]:
    """For a bar chart: one metric per task (tagging mAP, category accuracy, AV R@1 both ways) and
    each method's value (None where a method has no row for that task)."""
    keys = [("tagging", "map", "tagging mAP"), ("category_l2", "accuracy", "category accuracy"),
            ("av_correspondence", "a2v_r1", "AV a2v R@1"), ("av_correspondence", "v2a_r1", "AV v2a R@1")]
    present = [(t, k, label) for t, k, label in keys if any(r["task"] == t and k in r for r in rows)]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    series: dict[str, list[float | None]] = {}
    for m in methods:
        vals = []
        for t, k, _ in present:
            row = next((r for r in rows if r["method"] == m and r["task"] == t), None)
            v = row.get(k) if row else None
            vals.append(None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v))
        series[m] = vals
    return [label for _, _, label in present], series


def write_outputs(rows: Sequence[dict], markdown: str, out: str | Path, plot: bool = True) -> list[Path]:
    """``results.json`` (the rows), ``results.csv``, ``results.md`` and, with ``plot``, ``results.png``
    (:func:`headline` metrics per method) under ``out``."""
    from .report import plot_bars, write_csv, write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_json(list(rows), out / "results.json"), write_csv(rows, out / "results.csv")]
    (out / "results.md").write_text(markdown, encoding="utf-8")
    paths.append(out / "results.md")
    if plot and rows:
        labels, series = headline(rows)
        if labels:
            chance = []
            for label in labels:
                if label.startswith("AV"):
                    chance.append(next((r.get("chance_r1") for r in rows if r["task"] == "av_correspondence"), None))
                elif label == "category accuracy":
                    chance.append(next((r.get("chance_majority") for r in rows if r["task"] == "category_l2"), None))
                else:
                    chance.append(None)
            paths.append(plot_bars(labels, series, out / "results.png", reference=chance,
                                   reference_label="chance (majority class, 1/N)", title="real-data benchmarks"))
    return paths


def real_data_report(csv_path: str | Path | None, clip_dir: str | Path | None, out: str | Path,
                     ckpt: str | Path | None = None, config: str | Path | None = None, max_rows: int | None = None,
                     device: str | None = None, show_progress: bool = True, plot: bool = True,
                     labels: LabelSource = "auto") -> dict:
    """:func:`run_real_data` with a header (platform, CPUs, total time, checkpoint, rows used), written by
    :func:`write_outputs` under ``out``; returns ``rows``, ``out``, ``checkpoint``, ``markdown``, ``files``."""
    import os
    import platform

    t0 = time.perf_counter()
    rows, tables = run_real_data(csv_path, clip_dir, ckpt, config, max_rows=max_rows, device=device,
                                 show_progress=show_progress, labels=labels)
    total = time.perf_counter() - t0
    header = (f"## Real-data benchmarks\n\n{platform.platform()}, python {platform.python_version()}, "
              f"{os.cpu_count()} CPU(s); total {total:.1f}s" + (f"; checkpoint {ckpt}" if ckpt else "")
              + (f"; KuaiRec first {max_rows} rows" if max_rows else "") + "\n")
    markdown = header + "\n" + tables
    files = write_outputs(rows, markdown, out, plot=plot)
    return {"rows": rows, "out": str(out), "checkpoint": str(ckpt) if ckpt else None, "markdown": markdown,
            "files": [str(f) for f in files]}
