"""What the int8 text graph costs in embedding quality, on real texts: float vs int8 text embeddings of one
export (made with ``mmemb export --int8-text``).

    nice python benchmarks/bench_int8_text.py --export exports/kuairec --manifest data/kuairec.jsonl \\
        [--texts 2000] [--k 10] [--json OUT]

The texts are the manifest's records (caption and cover text, as in training: ``record_texts``), the
first ``--texts`` with any text, embedded by both graphs in ONNX Runtime (batch 64, one thread). Reported:
the cosine between each text's float and int8 embedding (min, 1st percentile, median); the overlap of
each text's top-``k`` neighbours among the texts under the two graphs (the share of the float
neighbours the int8 graph also returns: what a search index built with one graph and queried with the
other sees); and, where the records have hashtags, the hashtag mAP of a nearest-neighbour vote (each
text scores labels by the summed similarity of its ``k`` neighbours that carry them), for both graphs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np


def embed_all(model, rows: list[list[str | None]], batch: int = 64) -> np.ndarray:
    """``(N, D)`` text embeddings of the field rows, through the export's text session in batches."""
    prep = model.preprocessor
    spec = model._specs()["text"]
    out = []
    for start in range(0, len(rows), batch):
        arrays = prep.text_arrays(rows[start:start + batch], trim=True)
        out.append(model.sessions["text"].run([spec.output], {n: arrays[n] for n in spec.input_names})[0])
    return np.concatenate(out)


def neighbours(x: np.ndarray, k: int) -> np.ndarray:
    """``(N, k)`` indices of each row's ``k`` most similar other rows (inner product)."""
    sims = x @ x.T  # (N, N)
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1)[:, :k]


def knn_tag_map(x: np.ndarray, labels: list[list[int]], num_labels: int, k: int) -> float:
    """Hashtag mAP of a ``k``-nearest-neighbour vote (leave-one-out) over the rows with labels."""
    from sklearn.metrics import average_precision_score

    sims = x @ x.T  # (N, N)
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :k]  # (N, k)
    target = np.zeros((len(x), num_labels))
    for i, ls in enumerate(labels):
        target[i, ls] = 1
    scores = np.zeros_like(target)
    for i in range(len(x)):
        scores[i] = (sims[i, top[i], None] * target[top[i]]).sum(axis=0)
    aps = [average_precision_score(target[i], scores[i]) for i in range(len(x)) if target[i].any()]
    return float(np.mean(aps)) if aps else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--export", type=Path, required=True, help="export folder made with --int8-text")
    p.add_argument("--manifest", required=True, help="manifest whose texts are embedded")
    p.add_argument("--texts", type=int, default=2000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    import mmemb
    from mmemb.data.manifest import read_manifest
    from mmemb.data.vocab import record_texts

    records = [r for r in read_manifest(args.manifest, strict=False) if any(record_texts(r))][:args.texts]
    rows = [record_texts(r) for r in records]
    float_model = mmemb.load(args.export, runtime="onnx", threads=1)
    int8_model = mmemb.load(args.export, runtime="onnx", threads=1, int8_text=True)
    a, b = embed_all(float_model, rows), embed_all(int8_model, rows)
    cosine = (a * b).sum(axis=1) / np.linalg.norm(b, axis=1).clip(min=1e-12)
    na, nb = neighbours(a, args.k), neighbours(b, args.k)
    overlap = float(np.mean([len(set(x) & set(y)) / args.k for x, y in zip(na, nb)]))
    names = sorted({t for r in records for t in r.hashtags})
    index = {t: i for i, t in enumerate(names)}
    labels = [[index[t] for t in r.hashtags] for r in records]
    result = {"export": str(args.export), "manifest": args.manifest, "texts": len(rows), "k": args.k,
              "cosine_min": float(cosine.min()), "cosine_p01": float(np.quantile(cosine, 0.01)),
              "cosine_median": float(np.median(cosine)), f"neighbour_overlap_at_{args.k}": overlap}
    if any(labels):
        result["knn_hashtag_map_float"] = knn_tag_map(a, labels, len(names), args.k)
        result["knn_hashtag_map_int8"] = knn_tag_map(b, labels, len(names), args.k)
    print(f"{len(rows)} texts of {args.manifest}, export {args.export}")
    print("| measure | value |\n|---|---:|")
    for key, value in result.items():
        if isinstance(value, float):
            print(f"| {key} | {value:.4f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
