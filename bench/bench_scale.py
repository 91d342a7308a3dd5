#!/usr/bin/env python3
"""Scale benchmark (issue 13): a catalog of N synthetic distractors plus a real benchmark's catalog.

    .venv/bin/python bench/bench_scale.py --entries N --backend embedded|milvus [--bench DIR]
        [--seed S] [--work DIR] [--answers FILE] [--config FILE]

1. Build (this process), in a temp root (or `--work DIR`, which must be new
   or empty and is kept): a pool of real views is rendered and described by
   the product (`bench/synthetic.py`: non-held-out scikit-image photos and
   distractor-key procedural textures, never the benchmark's photos, never
   KTH-TIPS); N distractors are recombined from it and registered with
   `Engine.register`, 10k per commit; then DIR's catalog is registered with
   `Engine.index_files` (the product's own indexing path). `build_s` is the
   distractors' generation + registration + DIR's indexing (`pool_s`, the
   pool, is a fixed cost and reported apart); `bytes_per_entry` is the index
   folder's bytes over its entries.
2. Measure (one FRESH python process, started after the build):
   `open_s` = `Engine.load` + `Engine.serving_snapshot` (everything the
   matcher derives from the generation built); `rss_mb` = that process's
   VmRSS right after. Then the encoder and matcher are warmed up
   (`warm_ms`), every query of DIR is prepared (`Engine.prepare`: decode,
   LBP, keypoints, encoder input), one untimed match warms the matcher's
   lazy paths, and every query is matched (`Engine.match_prepared`, which
   embeds the query): `query_p50_ms`/`query_p95_ms` exclude decode (the
   match only), `query_p50_decode_ms`/`..._p95_..` are prepare + match of
   the same query. Then one more real photo (a view not in the pool) is
   registered (prepare + describe + register: `add_one_ms`; the register
   call alone: `add_one_register_ms`) and the first query is matched again
   (`next_query_ms`: what the first query after a registration pays;
   `next_query_before_add_ms`: the same query's time in the timed pass, so
   the difference is what the registration adds, whatever that query's own
   work at this catalog size). A photo to add that the catalog already holds
   stops the measurement: its refusal would be timed as a registration.
   `top1` and `recall_at_far1` of DIR's queries come from the product's
   metric functions (`pipeline.evaluation.metrics.compute_figures` on
   `pipeline.evaluation.bench.outcome` of each result), registered and
   unregistered queries as DIR's truth.csv says.
   Without `--bench` the queries are 20 extra rendered views (none in the
   catalog): latencies are measured, top1 / recall_at_far1 are null.

Prints a table and, as the LAST line, one JSON object. `--answers FILE`
writes each query's result (the result contract plus `truth`, `prepare_ms`,
`match_ms`) as JSON lines. `--backend milvus` runs the same with
`search.backend: milvus` on a milvus-lite file in the work folder
(`milvus.db`); the build then includes filling the collection.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import numpy as np  # noqa: E402

import synthetic  # noqa: E402

DEFAULT_QUERIES_WITHOUT_BENCH = 20


def vm_kb(field: str) -> float:
    """A field of /proc/self/status in kB (VmRSS, VmHWM)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    return float("nan")


def pct(values, q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values, np.float64), q)), 2) if len(values) else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink())


# ----------------------------------------------------------------- measuring (the fresh process)


