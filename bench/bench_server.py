#!/usr/bin/env python3
"""HTTP match throughput and latency of `teaprint serve` on a 1k-entry catalog.

    python bench/bench_server.py [--entries 1000] [--requests 64] [--concurrency 1 4 8] [--model PATH] [--keep DIR]

Builds a catalog of `--entries` distinct disc photos ("cakes", 256 px JPEGs,
cut from scikit-image's photos and procedural textures) in a temp root,
indexes it in-process, starts the real server as a subprocess on a loopback
port with a token, and sends `POST /match` requests (re-shot views of
registered cakes) at each `--concurrency` level (default 1, 4 and 8). Prints
requests/s, p50/p95 latency, the server's CPU use in cores (its CPU seconds /
wall: above 1 means requests ran in parallel), the 1-minute load average (on a
shared machine a ratio means little when the load is above the cores), and the
throughput ratio to concurrency 1 measured in the same run (the goal: >= 1.8 at 4 on a machine with the cores for it),
then one JSON line with every figure. The model is the shipped one when present, else the
tiny test encoder (say which in the output; the figures depend on it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TOKEN = "bench-token-0123456789abcdef"


def sources() -> list[np.ndarray]:
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    photos += [np.repeat(p[..., None], 3, axis=2) for p in (data.camera(), data.brick(), data.grass(), data.gravel())]
    rng = np.random.default_rng(123)
    for _ in range(8):  # procedural "leaf" textures: smoothed noise at several scales
        base = rng.random((512, 512, 3)).astype(np.float32)
        tex = sum(cv2.GaussianBlur(base, (0, 0), s) * w for s, w in ((1, 0.3), (4, 0.5), (12, 0.8)))
        tex = (tex - tex.min()) / (tex.max() - tex.min() + 1e-6)
        tint = np.array([0.55, 0.38, 0.22]) + rng.uniform(-0.1, 0.1, 3)
        photos.append(np.clip(tex * tint * 400, 0, 255).astype(np.uint8))
    return [np.ascontiguousarray(p) for p in photos]


def cake(src: np.ndarray, rng: np.random.Generator, side: int = 256, view: bool = False) -> np.ndarray:
    """A disc cut from `src` at a random place on a plain table; `view`: re-shot (rotation, light, scale)."""
    h, w = src.shape[:2]
    r = int(min(h, w) * rng.uniform(0.18, 0.3))
    cy, cx = int(rng.integers(r, h - r)), int(rng.integers(r, w - r))
    patch = cv2.resize(src[cy - r : cy + r, cx - r : cx + r], (side, side), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[:side, :side]
    mask = ((yy - side / 2) ** 2 + (xx - side / 2) ** 2) <= (side * 0.46) ** 2
    table = np.full_like(patch, 200)
    out = np.where(mask[..., None], patch, table)
    if view:
        m = cv2.getRotationMatrix2D((side / 2, side / 2), float(rng.uniform(0, 360)), float(rng.uniform(0.95, 1.05)))
        out = cv2.warpAffine(out, m, (side, side), borderValue=(200, 200, 200))
        out = np.clip(out.astype(np.float32) * rng.uniform(0.9, 1.1), 0, 255).astype(np.uint8)
    return out


def jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def tiny_model(folder: Path) -> Path:
    from pipeline.training.model import build_encoder, save_encoder

    path = folder / "tiny.keras"
    save_encoder(build_encoder(input_size=32, channels=3, embedding_dim=16, width=4, seed=1), path, {"threshold": 0.5, "rotation_pool": 1})
    return path


def _prepare_one(job: tuple) -> object:
    from pipeline.daemon.budget import prepare_within

    path, config, shape, root = job
    return prepare_within(path, config, shape, root)


def build_catalog(root: Path, config_path: Path, entries: int, seed: int = 0, workers: int = 2) -> list[tuple[bytes, str]]:
    """Write and index `entries` cakes (decode and features in `workers` processes); return query photos (bytes, true label).

    The photos are `inbox/catalog/cake<i>-1.jpg` under `root` (label `cake<i>`), so a daemon on `root` keeps them.
    """
    import multiprocessing

    from pipeline.config import load_config
    from pipeline.daemon.budget import Failure
    from pipeline.engine import Engine

    rng = np.random.default_rng(seed)
    srcs = sources()
    folder = root / "inbox" / "catalog"
    folder.mkdir(parents=True, exist_ok=True)
    queries = []
    width = max(4, len(str(entries - 1)))
    paths = []
    for i in range(entries):
        src = srcs[i % len(srcs)]
        state = rng.bit_generator.state
        img = cake(src, rng)
        path = folder / f"cake{i:0{width}d}-1.jpg"
        if not path.exists():
            path.write_bytes(jpeg(img, 92))
        paths.append(path)
        if i % max(1, entries // 64) == 0:
            replay = np.random.default_rng()
            replay.bit_generator.state = state
            queries.append((jpeg(cake(src, replay, view=True), 85), path.stem.rsplit("-", 1)[0]))
    config = load_config(config_path)
    engine = Engine.load(config, root)
    if len(engine.snapshot()) >= entries:  # a kept root: already indexed
        print(f"catalog already holds {len(engine.snapshot())} entries", flush=True)
        _bring_up_votes(engine, config)
        return queries
    indexed = {entry.path for entry in engine.snapshot().entries}
    if indexed:  # a kept root whose build was interrupted: index the rest
        print(f"catalog holds {len(indexed)} entries; indexing the other {entries - len(indexed)}", flush=True)
        paths = [p for p in paths if str(p) not in indexed]
    t0 = time.perf_counter()
    added = refused = 0
    chunk = 256
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for start in range(0, len(paths), chunk):
            jobs = [(p, config, engine.encoder_input, folder) for p in paths[start : start + chunk]]
            prepared = [p for p in pool.map(_prepare_one, jobs, chunksize=8) if not isinstance(p, Failure)]
            refused += len(jobs) - len(prepared)
            added += len(engine.register(engine.describe(prepared, catalog_root=folder)).added)
            print(f"  indexed {start + len(jobs)}/{len(paths)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"indexed {added} entries in {time.perf_counter() - t0:.1f} s ({refused} refused)", flush=True)
    _bring_up_votes(engine, config)
    return queries


def _bring_up_votes(engine, config) -> None:  # noqa: ANN001 - pipeline.engine.Engine and Config, imported late
    """Save the catalog's keypoint vote store (`index/votes.bin`) when it is missing, as a daemon or server that served
    the catalog once leaves it: the figures are then those of a restart, not of a first start that rebuilds the store
    from every entry's keypoints (seconds per 1k entries and, at 10k, over 1 GB of peak memory; bench/README.md)."""
    from pipeline.search.votes import FILE

    if config.matcher.shortlist.vote_top_k > 0 and not (engine.index_dir / FILE).is_file():
        t0 = time.perf_counter()
        engine.reindex()
        print(f"vote store built and saved in {time.perf_counter() - t0:.1f} s", flush=True)


