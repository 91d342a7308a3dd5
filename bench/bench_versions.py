#!/usr/bin/env python3
"""One query's wall and CPU time at two versions of the code, alternated in fresh processes.

    .venv/bin/python bench/bench_versions.py BENCH --old DIR [--new DIR] [--root ROOT] [--queries 80] [--rounds 2]

DIR is a checkout of teaprint (for the old one, e.g. `git worktree add
/tmp/old HEAD~1`); --new defaults to this checkout. BENCH is a folder in the
layout of ../shared/BENCHMARK.md: its queries are matched. The catalog is
ROOT (a teaprint root with its own `bench.yaml`, e.g. bench_daemon.py's
`--keep-base` folder, whose queries then mostly meet distractors) or, without
--root, BENCH's catalog indexed once into a temp root by the new code. Each
round runs the old version, then the new one, each in a fresh process that
prepares and matches the first `--queries` queries one at a time
(`Engine.prepare` + `Engine.match_prepared`, five untimed first). Prints one
line per run, then a JSON line with each version's medians (wall p50, mean,
CPU p50, per-stage p50 from the results' `timings_ms`), the new/old ratios,
and how many queries got another status or label (and another confidence, to
3 places) at the new version.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent


def time_queries(engine, paths: list[Path], untimed: int = 5) -> dict:
    """Prepare and match `paths` one at a time (`Engine.prepare` + `Engine.match_prepared`), the first `untimed` untimed.

    Returns wall and CPU ms per query (p50, mean), each query's [status,
    label, confidence to 6 places] and the p50 of each stage of the
    results' `timings_ms`.
    """
    walls, cpus, answers, stages = [], [], [], []
    for i, path in enumerate(paths):
        t, c = time.perf_counter(), time.process_time()
        result = engine.match_prepared(engine.prepare(path), path.name)
        if i >= untimed:
            walls.append((time.perf_counter() - t) * 1e3)
            cpus.append((time.process_time() - c) * 1e3)
            answers.append([result.status, result.label, round(result.confidence, 6)])
            stages.append(dict(result.timings_ms))
    names = sorted({k for s in stages for k in s} - {"total", "wall"})
    return {"wall_p50_ms": statistics.median(walls), "wall_mean_ms": statistics.fmean(walls), "cpu_p50_ms": statistics.median(cpus),
            "stages_p50_ms": {k: round(statistics.median(s.get(k, 0.0) for s in stages), 1) for k in names}, "answers": answers}


def alternate(commands: dict[str, tuple[list[str], dict[str, str] | None]], rounds: int,
              describe: Callable[[str, dict], str]) -> dict[str, list[dict]]:
    """Run each variant's command (argv, env) in a fresh process, in turn, `rounds` times, so the machine's drift
    weighs alike on all; each run's result is the JSON on its last stdout line. `describe` prints one line per run."""
    runs: dict[str, list[dict]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, (argv, env) in commands.items():
            out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
            run = json.loads(out.stdout.strip().splitlines()[-1])
            runs[name].append(run)
            print(describe(name, run), flush=True)
    return runs


def medians(runs: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Each variant's median over its runs of wall p50, wall mean and CPU p50 (ms)."""
    return {name: {k: round(statistics.median(r[k] for r in rs), 1) for k in ("wall_p50_ms", "wall_mean_ms", "cpu_p50_ms")}
            for name, rs in runs.items()}


def child(code: Path, root: Path, bench: Path, queries: int) -> dict:
    sys.path.insert(0, str(code))
    from pipeline.config import load_config
    from pipeline.engine import Engine

    config = root / "bench.yaml"
    engine = Engine.load(load_config(config if config.is_file() else None), root)
    engine.warm_up()
    engine.warm_up_matcher()
    engine.serving_snapshot()
    return time_queries(engine, sorted((bench / "query").iterdir())[: queries + 5])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", type=Path)
    ap.add_argument("--old", type=Path, required=True)
    ap.add_argument("--new", type=Path, default=REPO)
    ap.add_argument("--root", type=Path, default=None)
    ap.add_argument("--queries", type=int, default=80)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--code", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.code, args.child, args.bench, args.queries)))
        return 0
    with tempfile.TemporaryDirectory(prefix="teaprint-bench-versions-") as tmp:
        root = args.root
        if root is None:
            sys.path.insert(0, str(args.new))
            from pipeline.config import load_config
            from pipeline.engine import Engine

            root = Path(tmp)
            Engine.load(load_config(None), root).index_files(sorted((args.bench / "catalog").iterdir()))
        versions = {"old": args.old.resolve(), "new": args.new.resolve()}
        commands = {name: ([sys.executable, __file__, str(args.bench), "--old", str(args.old), "--queries", str(args.queries),
                            "--child", str(root), "--code", str(code)], None) for name, code in versions.items()}
        runs = alternate(commands, args.rounds, lambda name, run: (
            f"{name:>4} ({versions[name]}): wall p50 {run['wall_p50_ms']:.1f} ms, mean {run['wall_mean_ms']:.1f} ms, "
            f"CPU p50 {run['cpu_p50_ms']:.1f} ms; stages {run['stages_p50_ms']}"))
    summary: dict[str, dict] = medians(runs)
    for name, rs in runs.items():
        summary[name]["stages_p50_ms"] = {k: round(statistics.median(r["stages_p50_ms"].get(k, 0.0) for r in rs), 1)
                                          for k in rs[0]["stages_p50_ms"]}
    # confidences compared to 3 places: another estimator or weight moves them in the last digits
    old, new = ([[*a[:2], round(a[2], 3)] for a in runs[v][0]["answers"]] for v in ("old", "new"))
    print(json.dumps({"bench": str(args.bench), "root": str(args.root) if args.root else None, "queries": len(old),
                      "rounds": args.rounds, "load_avg": round(os.getloadavg()[0], 2), "versions": summary,
                      "wall_p50_ratio": round(summary["new"]["wall_p50_ms"] / summary["old"]["wall_p50_ms"], 3),
                      "wall_mean_ratio": round(summary["new"]["wall_mean_ms"] / summary["old"]["wall_mean_ms"], 3),
                      "cpu_p50_ratio": round(summary["new"]["cpu_p50_ms"] / summary["old"]["cpu_p50_ms"], 3),
                      "other_status_or_label": sum(a[:2] != b[:2] for a, b in zip(old, new)),
                      "other_confidence": sum(a != b for a, b in zip(old, new)),
                      "runs_repeat_their_answers": all(r["answers"] == rs[0]["answers"] for rs in runs.values() for r in rs)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