def measure(spec: dict) -> dict:
    """Open the built catalog, measure, query; runs in its own process (`--child`)."""
    from pipeline.config import load_config
    from pipeline.engine import Engine
    from pipeline.evaluation.bench import outcome
    from pipeline.evaluation.metrics import compute_figures
    from pipeline.intake import IntakeError
    from pipeline.results import rejected

    config = load_config(Path(spec["config"]))
    root = Path(spec["root"])
    t0 = time.perf_counter()
    engine = Engine.load(config, root)
    snap = engine.serving_snapshot()
    open_s = time.perf_counter() - t0
    rss_mb = vm_kb("VmRSS") / 1024.0
    opened_entries = len(snap)
    del snap

    t0 = time.perf_counter()
    engine.warm_up()
    engine.warm_up_matcher()
    warm_ms = (time.perf_counter() - t0) * 1e3

    queries = [(Path(q), t) for q, t in spec["queries"]]
    prepared, prepare_ms = [], []
    for path, _ in queries:
        t0 = time.perf_counter()
        try:
            prepared.append(engine.prepare(path))
        except IntakeError as err:
            prepared.append(err)
        prepare_ms.append((time.perf_counter() - t0) * 1e3)

    first = next((p for p in prepared if not isinstance(p, Exception)), None)
    if first is not None:
        engine.match_prepared(first, "warm-up")  # untimed: lazy set-up on the first match

    results, per_query, match_ms, decode_ms = [], [], [], []
    for (path, _), p, prep in zip(queries, prepared, prepare_ms):
        if isinstance(p, Exception):
            results.append(rejected(path.name, str(p), getattr(p, "code", "unreadable"), model=engine.model_info))
            per_query.append(None)
            continue
        t0 = time.perf_counter()
        results.append(engine.match_prepared(p, path.name))
        ms = (time.perf_counter() - t0) * 1e3
        per_query.append(ms)
        match_ms.append(ms)
        decode_ms.append(prep + ms)

    if spec.get("answers"):
        with open(spec["answers"], "w", encoding="utf-8") as fh:
            for (path, truth), r, prep, ms in zip(queries, results, prepare_ms, per_query):
                line = {**r.to_dict(), "truth": truth, "prepare_ms": round(prep, 3),
                        "match_ms": round(ms, 3) if ms is not None else None}
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")

    figures = None
    if spec["scored"]:
        figures = compute_figures([outcome(r, truth) for r, (_, truth) in zip(results, queries)]).to_dict()

    add_one_ms = add_register_ms = next_query_ms = before_add_ms = None
    if spec.get("add") and first is not None:
        t0 = time.perf_counter()
        new = engine.prepare(Path(spec["add"]), for_catalog=True)
        entries = engine.describe([new], labels=["scalebenchadded"])
        t1 = time.perf_counter()
        done = engine.register(entries)
        t2 = time.perf_counter()
        if not done.added:  # a refusal is cheap: timing it as a registration would flatter add_one_ms
            raise RuntimeError(f"{spec['add']} is already in the catalog; give the measurement a photo it has not registered")
        add_one_ms, add_register_ms = (t2 - t0) * 1e3, (t2 - t1) * 1e3
        t0 = time.perf_counter()
        engine.match_prepared(first, "after-add")
        next_query_ms = (time.perf_counter() - t0) * 1e3
        # The same query's own time before the registration: the next query's cost beyond it is what the registration
        # adds (the first query's answer, and so its work, may differ between catalog sizes: a second verification pass).
        before_add_ms = next(ms for p, ms in zip(prepared, per_query) if p is first)

    return {
        "opened_entries": opened_entries,
        "open_s": round(open_s, 3),
        "rss_mb": round(rss_mb, 1),
        "warm_ms": round(warm_ms, 1),
        "queries": len(queries),
        "query_p50_ms": pct(match_ms, 50),
        "query_p95_ms": pct(match_ms, 95),
        "query_p50_decode_ms": pct(decode_ms, 50),
        "query_p95_decode_ms": pct(decode_ms, 95),
        "prepare_p50_ms": pct(prepare_ms, 50),
        "add_one_ms": round(add_one_ms, 1) if add_one_ms is not None else None,
        "add_one_register_ms": round(add_register_ms, 1) if add_register_ms is not None else None,
        "next_query_ms": round(next_query_ms, 1) if next_query_ms is not None else None,
        "next_query_before_add_ms": round(before_add_ms, 1) if before_add_ms is not None else None,
        "peak_rss_mb": round(vm_kb("VmHWM") / 1024.0, 1),
        "load_1m": round(os.getloadavg()[0], 2),
        "figures": figures,
    }


