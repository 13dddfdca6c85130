"""Retrieval indexes against exact search: build time, queries/s and recall@10 of the exact neighbours.

    python benchmarks/retrieval.py [--n 200000] [--dim 768] [--queries 1000] [--stores runs/demo/embeddings]

Data: `--n` random 768-d vectors drawn around 2,000 random centres (a mixture of Gaussians, so that neighbours
mean something), and the real embeddings in the stores under `--stores` (`make demo` writes them: the demo
encoders' features of the keyword and sound-event sets). Queries are `--queries` vectors of the data set, held
out of the index. Every index kind of `ssast.eval.retrieval` at its default sizes; exact search (`flat`) is the
baseline of the queries/s ratio and defines recall@10. Medians of 3 timed searches.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import faiss
import numpy as np

from ssast.eval.embeddings import Store
from ssast.eval.retrieval import IndexConfig, build_index, search

KINDS = ("flat", "ivf", "ivfpq", "hnsw")


def mixture(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """`n` unit vectors of `dim` drawn around 2000 Gaussian centres (data with neighbours worth finding)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, dim)).astype(np.float32)
    return centres[rng.integers(0, 2000, n)] + 0.6 * rng.standard_normal((n, dim), dtype=np.float32)


def bench(name: str, x: np.ndarray, queries: int, k: int = 10) -> list[str]:
    """Table rows of every index kind on `x`: build time, queries/s, ratio to exact search and recall@k."""
    rng = np.random.default_rng(1)
    held = rng.choice(len(x), min(queries, len(x) // 5), replace=False)
    q, base = x[held], np.delete(x, held, axis=0)
    rows, exact, flat_qps = [], None, None
    for kind in KINDS:
        index, info = build_index(base, IndexConfig(kind=kind))
        times = []
        for _ in range(3):
            start = time.perf_counter()
            _, ids = search(index, q, k)
            times.append(time.perf_counter() - start)
        qps = len(q) / statistics.median(times)
        if kind == "flat":
            exact, flat_qps = ids, qps
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, exact, strict=True)])
        sizes = ", ".join(
            f"{key} {info[key]}" for key in ("nlist", "nprobe", "pq_m", "pq_bits", "hnsw_m", "ef_search") if key in info
        )
        rows.append(
            f"| {name} | {kind} | {info['build_s']:.1f} | {qps:,.0f} | {qps / flat_qps:.2f}x | {recall:.3f} | {sizes} |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    """Benchmark the index kinds on a synthetic mixture and on a store, printing ratios to exact search."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--stores", default="runs/demo/embeddings")
    args = parser.parse_args()
    print(f"faiss {faiss.__version__}, {faiss.get_num_gpus()} GPU(s), {faiss.omp_get_max_threads()} threads")
    print("| data | index | build s | queries/s | vs exact | recall@10 | sizes |\n|---|---|---|---|---|---|---|")
    bench(f"mixture {args.n:,} x {args.dim}", mixture(args.n, args.dim), args.queries)
    stores = (
        [Store(p.parent) for p in sorted(Path(args.stores).glob("*/store.json"))] if Path(args.stores).is_dir() else []
    )
    by_encoder: dict[str, list[Store]] = {}
    for store in stores:
        if store.meta["weights"] != "fbank":
            by_encoder.setdefault(store.meta["weights"], []).append(store)
    for weights, group in list(by_encoder.items())[:2]:  # every clip of the demo sets, through two encoders
        name = next(n for n in group[0].names if n.endswith("_avgtok"))
        x = np.concatenate([s.features(name) for s in group if name in s.names])
        bench(f"demo embeddings, encoder {weights[:8]} ({name}, {len(x)} clips)", x, min(args.queries, len(x) // 5))


if __name__ == "__main__":
    main()
