"""Benchmark evaluation: `teaprint eval BENCH_DIR` (layout and figures: BENCHMARK.md).

Modules
-------
metrics
    Pure functions from per-query outcomes to the benchmark figures.
variants
    The registry of named stage variants (name -> function deriving a Config).
bench
    Loads a benchmark folder, indexes its catalog into a temporary index,
    prepares each query once and runs every variant on the same prepared data.
report
    The plain-text table and the self-contained HTML report.
cli
    `add_eval_arguments` / `run_eval`, wired into `teaprint eval` by `pipeline.cli`.
"""
