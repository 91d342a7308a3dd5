"""`teaprint eval BENCH_DIR`: figures of BENCHMARK.md for each stage variant.

Wired into `pipeline.cli`::

    teaprint [--config FILE] [--root DIR] eval BENCH_DIR
        [--stages embedding,embedding+lbp,embedding+lbp+verify] [--top-k K] [--workers N]
        [--json OUT.jsonl] [--report DIR]

The catalog is indexed into a temporary index (the user's index is never
read or written); `--root` only matters for finding a relative `model.path`.
Prints a table, one row per variant; exits 0 when the evaluation ran,
2 on a malformed benchmark folder or an unknown variant, 1 on other failures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import Config
from pipeline.exits import EXIT_OK, UsageError


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `eval`'s arguments to its sub-parser."""
    from pipeline.evaluation.variants import VARIANTS

    parser.add_argument("bench", type=Path, metavar="BENCH_DIR", help="benchmark folder: catalog/, query/, truth.csv")
    parser.add_argument(
        "--stages",
        default=None,
        help=f"comma-separated stage variants to run (default: all of {', '.join(VARIANTS)})",
    )
    parser.add_argument("--top-k", type=int, default=None, metavar="K", help="K of recall@K (default: 5, at most matcher.shortlist.top_k)")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="OUT",
        help="write per-query results (JSON lines) to OUT and the figures to OUT with suffix .summary.json",
    )
    parser.add_argument("--report", type=Path, default=None, metavar="DIR", help="write a self-contained HTML report to DIR/index.html")
    parser.add_argument(
        "--workers", type=int, default=None, metavar="N", help="processes preparing queries (default daemon.workers)"
    )
    parser.add_argument("--failures", type=int, default=8, metavar="N", help="worst failures shown per variant in the report (default 8)")


def run_eval(args: argparse.Namespace, config: Config) -> int:
    """Run the evaluation `args` describe; returns the exit code."""
    from pipeline.evaluation import report
    from pipeline.evaluation.bench import BenchmarkError, load_benchmark, run_benchmark
    from pipeline.evaluation.variants import parse_stages

    try:
        variants = parse_stages(args.stages)
        k = _top_k(args.top_k, config)
        bench = load_benchmark(args.bench, config)
    except ValueError as err:  # BenchmarkError included
        raise UsageError(str(err)) from None
    try:
        workers = args.workers if args.workers is not None else config.daemon.workers
        run = run_benchmark(bench, config, args.root, variants, k=k, workers=workers)
    except BenchmarkError as err:
        raise UsageError(str(err)) from None
    print(report.format_table(run), flush=True)
    if args.json is not None:
        report.write_jsonl(run, args.json)
        report.write_summary(run, report.summary_path(args.json))
        print(f"results    {args.json}\nsummary    {report.summary_path(args.json)}")
    if args.report is not None:
        print(f"report     {report.write_html(run, args.report, config.intake, args.failures)}")
    return EXIT_OK


def _top_k(requested: int | None, config: Config) -> int:
    """K of recall@K: `requested`, or 5 capped by the shortlist's top_k."""
    if requested is None:
        return max(1, min(5, config.matcher.shortlist.top_k))
    if requested < 1:
        raise ValueError(f"--top-k must be >= 1, got {requested}")
    return requested