# ----------------------------------------------------------------- building (this process)


def build(args: argparse.Namespace, work: Path, config_path: Path) -> dict:
    """Pool, distractors and the benchmark's catalog into `work`/index; the figures of the build."""
    from pipeline.config import load_config
    from pipeline.engine import Engine
    from pipeline.evaluation.bench import load_benchmark

    config = load_config(config_path)
    engine = Engine.load(config, work)
    engine.warm_up()
    bench = load_benchmark(args.bench, config) if args.bench else None

    t0 = time.perf_counter()
    extra = 1 + (0 if bench else DEFAULT_QUERIES_WITHOUT_BENCH)
    pool, extra_paths = synthetic.build_pool(engine, config, work / "pool", args.seed, per_photo=args.pool_per_photo,
                                             per_texture=args.pool_per_texture, procedural=args.pool_textures, extra=extra)
    pool_s = time.perf_counter() - t0

    gen_s = register_s = 0.0
    registered = 0
    folder = work / "distractors"  # never written: where their photos would be
    chunks = synthetic.generate(pool, args.entries, args.seed, folder)
    while True:
        t0 = time.perf_counter()
        entries = next(chunks, None)
        gen_s += time.perf_counter() - t0
        if entries is None:
            break
        t0 = time.perf_counter()
        done = engine.register(entries)
        register_s += time.perf_counter() - t0
        registered += len(done.added)
        if args.entries >= 50_000:
            print(f"  registered {registered:,} / {args.entries:,} distractors", file=sys.stderr, flush=True)
        del entries, done
    if registered != args.entries:
        raise RuntimeError(f"{args.entries} distractors generated, {registered} registered")

    catalog_added, index_bench_s, refused = 0, 0.0, []
    if bench is not None:
        t0 = time.perf_counter()
        report = engine.index_files(bench.catalog, catalog_root=bench.root / "catalog")
        index_bench_s = time.perf_counter() - t0
        catalog_added = len(report.added)
        refused = [f"{p}: {reason}" for p, _, reason in report.failed]
        queries = [(str(q), t) for q, t in zip(bench.queries, bench.truth)]
    else:
        queries = [(str(p), "") for p in extra_paths[1:]]

    # The search structures derived from the record (vote store; the Milvus collection with that backend) are
    # brought up to the catalog here, as the daemon's catalog lane does before publishing: part of the build.
    t0 = time.perf_counter()
    engine.serving_snapshot()
    if not (engine.index_dir / "votes.bin").exists():  # fewer entries than one merge: save the postings for the fresh process
        engine.reindex()
    search_s = time.perf_counter() - t0

    entries_total = registered + catalog_added
    index_bytes = folder_bytes(engine.index_dir)
    engine.close()  # the fresh measuring process must be able to open a milvus-lite file
    del engine
    gc.collect()
    return {
        "pool": synthetic.summary(pool),
        "pool_s": round(pool_s, 2),
        "gen_s": round(gen_s, 2),
        "register_s": round(register_s, 2),
        "index_bench_s": round(index_bench_s, 2),
        "search_s": round(search_s, 2),
        "build_s": round(gen_s + register_s + index_bench_s + search_s, 2),
        "distractors": registered,
        "catalog": catalog_added,
        "catalog_refused": refused,
        "entries": entries_total,
        "index_bytes": index_bytes,
        "bytes_per_entry": round(index_bytes / max(entries_total, 1), 1),
        "queries": queries,
        "add": str(extra_paths[0]),
        "scored": bench is not None,
    }


