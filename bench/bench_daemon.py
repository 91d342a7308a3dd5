#!/usr/bin/env python3
"""Daemon benchmark: query latency (idle and under catalog ingest), ingest rate, RSS, clean stop.

    .venv/bin/python bench/bench_daemon.py [--quick] [--base N --keep-base DIR] [--catalog N] [--size WxH]

Starts the real daemon (`python -m pipeline --config CFG --root TMP run`,
TF_CPP_MIN_LOG_LEVEL=3) on a temp root with the default settings (only
`model.path` and `logging.format: json` are set) and measures, from outside:

(b) ingest: 1,000 (`--catalog`) distinct 1-3 MP JPEGs (`--size WxH`: all of
    one size, e.g. 4000x3000 for 12 MP phone photos) are moved into
    inbox/catalog at once (renames from a staging folder on the same
    filesystem); meanwhile a query photo is written+closed into inbox/query
    every 0.3 s, for at most 60 s (10 s with --quick) or until the ingest
    ends. Queries are answered in their own lane; `blocked` is the part of a
    query's wait that is neither file-event detection nor queueing behind
    the previous query (answer start - max(close, previous answer's end)),
    so a query that waited for catalog work shows there. The ingest rate is
    given overall, inside the query window and after it. Ingest rate =
    photos / (last "catalog" log event's timestamp - time of the first
    rename); it is compared with plain single-process `cv2.imread` of the same
    files, measured in this run (before the daemon starts and after it stops;
    the mean is used).
(a) idle: then, with the catalog holding those photos, queries are dropped one
    at a time (written+closed directly under their final name).
For every query: latency = time its JSON appears in outbox/ - time the writer
closed the photo. The outbox is polled every 5 ms (a thread doing
os.scandir), so latencies carry up to ~5 ms of polling granularity.
With `--base N` the daemon starts on a catalog that already holds N disc
photos (bench_server's cakes, 256 px, indexed in-process with 2 worker
processes; built once in `--keep-base DIR` and hard-linked into the run's
root), so every figure is measured against a catalog of N + the ingest.
Also: the per-stage times of the queries (p50 of the daemon's `timings_ms`),
the daemon's startup time, its peak RSS (VmHWM of the daemon process
and of its worker processes, read from /proc just before SIGTERM), CPU time
of the daemon process and its workers during the ingest, and that SIGTERM
exits 0. `--quick`: 100 catalog photos and 10 idle queries. `--keep-log FILE`
keeps the daemon's JSON log (every `catalog`, `published` and `query` event
with its timings) for a closer look.

Prints a table and, last, one JSON line with every figure.
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
from datetime import datetime
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import REPO, SOURCE_NAMES, choose_model, decode_only_rate, pct, print_table, write_jpegs  # noqa: E402
from bench_server import build_catalog  # noqa: E402

QUERY_EVERY_S = 0.3
POLL_S = 0.005
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------- observing the daemon


class OutboxPoller(threading.Thread):
    """Records when each `<stem>.json` first appears in the outbox (perf_counter)."""

    def __init__(self, outbox: Path) -> None:
        super().__init__(daemon=True)
        self.outbox = outbox
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.perf_counter()
            try:
                with os.scandir(self.outbox) as it:
                    for entry in it:
                        name = entry.name
                        if name.endswith(".json") and not name.startswith(".") and name not in self.seen:
                            self.seen[name] = now
            except FileNotFoundError:
                pass
            time.sleep(POLL_S)


class LogTail:
    """The daemon's JSON log lines, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = ""
        self.events: list[dict] = []

    def poll(self) -> list[dict]:
        try:
            with open(self.path, "r", encoding="utf-8", errors="replace") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
                self.offset = fh.tell()
        except FileNotFoundError:
            return []
        lines = (self.partial + chunk).split("\n")
        self.partial = lines.pop()
        new = []
        for line in lines:
            if line.startswith("{"):
                try:
                    new.append(json.loads(line))
                except ValueError:
                    pass
        self.events += new
        return new

    def count(self, event: str) -> int:
        return sum(1 for e in self.events if e.get("event") == event)


