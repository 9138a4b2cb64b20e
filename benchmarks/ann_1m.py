"""ANN retrieval for a 1M-item catalogue of 64-d vectors: build time, top-100 latency, recall.

The vectors are synthetic (a mixture of 2,000 Gaussian "taste" clusters with item-specific
noise and popularity-like norm spread), queries are user vectors drawn the same way. The
search depth (IVF lists probed, HNSW efSearch) is chosen on one query set and the numbers
are reported on another, so recall is not tuned on what it is reported on.

    python benchmarks/ann_1m.py            # writes benchmarks/results/ann_1m.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def synthetic(n: int, dim: int, clusters: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    which = rng.integers(0, clusters, n)
    vectors = centres[which] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    vectors *= rng.lognormal(0.0, 0.25, size=(n, 1)).astype(np.float32)
    return np.ascontiguousarray(vectors / np.sqrt(dim), dtype=np.float32)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(f, t)) / truth.shape[1]
                          for f, t in zip(found, truth, strict=True)]))


def timed_search(ann, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One query at a time, as a request would: (ids (Q, k), milliseconds (Q,))."""
    found, latencies = [], []
    for query in queries:
        started = time.perf_counter()
        _, ids = ann.search(query[None, :], k)
        latencies.append((time.perf_counter() - started) * 1000)
        found.append(ids[0])
    return np.array(found), np.array(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--kinds", default="ivf,hnsw")
    parser.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=80)
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    import faiss

    from userlens.serving.engine import build_ann

    rng = np.random.default_rng(0)
    items = synthetic(args.items, args.dim, 2000, rng)
    tune_queries = synthetic(args.queries, args.dim, 2000, np.random.default_rng(1))
    test_queries = synthetic(args.queries, args.dim, 2000, np.random.default_rng(2))
    log(f"{args.items:,} x {args.dim} item vectors, {faiss.omp_get_max_threads()} faiss "
        "threads")

    exact = faiss.IndexFlatIP(args.dim)
    exact.add(items)
    started = time.perf_counter()
    _, truth_tune = exact.search(tune_queries, args.k)
    _, truth_test = exact.search(test_queries, args.k)
    exact_ms = (time.perf_counter() - started) * 1000 / (2 * args.queries)
    log(f"exact top-{args.k}: {exact_ms:.1f} ms per query (batched)")

    result = {"items": args.items, "dim": args.dim, "k": args.k,
              "build_threads": args.build_threads,
              "target_recall": args.target_recall, "cpus": os.cpu_count(),
              "exact_ms_per_query_batched": exact_ms, "indexes": {}}
    sweeps = {"ivf": [16, 32, 64, 128, 192, 256, 384, 512],
              "hnsw": [256, 512, 1024, 1536, 2048, 3072]}
    for kind in args.kinds.split(","):
        faiss.omp_set_num_threads(args.build_threads)
        started = time.perf_counter()
        ann = build_ann(items, kind=kind, m=args.m, ef_construction=args.ef_construction)
        build_seconds = time.perf_counter() - started
        log(f"{kind}: built in {build_seconds:.0f} s")
        faiss.omp_set_num_threads(1)  # one request = one query on one core
        tuning, chosen = [], None
        for depth in sweeps[kind]:
            ann.set_depth(depth)
            found, latencies = timed_search(ann, tune_queries, args.k)
            value = recall(found, truth_tune)
            tuning.append({"depth": depth, "recall_at_k": value,
                           "p99_ms": float(np.percentile(latencies, 99))})
            log(f"  depth {depth}: recall@{args.k} {value:.4f}, p99 "
                f"{tuning[-1]['p99_ms']:.2f} ms (tuning queries)")
            if value >= args.target_recall:
                chosen = depth
                break
        ann.set_depth(chosen or sweeps[kind][-1])
        found, latencies = timed_search(ann, test_queries, args.k)
        entry = {"build_seconds": build_seconds, "depth": ann.depth, "tuning": tuning,
                 "reached_target_on_tuning": chosen is not None,
                 "recall_at_k_test_queries": recall(found, truth_test),
                 "latency_ms": {q: float(np.percentile(latencies, int(q[1:])))
                                for q in ("p50", "p95", "p99")}}
        result["indexes"][kind] = entry
        log(f"{kind} depth {ann.depth}, test queries: recall@{args.k} "
            f"{entry['recall_at_k_test_queries']:.4f}, p50 {entry['latency_ms']['p50']:.2f} ms,"
            f" p99 {entry['latency_ms']['p99']:.2f} ms")
        del ann
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ann_1m.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