def run_child(spec_path: Path) -> dict:
    """Run `measure` in a fresh interpreter; its last stdout line is the JSON."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
                          capture_output=True, text=True, env=env, cwd=str(REPO))
    if done.returncode != 0:
        raise RuntimeError(f"the measuring process failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(figures: dict) -> None:
    f = figures
    fmt = lambda v, unit="": "n/a" if v is None else f"{v}{unit}"  # noqa: E731
    rows = [
        ("entries", f"{f['entries']:,}", f"{f['distractors']:,} distractors + {f['catalog']} benchmark catalog photos"),
        ("backend", f["backend"], ""),
        ("pool", f"{f['pool']['views']} views", f"from {f['pool']['sources']} real sources, {f['pool_s']} s (not in build_s); "
         f"{f['pool']['keypoints_mean']} keypoints/view; pool cos p50 {f['pool']['embedding_cos_p50']}, p99 {f['pool']['embedding_cos_p99']}"),
        ("build", fmt(f["build_s"], " s"), f"generate {f['gen_s']} s + register {f['register_s']} s + index benchmark {f['index_bench_s']} s"),
        ("open (fresh process)", fmt(f["open_s"], " s"), "Engine.load + serving_snapshot"),
        ("RSS after open", fmt(f["rss_mb"], " MB"), f"VmRSS; peak of the measuring process {f['peak_rss_mb']} MB"),
        ("query p50 / p95", f"{fmt(f['query_p50_ms'])} / {fmt(f['query_p95_ms'])} ms", f"match_prepared (embeds), decode excluded; {f['queries']} queries"),
        ("query p50 / p95 incl. decode", f"{fmt(f['query_p50_decode_ms'])} / {fmt(f['query_p95_decode_ms'])} ms", f"prepare + match_prepared; 1-min load average {f['load_1m']}"),
        ("add one photo", fmt(f["add_one_ms"], " ms"), f"prepare + describe + register; register alone {fmt(f['add_one_register_ms'], ' ms')}"),
        ("next query", fmt(f["next_query_ms"], " ms"), f"first match_prepared after it (decode excluded); the same query before it "
         f"{fmt(f.get('next_query_before_add_ms'), ' ms')}"),
        ("disk", f"{f['bytes_per_entry']:,.0f} B/entry", f"index folder {f['index_bytes'] / 1e6:.1f} MB"),
        ("top1", fmt(f["top1"]), "registered queries among the distractors"),
        ("recall_at_far1", fmt(f["recall_at_far1"]), "swept on the result's confidence"),
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"\n== bench_scale: {f['entries']:,} entries, backend {f['backend']}, seed {f['seed']}")
    for name, value, note in rows:
        print(f"  {name:<{w0}}  {value:>{w1}}  {note}")
    if f.get("catalog_refused"):
        print(f"  benchmark catalog photos refused: {len(f['catalog_refused'])} (first: {f['catalog_refused'][0]})")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, help="synthetic distractors N (the benchmark's catalog comes on top)")
    parser.add_argument("--backend", choices=("embedded", "milvus"), default="embedded")
    parser.add_argument("--bench", type=Path, help="benchmark folder (BENCHMARK.md layout) whose catalog joins and whose queries are scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="build here (new or empty folder, kept) instead of a temp folder")
    parser.add_argument("--answers", type=Path, help="write every query's result as JSON lines here")
    parser.add_argument("--config", type=Path, help="teaprint config (default: the shipped settings and model)")
    parser.add_argument("--pool-per-photo", type=int, default=6, help="pool views cut from each real photo")
    parser.add_argument("--pool-per-texture", type=int, default=3, help="pool views cut from each procedural texture")
    parser.add_argument("--pool-textures", type=int, default=32, help="procedural textures in the pool")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(measure(json.loads(args.child.read_text(encoding="utf-8")))))
        return 0
    if args.entries is None or args.entries < 0:
        parser.error("--entries N (>= 0) is required")
    if args.bench is not None and not (args.bench / "truth.csv").is_file():
        parser.error(f"--bench {args.bench}: no truth.csv (layout: ../shared/BENCHMARK.md)")
    if args.work is not None and args.work.exists() and any(args.work.iterdir()):
        parser.error(f"--work {args.work}: not empty (give a new or empty folder)")
    if args.answers is not None:
        args.answers = args.answers.absolute()
    if args.bench is not None:
        args.bench = args.bench.absolute()

    work = args.work.absolute() if args.work else Path(tempfile.mkdtemp(prefix="teaprint-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.config is not None:
            config_path = args.config.absolute()
            model_desc = f"config {config_path}"
        else:
            from bench_engine import choose_model, write_config

            model, model_desc = choose_model(work)
            config_path = write_config(work / "bench.yaml", model)
        build_config = config_path  # the build never opens milvus-lite: it locks its file to one process
        if args.backend == "milvus":  # the same settings, searching a milvus-lite file in the work folder
            import yaml

            settings = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
            settings["search"] = {"backend": "milvus", "milvus": {"uri": str(work / "milvus.db")}}
            config_path = work / "bench-milvus.yaml"
            config_path.write_text(yaml.safe_dump(settings), encoding="utf-8")
        print(f"model: {model_desc}", flush=True)
        built = build(args, work, build_config)
        if args.backend == "milvus":
            # Fill the collection from the built catalog in its own process, as `teaprint reindex` does for a user.
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pipeline", "--config", str(config_path), "--root", str(work), "reindex",
                            "--backend", "milvus"], check=True, capture_output=True, cwd=str(REPO))
            milvus_s = round(time.perf_counter() - t0, 2)
            built.update(search_s=round(built["search_s"] + milvus_s, 2), build_s=round(built["build_s"] + milvus_s, 2))
        spec = {"config": str(config_path), "root": str(work), "queries": built["queries"], "add": built["add"],
                "answers": str(args.answers) if args.answers else None, "scored": built["scored"]}
        spec_path = work / "measure.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        measured = run_child(spec_path)
        if measured["opened_entries"] != built["entries"]:
            raise RuntimeError(f"the fresh process opened {measured['opened_entries']} entries, {built['entries']} were built")
        fig = measured.pop("figures") or {}
        figures = {
            "bench": "scale", "entries": built["entries"], "backend": args.backend, "seed": args.seed,
            "distractors": built["distractors"], "catalog": built["catalog"],
            "build_s": built["build_s"], "open_s": measured["open_s"], "rss_mb": measured["rss_mb"],
            "query_p50_ms": measured["query_p50_ms"], "query_p95_ms": measured["query_p95_ms"],
            "query_p50_decode_ms": measured["query_p50_decode_ms"], "query_p95_decode_ms": measured["query_p95_decode_ms"],
            "add_one_ms": measured["add_one_ms"], "next_query_ms": measured["next_query_ms"],
            "next_query_before_add_ms": measured.get("next_query_before_add_ms"),
            "bytes_per_entry": built["bytes_per_entry"], "top1": _round(fig.get("top1")),
            "recall_at_far1": _round(fig.get("recall_at_far1")),
            "add_one_register_ms": measured["add_one_register_ms"], "warm_ms": measured["warm_ms"],
            "prepare_p50_ms": measured["prepare_p50_ms"], "peak_rss_mb": measured["peak_rss_mb"],
            "load_1m": measured["load_1m"], "queries": measured["queries"], "registered_queries": fig.get("registered"),
            "unregistered_queries": fig.get("unregistered"), "false_accept_rate": _round(fig.get("false_accept_rate")),
            "gen_s": built["gen_s"], "search_s": built["search_s"], "register_s": built["register_s"], "index_bench_s": built["index_bench_s"],
            "pool_s": built["pool_s"], "pool": built["pool"], "index_bytes": built["index_bytes"],
            "catalog_refused": built["catalog_refused"], "model": model_desc,
        }
        print_table(figures)
        print(json.dumps(figures, separators=(",", ":")))
        return 0
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