def proc_status(pid: int, key: str) -> float | None:
    """A `kB` field of /proc/PID/status, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def keep_base_state(base: Path) -> Callable[[], None]:
    """Let a daemon run on the base catalog `base`; returns the function that puts the base back as it was.

    The index is immutable segments under an atomically replaced manifest, so
    a hard-linked copy of the index folder keeps it whole; photos and folders
    the run adds are removed afterwards. The base's own state (history,
    journal, status) is left out of the run.
    """
    runtime = (".teaprint", "outbox", "inbox/query", "inbox/failed")
    for name in runtime:
        shutil.rmtree(base / name, ignore_errors=True)
    kept = base / "index.bench-kept"
    shutil.rmtree(kept, ignore_errors=True)
    subprocess.run(["cp", "-al", str(base / "index"), str(kept)], check=True)
    photos = {p.name for p in (base / "inbox" / "catalog").iterdir()}

    def restore() -> None:
        for name in runtime:
            shutil.rmtree(base / name, ignore_errors=True)
        for p in (base / "inbox" / "catalog").iterdir():
            if p.name not in photos:
                p.unlink()
        shutil.rmtree(base / "index")
        kept.rename(base / "index")

    return restore


def log_time(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


CLOSE_WALL: dict[str, float] = {}  # result json name -> close time (time.time, to compare with log timestamps)


def drop_query(folder: Path, name: str, data: bytes) -> float:
    """Write and close a query photo under its final name; the close time (perf_counter)."""
    with open(folder / name, "wb") as fh:
        fh.write(data)
    t = time.perf_counter()
    CLOSE_WALL[Path(name).stem + ".json"] = time.time()
    return t


def wait_for(predicate, timeout: float, what: str, tail: LogTail | None = None, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tail is not None:
            tail.poll()
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode} while waiting for {what}")
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


# ----------------------------------------------------------------- the benchmark


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 catalog photos, 10 idle queries")
    parser.add_argument("--base", type=int, default=0, help="entries already in the catalog when the daemon starts")
    parser.add_argument("--keep-base", type=Path, default=None, help="build (once) and reuse the base catalog in this folder")
    parser.add_argument("--catalog", type=int, default=None, help="photos dropped at once (default 1000, --quick 100)")
    parser.add_argument("--size", default=None, help="WxH of every dropped photo (default: 1.2-3.1 MP mixed)")
    parser.add_argument("--keep-log", type=Path, default=None, help="copy the daemon's JSON log here (per-event timings)")
    args = parser.parse_args()
    n_catalog = args.catalog or (100 if args.quick else 1000)
    n_idle = 10 if args.quick else 30
    n_query_sources = 10 if args.quick else 24
    window_s = 10.0 if args.quick else 60.0  # at most this long of queries during the ingest
    sizes = [(1280, 960), (1600, 1200), (2048, 1536), (960, 1280), (1200, 1600), (1536, 2048)]  # 1.2-3.1 MP
    if args.size:
        w, h = (int(v) for v in args.size.lower().split("x"))
        sizes = [(w, h)]

    figures: dict = {"bench": "daemon", "quick": args.quick, "latency_probe": f"outbox polled every {POLL_S * 1e3:.0f} ms",
                     "base_entries": args.base, "cpus": os.cpu_count(), "load_avg_start": round(os.getloadavg()[0], 1)}
    tmp = Path(tempfile.mkdtemp(prefix="teaprint-bench-daemon-"))
    proc: subprocess.Popen | None = None
    poller: OutboxPoller | None = None
    log_file = None
    restore_base: Callable[[], None] | None = None
    try:
        t_start = time.perf_counter()
        model_path, model_desc = choose_model(tmp)
        print(f"model: {model_desc}")
        figures["model"] = model_desc

        # ---------------------------------------------------------- photos
        staging, qsrc = tmp / "staging", tmp / "query-sources"
        specs, staged = [], []
        for i in range(n_catalog):
            w, h = sizes[i % len(sizes)]
            p = staging / f"{SOURCE_NAMES[i % 8]}-{i:04d}.jpg"  # label = source name (8 labels)
            specs.append((p, w, h, 3, i, 90, i % 8))
            staged.append(p)
        qfiles = [qsrc / f"q{i:03d}.jpg" for i in range(n_query_sources)]
        specs += [(p, 1600, 1200, 4, i, 90, None) for i, p in enumerate(qfiles)]
        t0 = time.perf_counter()
        write_jpegs(specs)
        mean_mb = statistics.mean(p.stat().st_size for p in staged) / 1e6
        mean_mp = statistics.mean(w * h for _, w, h, *_ in specs[:n_catalog]) / 1e6
        print(f"made {n_catalog} catalog JPEGs (mean {mean_mp:.1f} MP, {mean_mb:.2f} MB) and "
              f"{n_query_sources} 1600x1200 query JPEGs in {time.perf_counter() - t0:.0f}s")
        query_bytes = [p.read_bytes() for p in qfiles]

        decode_before = decode_only_rate(staged)
        print(f"decode-only (cv2.imread, 1 process) before the daemon: {decode_before:.1f} img/s")
        # Baselines for the latency and start-up figures, same run: decoding one query photo, and a bare
        # Python that imports OpenCV and NumPy (the floor of any image service's start).
        query_decode_ms = 1e3 / decode_only_rate(qfiles * 3)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import numpy, cv2"], check=True)
        import_floor_s = time.perf_counter() - t0
        print(f"baselines: decode one query photo {query_decode_ms:.1f} ms; python + import numpy, cv2 {import_floor_s:.2f} s")

        # ---------------------------------------------------------- start
        root = tmp / "root"
        if args.base:
            base = args.keep_base or tmp / "base"
            base.mkdir(parents=True, exist_ok=True)
            (base / "bench.yaml").write_text(f"model:\n  path: {model_path}\n", encoding="utf-8")
            t0 = time.perf_counter()
            build_catalog(base, base / "bench.yaml", args.base)
            print(f"base catalog of {args.base} entries ready in {time.perf_counter() - t0:.0f} s")
            # The index stores absolute paths, so the daemon runs on the base itself (on a copy elsewhere it
            # would take every base photo for a new one); the base is put back as it was afterwards.
            root = base
            restore_base = keep_base_state(base)
        else:
            root.mkdir()
        cfg = tmp / "bench.yaml"
        cfg.write_text(f"model:\n  path: {model_path}\nlogging:\n  format: json\n", encoding="utf-8")
        log_path = tmp / "daemon.log"
        log_file = open(log_path, "w")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(cfg), "--root", str(root), "run"],
                                stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=str(root))
        tail = LogTail(log_path)
        wait_for(lambda: tail.count("ready") > 0, 180, "the 'ready' event", tail, proc)
        startup_s = time.perf_counter() - t0
        # Queries that arrive before the loaded catalog's first publication wait for its vote index: let it finish,
        # so that the phases below measure what they say.
        wait_for(lambda: tail.count("published") > 0, 900, "the first 'published' event", tail, proc)
        first_publication_s = time.perf_counter() - t0
        print(f"daemon pid {proc.pid} ready after {startup_s:.1f}s, loaded catalog published after {first_publication_s:.1f}s")
        inbox_catalog, inbox_query, outbox = root / "inbox" / "catalog", root / "inbox" / "query", root / "outbox"
        poller = OutboxPoller(outbox)
        poller.start()
        closes: dict[str, float] = {}  # result json name -> close time
        phase_of: dict[str, str] = {}

        # ---------------------------------------------------------- (b) ingest with queries
        workers = children_of(proc.pid)
        cpu0 = {pid: cpu_s(pid) for pid in [proc.pid, *workers]}
        wall_drop = time.time()
        t_drop = time.perf_counter()
        for p in staged:
            os.rename(p, inbox_catalog / p.name)
        drop_s = time.perf_counter() - t_drop
        # Queries every 0.3 s while the ingest runs, for at most `window_s` (the
        # daemon answers queries before any catalog work, so a query stream it
        # cannot keep up with stalls the ingest; the cap keeps the run bounded
        # and the rest of the ingest shows the rate without queries).
        k = 0
        next_query = time.perf_counter()
        window_end = t_drop + window_s
        catalog_done = lambda: tail.count("catalog") >= n_catalog  # noqa: E731
        while not catalog_done() and time.perf_counter() < window_end:
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {proc.returncode} during the ingest")
            now = time.perf_counter()
            if now >= next_query:
                name = f"ingest-{k:04d}"
                closes[name + ".json"] = drop_query(inbox_query, name + ".jpg", query_bytes[k % len(query_bytes)])
                phase_of[name + ".json"] = "ingest"
                k += 1
                next_query = now + QUERY_EVERY_S
            time.sleep(0.01)
            tail.poll()
        query_window_s = time.perf_counter() - t_drop
        wall_window_end = wall_drop + query_window_s
        ingest_names = [n for n, ph in phase_of.items() if ph == "ingest"]
        wait_for(lambda: all(n in poller.seen for n in ingest_names), 600, "the ingest-phase query results", tail, proc)
        t_queries_done = time.perf_counter()
        wait_for(catalog_done, 900, f"{n_catalog} 'catalog' events", tail, proc)
        t_ingest_seen = time.perf_counter()
        workers = sorted(set(workers) | set(children_of(proc.pid)))  # the catalog lane starts its workers after 'ready'
        cpu0.update({pid: 0.0 for pid in workers if pid not in cpu0})
        cpu1 = {pid: cpu_s(pid) for pid in cpu0}

        cat_events = [e for e in tail.events if e.get("event") == "catalog"]
        outcomes = {o: sum(1 for e in cat_events if e.get("outcome") == o) for o in ("indexed", "duplicate", "failed")}
        times = sorted(log_time(e) for e in cat_events)
        t_first, t_last = times[0], times[-1]
        ingest_s = t_last - wall_drop
        ingest_rate = n_catalog / ingest_s
        in_window = sum(1 for t in times if t <= wall_window_end)
        rate_with_queries = in_window / query_window_s
        wall_q_done = wall_drop + (t_queries_done - t_drop)
        after = [t for t in times if t > wall_q_done]
        rate_after_queries = (len(after) - 1) / (after[-1] - after[0]) if len(after) >= 10 else None
        batches = [e.get("batch") for e in cat_events]
        daemon_cpu = cpu1[proc.pid] - cpu0[proc.pid]
        worker_cpu = sum(cpu1[p] - cpu0[p] for p in workers)
        ingest_wall = t_ingest_seen - t_drop

        # ---------------------------------------------------------- (a) idle queries
        # Idle means idle: the catalog lane has published the last commit (its vote index built).
        last_generation = max(e.get("generation", 0) for e in tail.events if e.get("event") == "catalog")
        t0 = time.perf_counter()
        wait_for(lambda: any(e.get("generation", -1) >= last_generation for e in tail.events if e.get("event") == "published"),
                 3600, f"generation {last_generation} published", tail, proc)
        figures["last_publication_wait_s"] = round(time.perf_counter() - t0, 1)
        time.sleep(1.0)
        for i in range(n_idle):
            name = f"idle-{i:03d}"
            closes[name + ".json"] = drop_query(inbox_query, name + ".jpg", query_bytes[i % len(query_bytes)])
            phase_of[name + ".json"] = "idle"
            wait_for(lambda: name + ".json" in poller.seen, 60, f"result of {name}", None, proc)
            time.sleep(0.1)
        tail.poll()

        # ---------------------------------------------------------- memory, stop
        rss = {"daemon_vmhwm_mb": proc_status(proc.pid, "VmHWM"), "daemon_vmrss_mb": proc_status(proc.pid, "VmRSS")}
        worker_hwm = [proc_status(p, "VmHWM") for p in children_of(proc.pid)]
        worker_hwm = [w for w in worker_hwm if w is not None]
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            rc = None
        stop_s = time.perf_counter() - t0
        tail.poll()
        poller.stop.set()
        poller.join()

        # a photo the daemon refused (the locator saw several cakes in it) now lies in inbox/failed
        moved = [inbox_catalog / p.name if (inbox_catalog / p.name).exists() else root / "inbox" / "failed" / p.name for p in staged]
        decode_after = decode_only_rate(moved)
        decode_rate = (decode_before + decode_after) / 2
        print(f"decode-only after the daemon stopped: {decode_after:.1f} img/s")

        # ---------------------------------------------------------- figures
        qevents = {e["result"]: e for e in tail.events if e.get("event") == "query"}
        walls = {n: e.get("timings_ms", {}).get("wall") for n, e in qevents.items()}
        # Wait before the daemon starts answering = (log time - its wall) - close time:
        # detection (inotify -> watchdog -> readiness) plus queueing behind other work.
        waits = {ph: [(log_time(qevents[n]) - walls[n] / 1e3 - CLOSE_WALL[n]) * 1e3 for n in closes
                      if phase_of[n] == ph and walls.get(n) is not None] for ph in ("idle", "ingest")}
        # A worker's whole work on a photo: decode, the locator (when on), LBP, keypoints (`local`, most of it) and the encoder input.
        worker_ms = [sum(e["timings_ms"].get(k, 0.0) for k in ("decode", "locate", "lbp", "local", "prepare")) for e in cat_events if "timings_ms" in e]
        worker_local_ms = [e["timings_ms"].get("local", 0.0) for e in cat_events if "timings_ms" in e]
        embed_total_s = sum(e["timings_ms"].get("embed_batch", 0.0) / e.get("batch", 1) for e in cat_events if "timings_ms" in e) / 1e3
        commit_total_s = sum(e["timings_ms"].get("commit_batch", 0.0) / e.get("batch", 1) for e in cat_events if "timings_ms" in e) / 1e3
        lat = {ph: [(poller.seen[n] - closes[n]) * 1e3 for n in closes if phase_of[n] == ph] for ph in ("idle", "ingest")}
        dwall = {ph: [walls[n] for n in closes if phase_of[n] == ph and walls.get(n) is not None] for ph in ("idle", "ingest")}
        outcomes_q, ready_q = {}, {}
        for e in tail.events:
            if e.get("event") == "query":
                outcomes_q[e.get("outcome")] = outcomes_q.get(e.get("outcome"), 0) + 1
                ready_q[e.get("ready")] = ready_q.get(e.get("ready"), 0) + 1
        # The part of each wait that is neither detection nor queueing behind the previous query.
        order = sorted(qevents, key=lambda n: log_time(qevents[n]))
        blocked: dict[str, list[float]] = {"idle": [], "ingest": []}
        for prev, n in zip([None, *order], order):
            if n not in phase_of or walls.get(n) is None:
                continue
            start = log_time(qevents[n]) - walls[n] / 1e3
            ready_at = max(CLOSE_WALL[n], log_time(qevents[prev]) if prev else 0.0)
            blocked[phase_of[n]].append(max(0.0, start - ready_at) * 1e3)
        stage_names = ("decode", "locate", "lbp", "prepare", "local", "embed", "shortlist", "refine", "verify", "decide")
        for ph in ("idle", "ingest"):
            stages = {k: [qevents[n]["timings_ms"][k] for n in closes if phase_of[n] == ph and k in qevents.get(n, {}).get("timings_ms", {})]
                      for k in stage_names}
            figures[f"{ph}_stage_p50_ms"] = {k: round(pct(v, 50), 1) for k, v in stages.items() if v}
            figures[f"{ph}_blocked_p50_ms"] = round(pct(blocked[ph], 50), 1) if blocked[ph] else None
            figures[f"{ph}_blocked_p95_ms"] = round(pct(blocked[ph], 95), 1) if blocked[ph] else None
            figures[f"{ph}_blocked_max_ms"] = round(max(blocked[ph]), 1) if blocked[ph] else None
        generations = {qevents[n].get("generation") for n in closes if phase_of[n] == "ingest" and n in qevents}
        figures["ingest_query_generations"] = len(generations)
        figures["published_during_ingest"] = sum(1 for e in tail.events if e.get("event") == "published")
        for ph in ("idle", "ingest"):
            figures[f"{ph}_queries"] = len(lat[ph])
            figures[f"{ph}_latency_p50_ms"] = round(pct(lat[ph], 50), 1)
            figures[f"{ph}_latency_p50_to_decode"] = round(pct(lat[ph], 50) / query_decode_ms, 2)
            figures[f"{ph}_latency_p95_to_decode"] = round(pct(lat[ph], 95) / query_decode_ms, 2)
            figures[f"{ph}_latency_p95_ms"] = round(pct(lat[ph], 95), 1)
            figures[f"{ph}_latency_max_ms"] = round(max(lat[ph]), 1)
            figures[f"{ph}_daemon_wall_p50_ms"] = round(pct(dwall[ph], 50), 1)
            figures[f"{ph}_wait_before_answer_p50_ms"] = round(pct(waits[ph], 50), 1)
        figures.update(
            catalog_photos=n_catalog, catalog_mean_mp=round(mean_mp, 2), catalog_mean_mb=round(mean_mb, 3),
            catalog_outcomes=outcomes, drop_s=round(drop_s, 3), ingest_s=round(ingest_s, 2),
            ingest_imgs_per_s=round(ingest_rate, 2), query_window_s=round(query_window_s, 1),
            ingest_in_query_window=in_window, ingest_imgs_per_s_with_queries=round(rate_with_queries, 2),
            ingest_imgs_per_s_after_queries=round(rate_after_queries, 2) if rate_after_queries else None,
            ingest_after_queries_to_decode_ratio=round(rate_after_queries / decode_rate, 3) if rate_after_queries else None,
            decode_only_imgs_per_s=round(decode_rate, 2), decode_only_before=round(decode_before, 2),
            decode_only_after=round(decode_after, 2), ingest_to_decode_ratio=round(ingest_rate / decode_rate, 3),
            commit_batch_median=statistics.median(b for b in batches if b is not None) if batches else None,
            worker_prepare_p50_ms=round(pct(worker_ms, 50), 1), worker_keypoints_p50_ms=round(pct(worker_local_ms, 50), 1), embed_total_s=round(embed_total_s, 2), commit_total_s=round(commit_total_s, 2),
            ingest_cpu_daemon_s=round(daemon_cpu, 1), ingest_cpu_workers_s=round(worker_cpu, 1), ingest_wall_s=round(ingest_wall, 1),
            query_outcomes=outcomes_q, query_ready_reasons=ready_q, startup_s=round(startup_s, 1),
            first_publication_s=round(first_publication_s, 1), query_decode_ms=round(query_decode_ms, 1),
            import_floor_s=round(import_floor_s, 2), startup_to_import_floor=round(startup_s / import_floor_s, 2),
            load_avg_end=round(os.getloadavg()[0], 1), daemon_vmhwm_mb=rss["daemon_vmhwm_mb"], daemon_vmrss_mb=rss["daemon_vmrss_mb"],
            worker_vmhwm_mb=[round(w, 1) for w in worker_hwm], sigterm_exit=rc, stop_s=round(stop_s, 2),
        )
        figures["wall_s"] = round(time.perf_counter() - t_start, 1)

        print_table(f"query latency, file close -> JSON in outbox/ (outbox polled every {POLL_S * 1e3:.0f} ms)", [
            (f"(a) idle daemon, {len(lat['idle'])} queries one at a time", f"{figures['idle_latency_p50_ms']:.0f} / {figures['idle_latency_p95_ms']:.0f} ms",
             f"p50 / p95 (max {figures['idle_latency_max_ms']:.0f}); p50 split: wait {figures['idle_wait_before_answer_p50_ms']:.0f} + answer {figures['idle_daemon_wall_p50_ms']:.0f} ms; catalog {outcomes['indexed']} entries"),
            (f"(b) during ingest, {len(lat['ingest'])} queries every {QUERY_EVERY_S} s over {query_window_s:.0f} s", f"{figures['ingest_latency_p50_ms']:.0f} / {figures['ingest_latency_p95_ms']:.0f} ms",
             f"p50 / p95 (max {figures['ingest_latency_max_ms']:.0f}); p50 split: wait {figures['ingest_wait_before_answer_p50_ms']:.0f} + answer {figures['ingest_daemon_wall_p50_ms']:.0f} ms"),
            ("    as multiples of decoding one query photo", f"{figures['idle_latency_p50_to_decode']:.1f} / {figures['idle_latency_p95_to_decode']:.1f} x",
             f"idle p50 / p95; during ingest {figures['ingest_latency_p50_to_decode']:.1f} / {figures['ingest_latency_p95_to_decode']:.1f} x; one decode = {query_decode_ms:.1f} ms this run"),
        ])
        print_table("query stages, p50 of the daemon's timings_ms (ms)", [
            (ph, " ".join(f"{k} {v:.0f}" for k, v in figures[f"{ph}_stage_p50_ms"].items()),
             f"blocked p50/p95/max {figures[f'{ph}_blocked_p50_ms']} / {figures[f'{ph}_blocked_p95_ms']} / {figures[f'{ph}_blocked_max_ms']} ms")
            for ph in ("idle", "ingest")])
        print_table(f"catalog ingest, {n_catalog} JPEGs ({mean_mp:.1f} MP mean) moved in at once", [
            ("ingest rate (drop -> last 'catalog' event)", f"{ingest_rate:.1f} img/s", f"{ingest_s:.1f} s; outcomes {outcomes}"),
            (f"  of which during the {query_window_s:.0f} s query window", f"{rate_with_queries:.1f} img/s",
             f"{in_window} photos indexed while a query arrived every {QUERY_EVERY_S} s"),
            ("  after the last query was answered", f"{rate_after_queries:.1f} img/s" if rate_after_queries else "n/a",
             f"{len(after)} photos, no queries; commit batch median {figures['commit_batch_median']}"),
            ("decode-only cv2.imread, 1 process", f"{decode_rate:.1f} img/s", f"mean of before {decode_before:.1f} / after {decode_after:.1f}"),
            ("ratio ingest / decode-only", f"{ingest_rate / decode_rate:.2f}x", "whole ingest; daemon: 2 workers decode (reduced) + LBP + keypoints, the catalog lane embeds + commits"),
            ("ratio ingest without queries / decode-only", f"{rate_after_queries / decode_rate:.2f}x" if rate_after_queries else "n/a", ""),
            ("worker prepare p50 (decode+locate+LBP+keypoints+input)", f"{pct(worker_ms, 50):.0f} ms",
             f"per photo, in a worker, wall (from the 'catalog' log events); keypoints alone p50 {pct(worker_local_ms, 50):.0f} ms"),
            ("catalog lane: embed / commit, total", f"{embed_total_s:.1f} / {commit_total_s:.1f} s", "sum over batches (from the 'catalog' log events)"),
            ("CPU during ingest: daemon / workers", f"{daemon_cpu:.0f} / {worker_cpu:.0f} s", f"over {ingest_wall:.0f} s wall (2 cores shared with other jobs)"),
        ])
        print_table("daemon process", [
            ("startup (spawn -> 'ready')", f"{startup_s:.1f} s", f"{startup_s / import_floor_s:.1f}x `python -c 'import numpy, cv2'` ({import_floor_s:.2f} s); "
             f"loaded catalog published (its vote index built) after {first_publication_s:.1f} s"),
            ("peak RSS (VmHWM) daemon", f"{rss['daemon_vmhwm_mb']:.0f} MB", f"VmRSS now {rss['daemon_vmrss_mb']:.0f} MB; read just before SIGTERM"),
            ("peak RSS (VmHWM) workers", " + ".join(f"{w:.0f}" for w in worker_hwm) + " MB", f"{len(worker_hwm)} child processes"),
            ("SIGTERM exit status", f"{rc}", f"exited {stop_s:.1f} s after the signal" + ("" if rc == 0 else "  <-- NOT 0")),
        ])
        print(json.dumps(figures, separators=(",", ":")))
        return 0 if rc == 0 else 1
    finally:
        if poller is not None:
            poller.stop.set()
        if proc is not None and proc.poll() is None:  # interrupted: stop the daemon and its workers
            kids = children_of(proc.pid)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
            for pid in kids:  # only if still the daemon's multiprocessing child (orphaned)
                try:
                    if b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(pid, signal.SIGKILL)
                except (OSError, ProcessLookupError):
                    pass
        if log_file is not None:
            log_file.close()
            if args.keep_log is not None:
                shutil.copyfile(log_file.name, args.keep_log)
        if restore_base is not None:
            restore_base()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
