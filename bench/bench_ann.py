#!/usr/bin/env python3
"""Embedding ANN benchmark (issue 13): which index, which parameters, against the exact scan.

    .venv/bin/python bench/bench_ann.py --index DIR [--queries 500] [--seed 0] [--hnsw]

Reads the embedding rows of a catalog index folder (for example a
`bench_scale.py --work W` root's `W/root/index`), and compares, on the same
rows and the same queries, in this process:

* `exact`: the shipped exact scan (`pipeline.matcher.shortlist.shortlist`,
  dead rows masked) - the baseline of every ratio;
* `ivf L/P`: faiss IVF-Flat, inner product, L k-means lists, P probed,
  trained as `pipeline.search.ann` trains it (k-means on at most 200k rows);
* `hnsw M/ef` (with `--hnsw`): faiss HNSW-Flat, M links, efConstruction 80.

Queries are live rows moved by Gaussian noise to a cosine of about 0.9 to
their row (a re-shot of a registered cake lands about there), drawn with
`--seed`. Per index: build seconds (train + add), add-one ms (mean of 256
single adds), query p50/p95 ms (one query at a time, one thread), recall@10
(share of the exact top 10 found in the index's top 10) and whether the
exact first row is in the index's top 10, bytes per row of the saved index,
and read seconds of the saved file. Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402

K = 10


def queries_near(embeddings: np.ndarray, rows: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = rng.choice(rows, count, replace=False)
    d = embeddings.shape[1]
    q = embeddings[picks] + rng.normal(0, 0.48 / np.sqrt(d), (count, d)).astype(np.float32)  # cos ~0.9 to the row
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def timed(fn, queries: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    out, ms = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q))
        ms.append((time.perf_counter() - t) * 1e3)
    return out, np.array(ms)


def measure(name: str, index, embeddings: np.ndarray, alive: np.ndarray, queries: np.ndarray, exact: list[list[int]],
            build_s: float, params) -> dict:
    import faiss

    bitmap = np.packbits(alive, bitorder="little")
    selector = faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap))
    params.sel = selector

    def search(q: np.ndarray) -> list[int]:
        _, ids = index.search(q.reshape(1, -1), K, params=params)
        return [int(i) for i in ids[0] if i >= 0]

    found, ms = timed(search, queries)
    recall = float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)]))
    first = float(np.mean([e[0] in f for f, e in zip(found, exact)]))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.index")
        faiss.write_index(index, path)
        size = os.path.getsize(path)
        t = time.perf_counter()
        faiss.read_index(path)
        read_s = time.perf_counter() - t
    extra = np.ascontiguousarray(embeddings[:256])
    t = time.perf_counter()
    for v in extra:
        index.add(v.reshape(1, -1))
    add_ms = (time.perf_counter() - t) / len(extra) * 1e3
    return {"index": name, "build_s": round(build_s, 2), "add_one_ms": round(add_ms, 3), "query_p50_ms": round(float(np.percentile(ms, 50)), 3),
            "query_p95_ms": round(float(np.percentile(ms, 95)), 3), "recall_at_10": round(recall, 4), "first_in_10": round(first, 4),
            "bytes_per_row": round(size / embeddings.shape[0], 1), "read_s": round(read_s, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True, help="a catalog index folder (HDF5 segments + manifest)")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hnsw", action="store_true", help="also HNSW (slow to build at 1M rows)")
    parser.add_argument("--lists", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--probes", type=int, nargs="+", default=[8, 16, 32, 64])
    args = parser.parse_args()

    import faiss

    from pipeline.catalog import CatalogIndex
    from pipeline.matcher.shortlist import shortlist

    faiss.omp_set_num_threads(1)  # one query at a time on one core, as the query lane runs it
    snap = CatalogIndex(args.index).snapshot()
    emb, alive = np.ascontiguousarray(snap.embeddings, dtype=np.float32), np.asarray(snap.alive)
    queries = queries_near(emb, snap.rows, args.queries, args.seed)
    exact, exact_ms = timed(lambda q: shortlist(q, emb, K, -1.0, alive=alive).indices.tolist(), queries)
    rows = [{"index": "exact", "build_s": 0.0, "add_one_ms": 0.0, "query_p50_ms": round(float(np.percentile(exact_ms, 50)), 3),
             "query_p95_ms": round(float(np.percentile(exact_ms, 95)), 3), "recall_at_10": 1.0, "first_in_10": 1.0,
             "bytes_per_row": 0.0, "read_s": 0.0}]
    rng = np.random.default_rng(0)
    live = snap.rows
    sample = live if live.size <= 200_000 else np.sort(rng.choice(live, 200_000, replace=False))
    for lists in args.lists:
        faiss.omp_set_num_threads(2)
        t = time.perf_counter()
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(emb.shape[1]), emb.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = 0
        index.train(np.ascontiguousarray(emb[sample]))
        index.add(emb)
        build = time.perf_counter() - t
        faiss.omp_set_num_threads(1)
        for probes in args.probes:
            rows.append(measure(f"ivf {lists}/{probes}", index, emb, alive, queries, exact, build, faiss.SearchParametersIVF(nprobe=probes)))
            print(rows[-1], file=sys.stderr, flush=True)
        del index
    if args.hnsw:
        faiss.omp_set_num_threads(2)
        t = time.perf_counter()
        index = faiss.IndexHNSWFlat(emb.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.add(emb)
        build = time.perf_counter() - t
        faiss.omp_set_num_threads(1)
        for ef in (64, 128, 256):
            rows.append(measure(f"hnsw 32/{ef}", index, emb, alive, queries, exact, build, faiss.SearchParametersHNSW(efSearch=ef)))
            print(rows[-1], file=sys.stderr, flush=True)
    base = rows[0]["query_p50_ms"]
    print(f"rows {emb.shape[0]:,} (live {live.size:,}), dim {emb.shape[1]}, {len(queries)} queries, seed {args.seed}")
    print("| index | build s | add one ms | query p50 / p95 ms | p50 vs exact | recall@10 | exact first in top 10 | bytes/row | read s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['index']} | {r['build_s']} | {r['add_one_ms']} | {r['query_p50_ms']} / {r['query_p95_ms']} | "
              f"{r['query_p50_ms'] / base:.3f}x | {r['recall_at_10']} | {r['first_in_10']} | {r['bytes_per_row']} | {r['read_s']} |")
    print(json.dumps({"rows": int(emb.shape[0]), "live": int(live.size), "queries": len(queries), "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
