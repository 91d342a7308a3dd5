#!/usr/bin/env python3
"""The server's first /match after start, with and without the matcher's warm-up.

    .venv/bin/python bench/bench_first_request.py ROOT PHOTO [--rounds 2] [--pause 4]

Loads `TeaprintService` on ROOT (an indexed teaprint root, shipped settings and
model), warms it up either as `serve` does (`warm_up`: the model now, the
matcher's classifier library on a thread) or the model alone (as before
2026-12-06), waits `--pause` s (a phone's first photo arrives a few seconds
after start), then times two matches of PHOTO through the service. Each
round runs both modes in fresh processes; prints one JSON line per run, with
the first request's time as a ratio to the second's (same process).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def child(root: Path, photo: Path, mode: str, pause: float) -> dict:
    sys.path.insert(0, str(REPO))
    from pipeline.config import load_config
    from pipeline.server.service import TeaprintService, Upload

    service = TeaprintService.load(load_config(None), root)
    service.warm_up() if mode == "warm_up" else service.engine.warm_up()
    time.sleep(pause)
    data = photo.read_bytes()
    ms = []
    for _ in range(2):
        t0 = time.perf_counter()
        service.match(Upload(io.BytesIO(data), photo.name))
        ms.append((time.perf_counter() - t0) * 1e3)
    return {"mode": mode, "first_ms": round(ms[0], 1), "second_ms": round(ms[1], 1), "first_to_second": round(ms[0] / ms[1], 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("photo", type=Path)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--pause", type=float, default=4.0)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.root, args.photo, args.child, args.pause)))
        return 0
    for _ in range(args.rounds):
        for mode in ("model_only", "warm_up"):
            out = subprocess.run([sys.executable, __file__, str(args.root), str(args.photo), "--pause", str(args.pause),
                                  "--child", mode], capture_output=True, text=True, check=True)
            print(out.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