def start_server(root: Path, config_path: Path) -> tuple[subprocess.Popen, int, Path]:
    log = root / "server.log"
    env = {**os.environ, "TEAPRINT_TOKEN": TOKEN, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(config_path), "--root", str(root), "serve", "--port", "0"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited {proc.returncode}:\n{log.read_text()[-2000:]}")
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"serving"' in line:
                return proc, int(json.loads(line)["port"]), log
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    raise SystemExit(f"server did not start in 180 s:\n{log.read_text()[-2000:]}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(url: str, queries: list[tuple[bytes, str]], concurrency: int, total: int, pid: int) -> dict[str, float]:
    import requests

    local = threading.local()
    lock = threading.Lock()
    latencies: list[float] = []
    correct = 0

    def one(k: int, timeout: float = 120) -> None:
        nonlocal correct
        if not hasattr(local, "s"):
            local.s = requests.Session()
            local.s.headers["Authorization"] = f"Bearer {TOKEN}"
        data, label = queries[k % len(queries)]
        t0 = time.perf_counter()
        r = local.s.post(url + "/match", files={"file": (f"q{k}.jpg", data, "image/jpeg")}, timeout=timeout)
        dt = time.perf_counter() - t0
        r.raise_for_status()
        with lock:
            latencies.append(dt)
            correct += r.json().get("label") == label

    with ThreadPoolExecutor(concurrency) as pool:  # warm-up: one request per connection (the first builds the vote index)
        list(pool.map(lambda k: one(k, timeout=3600), range(concurrency)))
    latencies.clear()
    correct = 0
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(total)))
    wall = time.perf_counter() - t0
    cores = (cpu_seconds(pid) - cpu0) / wall
    q = statistics.quantiles(latencies, n=20)
    return {"rps": total / wall, "p50": statistics.median(latencies) * 1e3, "p95": q[18] * 1e3, "n": total, "correct": correct,
            "server_cores": cores, "load_avg": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=64, help="timed requests per concurrency level")
    parser.add_argument("--model", type=Path, default=None, help="encoder (.keras); default: shipped model, else the tiny test encoder")
    parser.add_argument("--keep", type=Path, default=None, help="use (and keep) this root instead of a temp one")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8], help="levels; the first is the ratios' baseline")
    args = parser.parse_args(argv)

    root = args.keep or Path(tempfile.mkdtemp(prefix="teaprint-bench-server-"))
    root.mkdir(parents=True, exist_ok=True)
    model = args.model or REPO / "pipeline" / "data" / "models" / "teaprint-encoder.keras"
    if not model.is_file():
        model = root / "tiny.keras" if (root / "tiny.keras").is_file() else tiny_model(root)
        which = "tiny test encoder (no shipped model found)"
    else:
        which = str(model)
    config_path = root / "bench.yaml"
    config_path.write_text(f"model:\n  path: {model}\n")
    proc = None
    try:
        queries = build_catalog(root, config_path, args.entries)
        proc, port, _ = start_server(root, config_path)
        url = f"http://127.0.0.1:{port}"
        print(f"server {url}  model {which}  catalog {args.entries} entries  cpus {os.cpu_count()}", flush=True)
        print(f"{'concurrency':>11} {'requests':>8} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'right label':>11} {'cores':>5} {'load':>5} "
              f"{'x c' + str(args.concurrency[0]):>6}")
        figures = {}
        for c in args.concurrency:
            r = figures[c] = run(url, queries, c, args.requests, proc.pid)
            r["ratio"] = r["rps"] / figures[args.concurrency[0]]["rps"]
            print(f"{c:>11} {r['n']:>8} {r['rps']:>7.2f} {r['p50']:>8.1f} {r['p95']:>8.1f} {r['correct']:>7}/{r['n']} "
                  f"{r['server_cores']:>5.2f} {r['load_avg']:>5.1f} {r['ratio']:>6.2f}", flush=True)
        print(json.dumps({"entries": args.entries, "cpus": os.cpu_count(), "model": which, "levels": figures}))
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
