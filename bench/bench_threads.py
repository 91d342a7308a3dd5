#!/usr/bin/env python3
"""One query's wall and CPU time with BLAS on one thread (shipped) and on N threads (before 2026-12-07).

    .venv/bin/python bench/bench_threads.py BENCH [--queries 80] [--rounds 2] [--blas-threads 2]

BENCH is a folder in the layout of ../shared/BENCHMARK.md. Its catalog is
indexed once into a temp root (shipped settings and model); then each round
runs two fresh processes, alternated so the machine's drift weighs alike:
`OPENBLAS_NUM_THREADS` unset (the engine sets it to 1, `pipeline/threads.py`)
and set to `--blas-threads` (kept, as a user's own setting is). Each process
prepares and matches the first `--queries` queries one at a time
(`Engine.prepare` + `Engine.match_prepared`, five untimed first) and reports
wall and CPU time per query (p50, mean). Prints one line per run, then a JSON
line with the medians of each variant, their ratio, and whether every query
got the same status, label and confidence (6 places) in every run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def child(root: Path, bench: Path, queries: int) -> dict:
    sys.path.insert(0, str(REPO))
    from threadpoolctl import threadpool_info

    from bench_versions import time_queries
    from pipeline.config import load_config
    from pipeline.engine import Engine

    engine = Engine.load(load_config(None), root)
    engine.warm_up()
    engine.warm_up_matcher()
    timed = time_queries(engine, sorted((bench / "query").iterdir())[: queries + 5])
    blas = sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
    return {"blas_threads": blas, **{k: timed[k] for k in ("wall_p50_ms", "wall_mean_ms", "cpu_p50_ms", "answers")}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", type=Path)
    ap.add_argument("--queries", type=int, default=80)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--blas-threads", type=int, default=2)
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.bench, args.queries)))
        return 0
    sys.path.insert(0, str(REPO))
    from bench_versions import alternate, medians
    from pipeline.config import load_config
    from pipeline.engine import Engine

    with tempfile.TemporaryDirectory(prefix="teaprint-bench-threads-") as tmp:
        root = Path(tmp)
        Engine.load(load_config(None), root).index_files(sorted((args.bench / "catalog").iterdir()))
        env_one = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
        variants = {"one (shipped)": env_one, f"{args.blas_threads} threads": env_one | {"OPENBLAS_NUM_THREADS": str(args.blas_threads)}}
        argv = [sys.executable, __file__, str(args.bench), "--queries", str(args.queries), "--child", str(root)]
        runs = alternate({name: (argv, env) for name, env in variants.items()}, args.rounds, lambda name, run: (
            f"{name:>14}: BLAS threads {run['blas_threads']}, wall p50 {run['wall_p50_ms']:.1f} ms, "
            f"mean {run['wall_mean_ms']:.1f} ms, CPU p50 {run['cpu_p50_ms']:.1f} ms"))
    summary = medians(runs)
    one, many = summary.values()
    answers = [r["answers"] for rs in runs.values() for r in rs]
    print(json.dumps({"bench": str(args.bench), "queries": args.queries, "rounds": args.rounds, "load_avg": os.getloadavg()[0],
                      "variants": summary, "wall_p50_ratio": round(one["wall_p50_ms"] / many["wall_p50_ms"], 3),
                      "cpu_p50_ratio": round(one["cpu_p50_ms"] / many["cpu_p50_ms"], 3),
                      "same_answers": all(a == answers[0] for a in answers)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
