#!/usr/bin/env python3
"""Where a served catalog's memory lies: private (RssAnon) and file-backed (RssFile), after open and after queries.

    .venv/bin/python bench/bench_rss.py WORK/measure.json

Reads the spec `bench_scale.py` writes beside a built catalog (its config,
root and labelled queries), opens the catalog as the daemon does
(`Engine.load` and a first snapshot), then prepares and answers every query
once (`Engine.prepare`, `Engine.match_prepared`), and prints VmRSS, RssAnon,
RssFile and VmHWM (MB, from /proc/self/status) after the open and after the
queries, the answers that were right and the match time p50 / p95. File
pages (memory-mapped vote store and ANN indexes) are page cache shared by
every process on the same catalog and given back under pressure; private
memory is what each process adds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def status_mb() -> dict[str, int]:
    fields = ("VmRSS", "RssAnon", "RssFile", "VmHWM")
    lines = [line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(fields)]
    return {key: int(value.split()[0]) // 1024 for key, value in lines}


def main(argv: list[str]) -> int:
    from pipeline.config import load_config
    from pipeline.engine import Engine

    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    start = time.perf_counter()
    engine = Engine.load(load_config(Path(spec["config"])), Path(spec["root"]))
    snap = engine.serving_snapshot()
    print(f"open {time.perf_counter() - start:.2f} s, {len(snap):,} entries; after open MB: {status_mb()}")
    engine.warm_up()
    engine.warm_up_matcher()
    right, ms = 0, []
    for query, truth in spec["queries"]:
        prepared = engine.prepare(Path(query))
        start = time.perf_counter()
        result = engine.match_prepared(prepared, Path(query).name)
        ms.append((time.perf_counter() - start) * 1e3)
        right += (result.status == "matched" and result.label == truth) or (result.status != "matched" and not truth)
    ms.sort()
    print(f"answers right {right} / {len(ms)}; match p50 {ms[len(ms) // 2]:.0f} ms, p95 {ms[int(len(ms) * 0.95)]:.0f} ms; "
          f"after queries MB: {status_mb()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
