"""One faiss index factory for embedding retrieval: specs, building, search parameters, I/O.

An :class:`IndexSpec` names a structure (``"flat"``, ``"ivf_flat"``, ``"ivf_pq"``, ``"opq_ivf_pq"``,
``"hnsw"``), its build parameters and its search parameters; :func:`build_index` trains and fills
it, :func:`set_search_params` changes ``nprobe`` / ``efSearch`` / the re-rank ``k_factor`` of a
built index (so one build serves a whole sweep of search settings).

Conventions
-----------
* Vectors are float32 ``(N, D)`` arrays (torch tensors accepted). With the default ``metric="ip"``
  scores are inner products: normalise the embeddings first for cosine similarity.
* Result ids are database row numbers; faiss pads missing results with id ``-1``.
* **Documents scanned per query** (:func:`docs_scanned_per_query`): database vectors whose codes
  are compared with the query. IVF kinds: the vectors stored in the probed inverted lists,
  measured per query through the coarse quantizer; flat: ``ntotal``; HNSW: distance computations
  counted by ``faiss.cvar.hnsw_stats`` (``ndis / nq``). An exact re-rank (``refine``) re-scores
  ``k * refine`` of the scanned documents and adds none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

__all__ = [
    "KINDS",
    "IndexSpec",
    "build_index",
    "add_refine",
    "set_search_params",
    "search",
    "docs_scanned_per_query",
    "ivf_docs_scanned",
    "index_memory_bytes",
    "save_index",
    "load_index",
    "gpu_available",
]

log = logging.getLogger(__name__)

Kind = Literal["flat", "ivf_flat", "ivf_pq", "opq_ivf_pq", "hnsw"]
IndexMetric = Literal["ip", "l2"]
GpuUse = Literal["auto", "never", "always"]
KINDS: tuple[str, ...] = ("flat", "ivf_flat", "ivf_pq", "opq_ivf_pq", "hnsw")
METRICS: tuple[str, ...] = ("ip", "l2")
GPU_CHOICES: tuple[str, ...] = ("auto", "never", "always")
IVF_KINDS: tuple[str, ...] = ("ivf_flat", "ivf_pq", "opq_ivf_pq")
PQ_KINDS: tuple[str, ...] = ("ivf_pq", "opq_ivf_pq")
QUARTER_DIM = "d/4"  # pq_bytes alias (as is 0): one sub-quantizer per 4 dimensions
MIN_POINTS_PER_CENTROID = 39  # below this many training points per centroid faiss warns


@dataclass
class IndexSpec:
    """What to build and how to search it (see the module docstring)."""

    kind: Kind = "flat"  # index structure, one of KINDS
    nlist: int = 1024  # IVF kinds: number of coarse clusters (inverted lists)
    nprobe: int = 16  # IVF kinds: lists probed per query (search-time)
    pq_bytes: int | str = 0  # PQ kinds: sub-quantizers M (code bytes at nbits=8), dividing dim; 0 or "d/4" = dim // 4
    nbits: int = 8  # PQ kinds: bits per sub-quantizer code
    refine: float = 0.0  # PQ kinds: exact re-rank of the k * refine best candidates (IndexRefineFlat k_factor); 0 = off
    hnsw_m: int = 32  # HNSW: neighbours per node
    ef_construction: int = 40  # HNSW: beam width while building
    ef_search: int = 64  # HNSW: beam width while searching (search-time)
    metric: IndexMetric = "ip"  # "ip" (inner product; cosine for normalised vectors) or "l2"
    use_gpu: GpuUse = "auto"  # "auto": GPU faiss when faiss.get_num_gpus() > 0; "always": error without one
    dim: int | None = None  # vector dimension; resolves pq_bytes "d/4" and checks it divides dim (build_index sets it)

    def __post_init__(self) -> None:
        _check_choice("kind", self.kind, KINDS)
        _check_choice("metric", self.metric, METRICS)
        _check_choice("use_gpu", self.use_gpu, GPU_CHOICES)
        for name in ("nlist", "nprobe", "ef_construction", "ef_search"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.hnsw_m < 2:
            raise ValueError(f"hnsw_m={self.hnsw_m} must be >= 2")
        if not 1 <= self.nbits <= 16:
            raise ValueError(f"nbits={self.nbits} must be between 1 and 16")
        if self.dim is not None and self.dim < 1:
            raise ValueError(f"dim={self.dim} must be >= 1")
        self.pq_bytes = self._resolve_pq_bytes()
        if self.refine != 0 and self.kind not in PQ_KINDS:
            raise ValueError(f"refine={self.refine}: exact re-ranking applies to the compressed kinds {PQ_KINDS}; "
                             f"kind={self.kind!r} already scores exact vectors (use refine=0)")
        if self.refine != 0 and self.refine < 1:
            raise ValueError(f"refine={self.refine} must be 0 (off) or a k_factor >= 1")
        if self.use_gpu == "always" and not self.gpu_supported:
            raise ValueError(f"use_gpu='always' is not supported for {self.name!r}: faiss has no GPU HNSW, and "
                             "this factory keeps re-ranked (refine > 0) indexes on the CPU; use 'auto' or 'never'")

    def _resolve_pq_bytes(self) -> int | str:
        """``pq_bytes`` as an int when the dimension is known (``"d/4"`` kept until then)."""
        value = self.pq_bytes
        if isinstance(value, str):
            if value.strip().replace(" ", "") != QUARTER_DIM:
                raise ValueError(f"pq_bytes={value!r} must be an int or {QUARTER_DIM!r}")
            value = 0
        if int(value) != value or value < 0:
            raise ValueError(f"pq_bytes={value!r} must be a non-negative int (0 or {QUARTER_DIM!r} = dim // 4)")
        value = int(value)
        if self.kind not in PQ_KINDS or self.dim is None:
            return value if value else QUARTER_DIM
        if value == 0:
            value = self.dim // 4
        if value < 1 or self.dim % value:
            divisors = [m for m in range(1, self.dim + 1) if self.dim % m == 0]
            raise ValueError(f"pq_bytes={value} must divide the dimension {self.dim} (choices: {divisors})")
        return value

    def with_dim(self, dim: int) -> "IndexSpec":
        """This spec for ``dim``-dimensional vectors (resolves and checks ``pq_bytes``)."""
        if self.dim is not None and self.dim != dim:
            raise ValueError(f"spec is for dim={self.dim}, but the vectors have dimension {dim}")
        return replace(self, dim=dim, pq_bytes=self.pq_bytes)

    @property
    def gpu_supported(self) -> bool:
        """Whether this factory can put the index on a GPU (not HNSW, not re-ranked)."""
        return self.kind != "hnsw" and self.refine == 0

    @property
    def structure(self) -> str:
        """The faiss factory string of the structure without the re-rank: e.g. ``"OPQ32,IVF1024,PQ32"``."""
        if self.kind == "flat":
            return "Flat"
        if self.kind == "hnsw":
            return f"HNSW{self.hnsw_m}"
        if self.kind == "ivf_flat":
            return f"IVF{self.nlist},Flat"
        if not isinstance(self.pq_bytes, int):
            raise ValueError(f"pq_bytes={self.pq_bytes!r} needs the dimension: use spec.with_dim(d) first")
        pq = f"PQ{self.pq_bytes}" + ("" if self.nbits == 8 else f"x{self.nbits}")
        opq = f"OPQ{self.pq_bytes}," if self.kind == "opq_ivf_pq" else ""
        return f"{opq}IVF{self.nlist},{pq}"

    @property
    def search_params(self) -> dict:
        """The search-time parameters that apply to this kind, as :func:`set_search_params` takes them."""
        if self.kind in IVF_KINDS:
            return {"nprobe": self.nprobe, "k_factor": self.refine or None}
        if self.kind == "hnsw":
            return {"ef_search": self.ef_search}
        return {}

    @property
    def factory_string(self) -> str:
        """faiss factory string, e.g. ``"Flat"``, ``"IVF1024,Flat"``, ``"HNSW32"``, ``"OPQ32,IVF1024,PQ32,RFlat"``."""
        return self.structure + (",RFlat" if self.refine else "")

    @property
    def name(self) -> str:
        """Short label with the search parameters, e.g. ``"opq-ivf1024-pq32-np16-rf4"``, ``"hnsw32-ef64"``."""
        if self.kind == "flat":
            return "flat"
        if self.kind == "hnsw":
            return f"hnsw{self.hnsw_m}-ef{self.ef_search}"
        parts = ["opq"] if self.kind == "opq_ivf_pq" else []
        parts.append(f"ivf{self.nlist}")
        if self.kind in PQ_KINDS:
            parts.append(f"pq{self.pq_bytes}" + ("" if self.nbits == 8 else f"x{self.nbits}"))
        parts.append(f"np{self.nprobe}")
        if self.refine:
            parts.append(f"rf{self.refine:g}")
        return "-".join(parts)


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {choices}")


def _as_vectors(x, name: str, dim: int | None = None) -> np.ndarray:
    """``(N, D)`` C-contiguous float32 numpy array of an array or torch tensor."""
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().float().cpu().numpy()
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} have dimension {x.shape[1]}, but the index has {dim}")
    return x


def _faiss_metric(metric: str) -> int:
    return faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2


# --------------------------------------------------------------------------------------------- GPU

_GPU_RESOURCES = None  # one faiss.StandardGpuResources for the process, created on first use


def gpu_available() -> bool:
    """Whether this faiss build has GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _wants_gpu(spec: IndexSpec) -> bool:
    """Resolve ``spec.use_gpu``; ``"always"`` without a usable GPU is an error."""
    if spec.use_gpu == "never":
        return False
    if spec.use_gpu == "always" and not gpu_available():
        gpu_build = hasattr(faiss, "StandardGpuResources")
        raise RuntimeError(
            "use_gpu='always' but no GPU is usable: "
            + (f"faiss.get_num_gpus() == {faiss.get_num_gpus()}" if gpu_build else
               "this faiss build has no GPU support (install the 'gpu' extra: faiss-gpu-cu12)")
            + "; use use_gpu='auto' or 'never'")
    return spec.gpu_supported and gpu_available()


