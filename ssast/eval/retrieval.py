"""Embedding retrieval with FAISS: indexes over L2-normalised vectors (inner product = cosine similarity), query
by example, kNN classification, and the retrieval metrics.

Index kinds: ``flat`` (exact ``IndexFlatIP``), ``ivf`` (IVF-Flat), ``ivfpq`` (IVF-PQ) and ``hnsw`` (HNSW-Flat).
Sizes not given are chosen from the data: ``nlist`` = 4 sqrt(n) (at most n / 39, so that each list gets FAISS's
minimum of 39 training points), k-means on at most 64 points per list, ``nprobe`` = nlist / 32 (at least 16),
PQ with d / 8 sub-quantizers (d / 4 when that does not divide) of 8 bits (fewer when there are not 39 x 256
training points), HNSW with 32 links, efConstruction 40 and efSearch 128. Flat and IVF indexes are cloned onto
every GPU FAISS sees; HNSW stays on the CPU (FAISS has no GPU HNSW).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal, Optional

import faiss
import numpy as np

from ssast.config import NonNegative, Positive

IndexKind = Literal["flat", "ivf", "ivfpq", "hnsw"]


@dataclass
class IndexConfig:
    """The FAISS index: its kind and sizes (0: chosen from the data, see the module's docstring)."""

    kind: IndexKind = "flat"
    nlist: NonNegative = 0  # IVF lists; 0: 4 sqrt(n)
    nprobe: NonNegative = 0  # IVF lists searched; 0: nlist / 32, at least 16
    pq_m: NonNegative = 0  # IVF-PQ sub-quantizers; 0: d / 8
    hnsw_m: Positive = 32
    ef_search: Positive = 128
    ef_construction: Positive = 40
    gpu: bool = True  # use every GPU FAISS sees (flat and IVF)


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32 and contiguous as FAISS wants."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def index_sizes(cfg: IndexConfig, n: int, d: int) -> dict[str, int]:
    """The sizes an index of `n` vectors of dimension `d` is built with (printed by the CLI)."""
    if cfg.kind in ("flat", "hnsw"):
        return {"hnsw_m": cfg.hnsw_m, "ef_search": cfg.ef_search} if cfg.kind == "hnsw" else {}
    nlist = cfg.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
    sizes = {"nlist": nlist, "nprobe": min(nlist, cfg.nprobe or max(16, nlist // 32)), "train_size": min(n, 64 * nlist)}
    if cfg.kind == "ivfpq":
        sizes["pq_m"] = cfg.pq_m or (d // 8 if d % 8 == 0 else d // 4 if d % 4 == 0 else 1)
        # 8-bit codes need 39 * 256 training points per sub-quantizer; fewer bits for small collections
        sizes["pq_bits"] = max(1, min(8, int(math.log2(max(2, sizes["train_size"] // 39)))))
        if d % sizes["pq_m"]:
            raise ValueError(f"pq_m {sizes['pq_m']} does not divide the dimension {d}")
    return sizes


def build_index(x: np.ndarray, cfg: Optional[IndexConfig] = None, seed: int = 0) -> tuple[faiss.Index, dict]:
    """An index holding the rows of `x` (normalised here), and its sizes and build time (`cfg` default: flat)."""
    cfg = cfg or IndexConfig()
    x = normalise(x)
    n, d = x.shape
    sizes = index_sizes(cfg, n, d)
    start = time.perf_counter()
    if cfg.kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif cfg.kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction, index.hnsw.efSearch = cfg.ef_construction, cfg.ef_search
    else:
        quantizer = faiss.IndexFlatIP(d)
        index = (
            faiss.IndexIVFFlat(quantizer, d, sizes["nlist"], faiss.METRIC_INNER_PRODUCT)
            if cfg.kind == "ivf"
            else faiss.IndexIVFPQ(
                quantizer, d, sizes["nlist"], sizes["pq_m"], sizes["pq_bits"], faiss.METRIC_INNER_PRODUCT
            )
        )
        sample = np.random.default_rng(seed).choice(n, sizes["train_size"], replace=False)
        index.train(x[np.sort(sample)])
        index.nprobe = sizes["nprobe"]
    if cfg.gpu and cfg.kind != "hnsw" and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
        if cfg.kind in ("ivf", "ivfpq"):
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", sizes["nprobe"])
    index.add(x)
    sizes.update(
        build_s=time.perf_counter() - start,
        n=n,
        d=d,
        kind=cfg.kind,
        gpus=faiss.get_num_gpus() if cfg.gpu and cfg.kind != "hnsw" else 0,
    )
    return index, sizes


def to_cpu(index: faiss.Index) -> faiss.Index:
    """The index in host memory (for saving), whether it lives on GPUs or not."""
    return faiss.index_gpu_to_cpu(index) if faiss.get_num_gpus() > 0 and "Gpu" in type(index).__name__ else index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarities [q, k], row ids [q, k]) of the `k` nearest rows of each normalised query."""
    return index.search(normalise(queries), k)


def neighbours_excluding_self(index: faiss.Index, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Every row of the index queried with itself: its `k` nearest other rows (the query's own id removed, or
    the last hit when an approximate index missed it), and the queries per second."""
    start = time.perf_counter()
    scores, ids = search(index, x, k + 1)
    qps = len(x) / (time.perf_counter() - start)
    own = ids == np.arange(len(x))[:, None]
    drop = np.where(own.any(1), own.argmax(1), k)  # the column to remove in each row
    keep = np.ones_like(ids, dtype=bool)
    keep[np.arange(len(x)), drop] = False
    return scores[keep].reshape(len(x), k), ids[keep].reshape(len(x), k), qps


def relevance(labels: np.ndarray, query: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """[q, k] booleans: hit shares a label with its query (class ids [n], or multi-hot [n, C]); -1 (no hit, an
    approximate index that found fewer than k) is not relevant."""
    found = hits >= 0
    hits = np.where(found, hits, 0)
    if labels.ndim == 1:
        return found & (labels[hits] == labels[query][:, None])
    return found & ((labels[hits] * labels[query][:, None, :]).sum(-1) > 0)


def relevant_counts(labels: np.ndarray) -> np.ndarray:
    """For each row, the number of other rows that share a label with it."""
    if labels.ndim == 1:
        _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        return counts[inverse] - 1
    y = labels.astype(np.float32) > 0
    return np.array([(y[:, y[i]].any(1)).sum() - 1 for i in range(len(y))])


def retrieval_metrics(rel: np.ndarray, n_relevant: np.ndarray) -> dict[str, float]:
    """precision@k, recall@k and mAP@k from [q, k] relevance in rank order. Queries with no relevant row in the
    collection are left out. AP@k = sum over ranks i <= k of precision@i at the relevant ranks, / min(k, R)."""
    k = rel.shape[1]
    has = n_relevant > 0
    rel, r = rel[has].astype(np.float64), n_relevant[has]
    precision_at_i = np.cumsum(rel, 1) / np.arange(1, k + 1)
    ap = (precision_at_i * rel).sum(1) / np.minimum(k, r)
    return {
        "precision_at_k": float(rel.mean(1).mean()),
        "recall_at_k": float((rel.sum(1) / r).mean()),
        "map_at_k": float(ap.mean()),
        "queries": int(has.sum()),
    }


def query_by_example(index: faiss.Index, embeddings: np.ndarray, labels: np.ndarray, k: int) -> dict:
    """Each indexed clip (the rows of `embeddings`) queries all the others, itself excluded; a hit is relevant
    when it shares a label with the query. precision_at_k, recall_at_k, map_at_k, queries, k, queries_per_s."""
    _, ids, qps = neighbours_excluding_self(index, embeddings, k)
    labels = np.asarray(labels)
    out = retrieval_metrics(relevance(labels, np.arange(len(ids)), ids), relevant_counts(labels))
    return {**out, "k": k, "queries_per_s": qps}


def evaluate(embeddings: np.ndarray, labels: np.ndarray, k: int = 10, index: IndexKind | IndexConfig = "flat") -> dict:
    """`query_by_example` over an index of `embeddings` (labels: class ids [n] or multi-hot [n, C]), with the
    index's sizes and build time."""
    cfg = index if isinstance(index, IndexConfig) else IndexConfig(kind=index)
    built, info = build_index(embeddings, cfg)
    return {**query_by_example(built, embeddings, labels, k), "index": info}


def knn_classify(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    k: int,
    metric: Literal["cosine", "l2"] = "cosine",
    n_classes: Optional[int] = None,
) -> np.ndarray:
    """Class scores [n_test, classes] of a k-nearest-neighbour vote (exact search): each neighbour's class counts
    1, ties go to the class of the nearer neighbour (each vote is nudged by 1e-3 of its rank's weight)."""
    n_classes = n_classes or int(train_y.max()) + 1
    if metric == "cosine":
        index = faiss.IndexFlatIP(train_x.shape[1])
        index.add(normalise(train_x))
        _, ids = index.search(normalise(test_x), k)
    else:
        index = faiss.IndexFlatL2(train_x.shape[1])
        index.add(np.ascontiguousarray(train_x, dtype=np.float32))
        _, ids = index.search(np.ascontiguousarray(test_x, dtype=np.float32), k)
    scores = np.zeros((len(test_x), n_classes))
    weights = 1 + 1e-3 * (k - np.arange(k)) / k  # nearer neighbours break ties
    np.add.at(scores, (np.arange(len(test_x))[:, None], train_y[ids]), weights)
    return scores
