#!/usr/bin/env python3
"""Embedding-only comparison of encoders on BENCHMARK.md folders, in one run.

    python bench/compare_encoders.py BENCH... --models pipeline/data/models/teaprint-encoder.keras NEW.keras [--k 10]

For each benchmark and model: top1 of the cosine nearest neighbour, recall@K
of the cosine shortlist (labels in the order of their best entry), recall at
1% FAR swept on the best cosine (unregistered queries give the false accepts),
and the right label's median cosine. "pooled" rows do the same against the
catalogs of ALL the given benchmarks together (labels kept apart per
benchmark): more entries to be confused with, as in a larger catalog.
Then the cost: ms per query embedding through the serving runtime (LiteRT,
one photo at a time, with the metadata's rotation pooling; models measured
alternately query by query so both see the same machine load), file sizes.

Every model is served as in production (`Encoder.load`, runtime "auto": the
LiteRT export when it is there and current).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.features.embedding import Encoder, serving_path  # noqa: E402
from pipeline.training.evaluate import embedding_figures, load_bench  # noqa: E402


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benches", type=Path, nargs="+")
    parser.add_argument("--models", type=Path, nargs="+", required=True)
    parser.add_argument("--k", type=int, default=10, help="shortlist length for recall@K (matcher.shortlist.top_k)")
    parser.add_argument("--timing-queries", type=int, default=60, help="queries embedded one at a time per model for ms")
    args = parser.parse_args(argv)

    encoders = [Encoder.load(m) for m in args.models]
    names = [m.stem if m.parent.name == "models" else f"{m.parent.name}/{m.stem}" for m in args.models]
    data = {b.name: load_bench(b, unregistered=True) for b in args.benches}
    vectors: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
    for m, enc in enumerate(encoders):
        for bench, (cat, _, queries, _) in data.items():
            vectors[m, bench] = (enc.embed(cat), enc.embed(queries))

    print(f"| bench | figure | {' | '.join(names)} |")
    print(f"|---|---|{'---|' * len(names)}")
    for bench, (_, cat_labels, _, q_labels) in data.items():
        figs = [embedding_figures(vectors[m, bench][1], q_labels, vectors[m, bench][0], cat_labels, args.k)
                for m in range(len(encoders))]
        pooled = []
        for m in range(len(encoders)):
            cats = np.concatenate([vectors[m, b][0] for b in data])
            labels = [f"{b}/{lab}" for b in data for lab in data[b][1]]
            q = [f"{bench}/{lab}" if lab else "" for lab in q_labels]
            pooled.append(embedding_figures(vectors[m, bench][1], q, cats, labels, args.k))
        n_reg, n_unreg = figs[0]["registered"], figs[0]["unregistered"]
        print(f"| {bench} ({len(cat_labels)} cat, {n_reg}+{n_unreg} q) | top1 | {' | '.join(_fmt(f['top1']) for f in figs)} |")
        print(f"| | recall@{args.k} | {' | '.join(_fmt(f['recall_at_k']) for f in figs)} |")
        print(f"| | recall_at_far1 | {' | '.join(_fmt(f['recall_at_far1']) for f in figs)} |")
        print(f"| | right label's median cosine | {' | '.join(_fmt(f['genuine_median']) for f in figs)} |")
        print(f"| | pooled top1 | {' | '.join(_fmt(f['top1']) for f in pooled)} |")
        print(f"| | pooled recall@{args.k} | {' | '.join(_fmt(f['recall_at_k']) for f in pooled)} |", flush=True)
    pooled_n = sum(len(d[1]) for d in data.values())

    queries = [q for d in data.values() for q in d[2]][: args.timing_queries]
    times: list[list[float]] = [[] for _ in encoders]
    for enc in encoders:  # warm-up: interpreter arenas for batch 1
        enc.embed(queries[:2])
    for q in queries:
        for m, enc in enumerate(encoders):
            t0 = time.perf_counter()
            enc.embed([q])
            times[m].append((time.perf_counter() - t0) * 1e3)
    ms = [float(np.median(t)) for t in times]
    print(f"| cost | ms / query embedding ({encoders[0].info.runtime}, 1 photo, pool {encoders[0].info.rotation_pool}; median) | "
          f"{' | '.join(f'{v:.2f}' for v in ms)} |")
    print(f"| | ratio to {names[0]} | {' | '.join(f'{v / ms[0]:.2f}' for v in ms)} |")
    print(f"| | .tflite MB | {' | '.join(f'{serving_path(m).stat().st_size / 1e6:.2f}' for m in args.models)} |")
    print(f"| | .keras MB | {' | '.join(f'{m.stat().st_size / 1e6:.2f}' for m in args.models)} |")
    print(f"| | params | {' | '.join(str(e.info.metadata.get('architecture', {}).get('params')) for e in encoders)} |")
    print(f"\npooled = against all {pooled_n} catalog entries of the {len(data)} benchmarks; runtime {[e.info.runtime for e in encoders]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