def _to_gpu(index: faiss.Index, spec: IndexSpec) -> faiss.Index:
    """``index`` cloned to GPU 0; under ``"auto"`` a structure faiss cannot clone stays on the CPU."""
    global _GPU_RESOURCES
    if _GPU_RESOURCES is None:
        _GPU_RESOURCES = faiss.StandardGpuResources()
    try:
        return faiss.index_cpu_to_gpu(_GPU_RESOURCES, 0, index)
    except RuntimeError as err:
        if spec.use_gpu == "always":
            raise RuntimeError(f"use_gpu='always': faiss cannot put {spec.factory_string} on the GPU: {err}") from err
        log.warning("%s stays on the CPU: faiss cannot clone it to the GPU (%s)", spec.factory_string, err)
        return index


def _is_gpu(index: faiss.Index) -> bool:
    return any(type(layer).__name__.startswith("Gpu") for layer in _layers(index))


def _cpu(index: faiss.Index) -> faiss.Index:
    """A CPU copy of a GPU index (the index itself when already on the CPU)."""
    return faiss.index_gpu_to_cpu(index) if _is_gpu(index) else index


# ------------------------------------------------------------------------------------------ layers

def _layers(index: faiss.Index) -> list:
    """The index and the indexes it wraps (pre-transforms, re-rank, id maps), outermost first,
    each downcast to its concrete faiss class."""
    out, layer = [], faiss.downcast_index(index)
    while layer is not None:
        out.append(layer)
        if isinstance(layer, faiss.IndexPreTransform):
            inner = layer.index
        elif isinstance(layer, faiss.IndexRefine):
            inner = layer.base_index
        elif isinstance(layer, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            inner = layer.index
        else:
            inner = None
        layer = faiss.downcast_index(inner) if inner is not None else None
    return out


def _find(index: faiss.Index, cls):
    """The first layer of ``index`` that is a ``cls`` (None if there is none)."""
    return next((layer for layer in _layers(index) if isinstance(layer, cls)), None)


def _ivf(index: faiss.Index):
    """The IVF layer of a CPU index, through OPQ pre-transforms and re-rank wrappers (or None);
    like ``faiss.extract_index_ivf``, which does not look through a re-rank over a pre-transform."""
    return _find(index, faiss.IndexIVF)


# ------------------------------------------------------------------------------------------- build

def _default_max_train(spec: IndexSpec) -> int:
    """Training sample size: 64 points per coarse centroid, at least 65,536."""
    return max(64 * spec.nlist, 65536) if spec.kind in IVF_KINDS else 0


def _check_training_size(spec: IndexSpec, n: int) -> None:
    """Errors when faiss cannot train on ``n`` vectors, a logged warning when it trains poorly."""
    if spec.kind == "opq_ivf_pq" and spec.dim is not None and n < spec.dim:
        # faiss's OPQ training takes an SVD of a (dim x n) matrix and aborts the process below dim rows
        raise ValueError(f"{spec.factory_string}: {n} training vectors are fewer than the dimension {spec.dim}; "
                         "OPQ needs at least as many (faiss aborts otherwise): give more or use kind='ivf_pq'")
    needs = []
    if spec.kind in IVF_KINDS:
        needs.append(("nlist", spec.nlist))
    if spec.kind in PQ_KINDS:
        needs.append(("2**nbits PQ centroids", 2 ** spec.nbits))
    for what, centroids in needs:
        if n < centroids:
            raise ValueError(f"{spec.factory_string}: {n} training vectors are fewer than {what}={centroids}; "
                             f"give at least {centroids} (ideally {MIN_POINTS_PER_CENTROID * centroids}) or lower it")
        if n < MIN_POINTS_PER_CENTROID * centroids:
            log.warning("%s: %d training vectors for %s=%d; faiss recommends at least %d (%d per centroid)",
                        spec.factory_string, n, what, centroids, MIN_POINTS_PER_CENTROID * centroids,
                        MIN_POINTS_PER_CENTROID)


def _sample(x: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """At most ``max_rows`` rows of ``x``, drawn without replacement (in their original order)."""
    if max_rows <= 0 or x.shape[0] <= max_rows:
        return x
    rows = np.sort(np.random.default_rng(seed).choice(x.shape[0], size=max_rows, replace=False))
    return x[rows]


def _train(index: faiss.Index, spec: IndexSpec, x: np.ndarray) -> None:
    """Train ``index``.

    * faiss's own too-few-points prints are silenced (:func:`_check_training_size` logged them);
    * no polysemous training (the factory turns it on for IVF-PQ; it only serves Hamming-filtered
      search, which is not used, and takes minutes);
    * OPQ trains its rotation with a PQ of the index's ``nbits`` (faiss's default: 8).
    """
    ivf = _ivf(index)
    opq, opq_pq = None, None
    if ivf is not None:
        ivf.cp.min_points_per_centroid = 1
        if spec.kind in PQ_KINDS:
            ivf.pq.cp.min_points_per_centroid = 1
            ivf.do_polysemous_training = False
    if spec.kind == "opq_ivf_pq":
        pretransform = _find(index, faiss.IndexPreTransform)
        opq = faiss.downcast_VectorTransform(pretransform.chain.at(0))
        opq_pq = faiss.ProductQuantizer(spec.dim, spec.pq_bytes, spec.nbits)
        opq_pq.cp.min_points_per_centroid = 1
        opq.pq = opq_pq  # used only while training; reset below so no dangling pointer is kept
    try:
        index.train(x)
    finally:
        if opq is not None:
            opq.pq = None


def build_index(spec: IndexSpec, train_vectors, add_vectors=None, *, max_train: int | None = None,
                seed: int = 0) -> faiss.Index:
    """Build, train and fill the index ``spec`` describes, with its search parameters set.

    Args:
        spec: the structure and its parameters.
        train_vectors: ``(N, D)`` vectors to train on (a random sample of ``max_train`` rows of
            them when larger); they are also the database when ``add_vectors`` is None.
        add_vectors: ``(M, D)`` database vectors (ids = their row numbers).
        max_train: training sample size; default ``max(64 * nlist, 65536)`` for IVF kinds.
        seed: seed of the training sample.

    Raises ``ValueError`` with fewer training vectors than ``nlist`` (or than ``2**nbits`` PQ
    centroids), and logs a warning under 39 per centroid (faiss's own threshold).
    """
    train = _as_vectors(train_vectors, "train_vectors")
    spec = spec.with_dim(train.shape[1])
    database = train if add_vectors is None else _as_vectors(add_vectors, "add_vectors", spec.dim)
    index = faiss.index_factory(spec.dim, spec.structure, _faiss_metric(spec.metric))  # the re-rank is added last
    if spec.kind == "hnsw":
        _find(index, faiss.IndexHNSW).hnsw.efConstruction = spec.ef_construction
    if _wants_gpu(spec):
        index = _to_gpu(index, spec)
    if not index.is_trained:
        _check_training_size(spec, train.shape[0])
        sample = _sample(train, _default_max_train(spec) if max_train is None else max_train, seed)
        if sample.shape[0] < train.shape[0]:
            _check_training_size(spec, sample.shape[0])
        _train(index, spec, sample)
    index.add(database)
    if spec.refine:
        index = add_refine(index, database, spec.refine)
    return set_search_params(index, **spec.search_params)


def add_refine(base_index: faiss.Index, vectors, k_factor: float) -> faiss.Index:
    """Wrap a filled index with an exact re-rank (``faiss.IndexRefine`` over a flat copy of
    ``vectors``): a search takes ``k * k_factor`` candidates from ``base_index`` and re-scores
    them exactly. ``vectors`` must be the base index's database, in the same order."""
    x = _as_vectors(vectors, "vectors", base_index.d)
    if x.shape[0] != base_index.ntotal:
        raise ValueError(f"vectors have {x.shape[0]} rows, but the base index holds {base_index.ntotal}")
    if k_factor < 1:
        raise ValueError(f"k_factor={k_factor} must be >= 1")
    exact = faiss.IndexFlat(base_index.d, base_index.metric_type)
    exact.add(x)
    refined = faiss.IndexRefine(base_index, exact)
    refined.referenced_objects = [base_index, exact]  # keep the wrapped indexes alive
    refined.k_factor = float(k_factor)
    return refined


# ------------------------------------------------------------------------------------------ search

def set_search_params(index: faiss.Index, nprobe: int | None = None, ef_search: int | None = None,
                      k_factor: float | None = None) -> faiss.Index:
    """Set search-time parameters in place (None = leave as is) and return ``index``.

    ``nprobe`` reaches the IVF layer through OPQ pre-transforms and re-rank wrappers,
    ``ef_search`` the HNSW graph, ``k_factor`` the re-rank wrapper. A parameter the index has no
    use for is an error.
    """
    if _is_gpu(index):
        space = faiss.GpuParameterSpace()
        for name, value in (("nprobe", nprobe), ("efSearch", ef_search), ("k_factor", k_factor)):
            if value is not None:
                space.set_index_parameter(index, name, float(value))
        return index
    if nprobe is not None:
        ivf = _ivf(index)
        if ivf is None:
            raise ValueError(f"nprobe={nprobe} given, but {type(index).__name__} has no IVF layer")
        if nprobe < 1:
            raise ValueError(f"nprobe={nprobe} must be >= 1")
        ivf.nprobe = int(nprobe)
    if ef_search is not None:
        hnsw = _find(index, faiss.IndexHNSW)
        if hnsw is None:
            raise ValueError(f"ef_search={ef_search} given, but {type(index).__name__} has no HNSW layer")
        if ef_search < 1:
            raise ValueError(f"ef_search={ef_search} must be >= 1")
        hnsw.hnsw.efSearch = int(ef_search)
    if k_factor is not None:
        refine = _find(index, faiss.IndexRefine)
        if refine is None:
            raise ValueError(f"k_factor={k_factor} given, but {type(index).__name__} has no re-rank layer")
        if k_factor < 1:
            raise ValueError(f"k_factor={k_factor} must be >= 1")
        refine.k_factor = float(k_factor)
    return index


def search(index: faiss.Index, queries, k: int, batch_size: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(Q, k)`` float32 scores and int64 ids of the ``k`` best database vectors of each query,
    ``batch_size`` queries per faiss call (0 = all in one call). Missing results have id ``-1``."""
    q = _as_vectors(queries, "queries", index.d)
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    if batch_size < 0:
        raise ValueError(f"batch_size={batch_size} must be >= 0 (0 = all queries in one call)")
    step = batch_size or max(q.shape[0], 1)
    scores = np.empty((q.shape[0], k), dtype=np.float32)
    ids = np.empty((q.shape[0], k), dtype=np.int64)
    for start in range(0, q.shape[0], step):
        scores[start:start + step], ids[start:start + step] = index.search(q[start:start + step], k)
    return scores, ids


def _transform(index: faiss.Index, x: np.ndarray) -> np.ndarray:
    """``x`` through every pre-transform (e.g. the OPQ rotation) above the IVF layer."""
    for layer in _layers(index):
        if isinstance(layer, faiss.IndexPreTransform):
            for i in range(layer.chain.size()):
                x = faiss.downcast_VectorTransform(layer.chain.at(i)).apply(x)
    return x


def ivf_docs_scanned(index: faiss.Index, queries) -> np.ndarray:
    """``(Q,)`` number of database vectors in the lists each query probes (IVF kinds, CPU)."""
    ivf = _ivf(index)
    if ivf is None:
        raise ValueError(f"{type(index).__name__} has no IVF layer")
    q = _transform(index, _as_vectors(queries, "queries", index.d))
    nprobe = min(ivf.nprobe, ivf.nlist)
    _, lists = ivf.quantizer.search(q, nprobe)  # (Q, nprobe) probed list ids, -1 when missing
    sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)] + [0], dtype=np.int64)  # (nlist + 1,)
    return sizes[np.where(lists >= 0, lists, ivf.nlist)].sum(axis=1)


def docs_scanned_per_query(index: faiss.Index, queries, k: int = 10) -> float | None:
    """Mean number of database vectors each query is compared with (see the module docstring).

    IVF kinds: measured per query from the probed lists; flat: ``ntotal``; HNSW: distance
    computations of a search at ``k`` (``faiss.cvar.hnsw_stats``); None for other indexes. A GPU
    index is measured on a CPU copy.
    """
    index = _cpu(index)
    if _ivf(index) is not None:
        return float(ivf_docs_scanned(index, queries).mean())
    hnsw = _find(index, faiss.IndexHNSW)
    if hnsw is not None:
        stats = getattr(faiss.cvar, "hnsw_stats", None)
        if stats is None:
            return None
        q = _as_vectors(queries, "queries", index.d)
        stats.reset()
        index.search(q, k)
        return float(stats.ndis) / max(q.shape[0], 1)
    if isinstance(_layers(index)[-1], faiss.IndexFlat):
        return float(index.ntotal)
    return None


# -------------------------------------------------------------------------------------- memory, I/O

def index_memory_bytes(index: faiss.Index) -> int:
    """Size of the serialised index (``faiss.serialize_index``): codes, ids, centroids, graph,
    re-rank vectors. A GPU index is measured on a CPU copy."""
    return int(faiss.serialize_index(_cpu(index)).size)


def save_index(index: faiss.Index, path: str | Path) -> Path:
    """Write ``index`` (moved to the CPU first if on a GPU) to ``path``; parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    faiss.write_index(_cpu(index), str(path))
    return path


def load_index(path: str | Path) -> faiss.Index:
    """Read an index written by :func:`save_index` (on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no faiss index at {path}")
    return faiss.read_index(str(path))
