"""The daemon loop: index catalog photos in batches, answer queries first.

One thread owns the model and the catalog; decode and LBP of catalog photos
run in a process pool so both cores work. Queries jump the line: the loop
answers every ready query before it looks at catalog work again, and at most
`2 x workers` catalog photos are in the pool at once, so a query waits for at
most one embedding batch.
"""

from __future__ import annotations

import json
import os
import multiprocessing
import queue
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import structlog

from pipeline.config import Config
from pipeline.daemon.budget import Failure, prepare_within
from pipeline.daemon.events import DaemonEvent, DirectorySeen, FileReady, FileRemoved, FileRenamed
from pipeline.daemon.journal import MAX_CRASHES, Intent, Journal, error_name, move_aside, unique_path
from pipeline.daemon.readiness import ReadinessTracker
from pipeline.daemon.watcher import DropFolderHandler, make_observer
from pipeline.engine import Engine
from pipeline.fsutil import is_inside
from pipeline.photos import is_photo, photo_files
from pipeline.prepare import Prepared
from pipeline.state import AlreadyRunning, acquire_lock, state_dir
from pipeline.results import MatchResult, dumps, rejected, write_json_atomic

log = structlog.get_logger("teaprint.daemon")


class Daemon:
    """Watches `inbox/catalog` and `inbox/query` under `root` until stopped."""

    def __init__(self, root: Path, config: Config, engine: Engine) -> None:
        self.root = Path(root).resolve()
        self.config = config
        self.engine = engine
        paths = config.paths
        self.catalog_dir = self.root / paths.inbox_catalog
        self.query_dir = self.root / paths.inbox_query
        self.outbox = self.root / paths.outbox
        self.processed = self.root / paths.processed
        self.failed = self.root / paths.failed
        for folder in (self.catalog_dir, self.query_dir, self.outbox, self.processed, self.failed):
            folder.mkdir(parents=True, exist_ok=True)
        watch = config.daemon.watch
        self.events: queue.Queue[DaemonEvent] = queue.Queue()
        self.tracker = ReadinessTracker(self.events.put, watch.ignore_patterns, stable_s=watch.stable_after_s)
        self.journal = Journal(state_dir(self.root, config) / "journal")
        self.stop_requested = threading.Event()
        self.queries: deque[FileReady] = deque()
        self.catalog_waiting: deque[FileReady] = deque()
        self.inflight: deque[tuple[FileReady, Future]] = deque()
        self.batch: list[tuple[FileReady, Prepared]] = []
        self.batch_started = 0.0
        # Catalog files in flight when a worker process died: re-run one at a
        # time, so the next crash names the file that causes it.
        self.suspects: set[Path] = set()
        self.running_since: dict[Future, float] = {}
        # Query files whose answer could not be published (e.g. disk full):
        # not retried in this run; the journal completes them on restart.
        self.stuck: set[Path] = set()
        self.ignored_dirs: dict[str, str] = {}  # name -> first seen, for status
        self.counts = {"indexed": 0, "duplicates": 0, "answered": 0, "failed": 0, "removed": 0}
        self.last_error: dict[str, Any] | None = None
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    # ------------------------------------------------------------- lifecycle
    def run(self) -> None:
        """Recover, watch, scan, then loop until `stop_requested` is set."""
        for stale in self.journal.clean_temp_files():
            log.info("removed_stale_temp", file=stale.name)
        for intent in self.journal.recover(answered=lambda i: self.engine.replayed(Path(i.result))):
            log.info("recovered", file=intent.photo, result=intent.result)
        cfg = self.config
        log.info("start", root=str(self.root), model=self.engine.model_info.id, entries=len(self.engine.snapshot()),
                 watch_mode=cfg.daemon.watch.mode, config={"daemon": asdict(cfg.daemon), "matcher": asdict(cfg.matcher)})
        observer = make_observer(cfg.daemon.watch.mode, cfg.daemon.watch.poll_interval_s)
        for folder, kind, recursive in ((self.catalog_dir, "catalog", True), (self.query_dir, "query", False)):
            handler = DropFolderHandler(folder, kind, self.tracker, self.events.put, cfg)
            observer.schedule(handler, str(folder), recursive=recursive)
        # Observer first, then the scan: a file dropped in between is seen by
        # one or the other, and the tracker deduplicates the overlap.
        observer.start()
        self.pool = self.new_pool()
        try:
            self.warm_up()
            self.reconcile()
            log.info("ready", pending=self.tracker.pending_count() + self.events.qsize())
            next_reconcile = time.monotonic() + cfg.daemon.watch.reconcile_interval_s
            next_status = 0.0
            while not self.stop_requested.is_set():
                try:
                    self.step()
                except Exception as exc:  # noqa: BLE001 - last line of defence: log, breathe, go on
                    log.error("loop_error", error=f"{type(exc).__name__}: {exc}")
                    time.sleep(0.5)
                now = time.monotonic()
                if now >= next_reconcile:
                    self.reconcile()
                    next_reconcile = now + cfg.daemon.watch.reconcile_interval_s
                if now >= next_status:
                    self.write_status()
                    next_status = now + 2.0
        finally:
            observer.stop()
            self.pool.shutdown(wait=True, cancel_futures=True)
            observer.join(timeout=5)
            self.write_status(running=False)
            log.info("stop", **self.counts)

    def warm_up(self) -> None:
        """Start the workers and run the model now, not on the first photo.

        Without this the first query pays for process spawn and the encoder's
        set-up (hundreds of ms).
        """
        futures = [self.pool.submit(_worker_ready) for _ in range(max(1, self.config.daemon.workers))]
        self.engine.warm_up()
        for future in futures:
            future.result()

    def new_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")  # TensorFlow's threads don't survive fork
        return ProcessPoolExecutor(max_workers=max(1, self.config.daemon.workers), mp_context=context, initializer=_worker_init)

    def replace_pool(self) -> None:
        """A worker died or hangs: end the pool's processes and start a fresh pool."""
        old = self.pool
        for process in list(getattr(old, "_processes", {}).values()):  # no public way to end one task
            if process.is_alive():
                process.kill()
        old.shutdown(wait=False, cancel_futures=True)
        self.pool = self.new_pool()
        self.running_since.clear()

    def request_stop(self, *_: Any) -> None:
        self.stop_requested.set()

    # ------------------------------------------------------------- the loop
    def step(self) -> None:
        """One turn: take events, answer a query, move catalog work along.

        A waiting query goes first, but catalog work still advances every turn:
        the pool is refilled and a full batch is committed even while queries
        keep arriving, so a steady query stream cannot stall indexing (it
        did: 0 photos indexed in 60 s at one query per 0.3 s).
        """
        self.tracker.poll()
        # Block briefly unless there is work to do right now; photos waiting for a
        # full pool are not such work (spinning on them took a whole core).
        busy = self.queries or self.batch_ready() or (self.catalog_waiting and len(self.inflight) < self.pool_limit())
        self.drain_events(timeout=0.0 if busy else (0.02 if self.inflight else 0.05))
        if self.queries:
            self.answer(self.queries.popleft())
        self.feed_pool()
        self.collect_prepared()
        if self.queries:
            if len(self.batch) >= self.config.daemon.catalog_batch_size:
                self.commit_batch()
        else:
            self.maybe_commit()

    def batch_ready(self) -> bool:
        return bool(self.inflight) and self.inflight[0][1].done()

    def drain_events(self, timeout: float) -> None:
        removes: list[FileRemoved] = []
        try:
            event = self.events.get(timeout=timeout) if timeout else self.events.get_nowait()
        except queue.Empty:
            return
        while True:
            if isinstance(event, FileReady):
                (self.queries if event.folder == "query" else self.catalog_waiting).append(event)
            elif isinstance(event, FileRemoved):
                removes.append(event)
            elif isinstance(event, FileRenamed):
                self.renamed(event)
            elif isinstance(event, DirectorySeen):
                self.directory_seen(event.path)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
        if removes:
            self.removed(removes)

    def pool_limit(self) -> int:
        """Photos in the pool at once: enough to fill a batch.

        A query never waits on the pool (queries are prepared in this
        process), only on CPU share, which the workers' lower priority settles.
        """
        return max(self.config.daemon.catalog_batch_size, 2 * max(1, self.config.daemon.workers))

    def feed_pool(self) -> None:
        shape = self.engine.encoder_input
        # While suspects of a worker crash are re-run, one file at a time.
        limit = 1 if self.suspects else self.pool_limit()
        while self.catalog_waiting and len(self.inflight) < limit:
            ready = self.catalog_waiting.popleft()
            try:
                future = self.pool.submit(prepare_within, ready.path, self.config, shape, self.catalog_dir, True)
            except BrokenProcessPool:
                self.catalog_waiting.appendleft(ready)
                self.pool_broke()
                return
            self.inflight.append((ready, future))

    def collect_prepared(self) -> None:
        self.check_stalled()
        while self.inflight and self.inflight[0][1].done():
            ready, future = self.inflight[0]
            try:
                outcome = future.result()
            except BrokenProcessPool:
                self.pool_broke()
                return
            except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be unpickled
                outcome = Failure("processing_failed", f"{ready.path.name}: processing failed: {type(exc).__name__}: {exc}")
            self.inflight.popleft()
            self.running_since.pop(future, None)
            self.suspects.discard(ready.path)
            if isinstance(outcome, Failure):
                self.fail_catalog(ready, outcome)
                continue
            if not self.batch:
                self.batch_started = time.monotonic()
            self.batch.append((ready, outcome))

    def pool_broke(self) -> None:
        """A worker process died (a crash in a decoder, an out-of-memory kill).

        The file alone in flight is the cause and moves aside; when several
        were in flight, each is re-run alone (`suspects`), so an innocent file
        is never failed for another's crash.
        """
        flight = [ready for ready, _ in self.inflight]
        self.inflight.clear()
        self.replace_pool()
        if len(flight) == 1 or (flight and flight[0].path in self.suspects):
            culprit = flight.pop(0)
            self.suspects.discard(culprit.path)
            self.fail_catalog(culprit, Failure("worker_crashed", f"{culprit.path.name}: the worker process died while decoding this file"))
        self.suspects.update(r.path for r in flight)
        self.catalog_waiting.extendleft(reversed(flight))
        log.warning("worker_crashed", requeued=len(flight))

    def check_stalled(self) -> None:
        """A worker past twice the file budget is stuck in one call: end it, move its file aside."""
        budget = self.config.daemon.file_budget_s
        if budget <= 0 or not self.inflight:
            return
        now = time.monotonic()
        for ready, future in self.inflight:
            if future.running():
                self.running_since.setdefault(future, now)
        # The budget is enforced inside the worker; this catches only a call
        # that never returns to Python (the margin covers the one queued task).
        hard = 2 * budget + 5.0
        stalled = [(r, f) for r, f in self.inflight if not f.done() and now - self.running_since.get(f, now) > hard]
        if not stalled:
            return
        flight = [r for r, f in self.inflight if not f.done() and (r, f) not in stalled]
        done = [(r, f) for r, f in self.inflight if f.done()]
        self.inflight = deque(done)
        self.replace_pool()
        for ready, _ in stalled:
            self.fail_catalog(ready, Failure("timeout", f"{ready.path.name}: decoding took more than {hard:g} s; the worker was ended"))
        self.catalog_waiting.extendleft(reversed(flight))

    def maybe_commit(self) -> None:
        """Commit a full batch, or what there is once nothing more is coming soon."""
        if not self.batch:
            return
        full = len(self.batch) >= self.config.daemon.catalog_batch_size
        idle = not self.inflight and not self.catalog_waiting
        waited = time.monotonic() - self.batch_started >= self.config.daemon.catalog_batch_wait_s
        more_coming = len(self.batch) + len(self.inflight) >= self.config.daemon.catalog_batch_size
        if full or idle or (waited and not more_coming):
            self.commit_batch()

    def commit_batch(self) -> None:
        batch, self.batch = self.batch, []
        try:
            self.commit_prepared(batch)
        except Exception as exc:  # noqa: BLE001 - find the file at fault: commit each alone
            if len(batch) == 1:
                ready, _ = batch[0]
                self.fail_catalog(ready, Failure("processing_failed", f"{ready.path.name}: indexing failed: {type(exc).__name__}: {exc}"))
                return
            log.warning("batch_failed", files=len(batch), error=f"{type(exc).__name__}: {exc}")
            for item in batch:
                self.batch = [item]
                self.commit_batch()

    def commit_prepared(self, batch: list[tuple[FileReady, Prepared]]) -> None:
        t0 = time.perf_counter()
        entries = self.engine.describe([p for _, p in batch], catalog_root=self.catalog_dir)
        t1 = time.perf_counter()
        result = self.engine.register(entries)
        t2 = time.perf_counter()
        added = {e.sha256 for e in result.added}
        for (ready, prepared), entry in zip(batch, entries):
            outcome = "indexed" if entry.sha256 in added else "duplicate"
            added.discard(entry.sha256)  # the same bytes twice in one batch: the second is a duplicate
            self.counts["indexed" if outcome == "indexed" else "duplicates"] += 1
            log.info("catalog", file=str(ready.path), sha256=prepared.sha256, label=entry.label, outcome=outcome,
                     ready=ready.reason, timings_ms={**_round(prepared.timings_ms), "embed_batch": round((t1 - t0) * 1e3, 1),
                                                     "commit_batch": round((t2 - t1) * 1e3, 1)}, batch=len(batch))

    # ------------------------------------------------------------- queries
    def answer(self, ready: FileReady) -> None:
        """Match one query, publish exactly one result, move the photo out.

        Whatever the file does (refused, over its time budget, a library
        error while matching) it gets one result and leaves the inbox; it
        costs that file only. A file that took the daemon down `MAX_CRASHES`
        times (the journal's attempt records) is moved aside untried.
        """
        path = ready.path
        if not os.path.lexists(path) or path in self.stuck:
            self.tracker.forget(path)
            return
        t0 = time.perf_counter()
        crashes = self.journal.crashes(path)
        if crashes >= MAX_CRASHES:
            outcome: Prepared | Failure = Failure(
                "crashed_daemon", f"{path.name}: the daemon stopped {crashes} times while handling this file; moved aside untried")
        else:
            self.journal.begin_attempt(path)
            outcome = prepare_within(path, self.config, self.engine.encoder_input, self.query_dir)
        result = self.result_for(path, outcome)
        try:
            self.publish(path, outcome, result)
        except Exception as exc:  # noqa: BLE001 - e.g. disk full; the journal finishes it on restart
            self.stuck.add(path)
            self.note_error(path, "publish_failed", f"{type(exc).__name__}: {exc}")
            log.error("query_publish_failed", file=path.name, error=f"{type(exc).__name__}: {exc}")
            return
        finally:
            self.journal.end_attempt(path)
        self.tracker.forget(path)
        self.counts["answered"] += 1
        if result.status == "rejected":
            self.counts["failed"] += 1
            self.note_error(path, result.error_code or "", result.error or "")
        log.info("query", file=path.name, sha256=result.sha256, outcome=result.status, label=result.label,
                 confidence=result.confidence, code=result.error_code, ready=ready.reason,
                 timings_ms={**result.timings_ms, "wall": round((time.perf_counter() - t0) * 1e3, 1)})

    def result_for(self, path: Path, outcome: Prepared | Failure) -> MatchResult:
        """The result object; a refusal, or an error while matching, is a `rejected` one."""
        if isinstance(outcome, Failure):
            # The hash is of the bytes intake read, never of a link's target outside the root.
            return rejected(path.name, outcome.reason, outcome.code, sha256=outcome.sha256, model=self.engine.model_info)
        try:
            return self.engine.match_prepared(outcome, path.name)
        except Exception as exc:  # noqa: BLE001 - odd features must not cost the daemon
            return rejected(path.name, f"{path.name}: matching failed: {type(exc).__name__}: {exc}", "processing_failed",
                            sha256=outcome.sha256, model=self.engine.model_info)

    def publish(self, path: Path, outcome: Prepared | Failure, result: MatchResult) -> None:
        """Journal, result JSON, error file, move: the exactly-once sequence."""
        if result.status == "rejected":
            destination = unique_path(self.failed, path.stem, path.suffix, companion=".error.json")
            error_file: Path | None = self.failed / error_name(destination.name)
            error_text: str | None = dumps({"file": path.name, "folder": "query", "code": result.error_code,
                                            "reason": result.error, "sha256": result.sha256, "at": _now()}, indent=1)
        else:
            destination = unique_path(self.processed, path.stem, path.suffix)
            error_file = error_text = None
        result_path = unique_path(self.outbox, path.stem, ".json", taken=self.journal.reserved())
        intent = Intent(str(path), result.sha256 or "", str(result_path), str(destination), str(error_file) if error_file else None, error_text)
        record = self.journal.begin(intent)
        if self.config.daemon.explain_images and isinstance(outcome, Prepared) and result.status != "rejected":
            self.explain(path, result, result_path.with_suffix(".jpg"), outcome.local)
        write_json_atomic(result_path, result.to_json(indent=2))
        if error_file and error_text:
            write_json_atomic(error_file, error_text)
        move_aside(path, destination)
        self.engine.answered(result, "folder", result_path)  # before the record goes: a kill here is replayed
        self.journal.finish(record)

    def explain(self, path: Path, result: Any, out: Path, query_local: Any = None) -> None:
        """The picture beside the JSON; written first, so the JSON's arrival means both are there."""
        from pipeline.explain import render_explanation, write_explanation
        from pipeline.intake import IntakeError, read_photo

        try:
            pixels = read_photo(path, self.config.intake, root=self.query_dir).pixels
            entries = self.engine.snapshot().by_id()
            write_explanation(out, render_explanation(pixels, result, entries, self.config, query_local=query_local))
        except (IntakeError, OSError, cv2.error) as exc:  # a picture must never cost an answer
            log.warning("explain_failed", file=path.name, reason=str(exc))

    # ------------------------------------------------------------- catalog
    def fail_catalog(self, ready: FileReady, failure: Failure) -> None:
        path = ready.path
        self.tracker.forget(path)
        if not os.path.lexists(path):
            return
        destination = move_aside(path, unique_path(self.failed, path.stem, path.suffix, companion=".error.json"))
        error = {"file": str(path.relative_to(self.catalog_dir)), "folder": "catalog", "code": failure.code,
                 "reason": failure.reason, "sha256": failure.sha256, "at": _now()}
        write_json_atomic(self.failed / error_name(destination.name), dumps(error, indent=1))
        self.counts["failed"] += 1
        self.engine.failed_file("catalog", failure.code)
        self.note_error(path, failure.code, failure.reason)
        log.warning("catalog", file=str(path), outcome="failed", code=failure.code, reason=failure.reason, moved_to=str(destination))

    def directory_seen(self, path: Path) -> None:
        """A directory with a photo's name in the query folder: said once, in the log and the status."""
        if path.name in self.ignored_dirs or not path.is_dir() or path.is_symlink():
            return
        self.ignored_dirs[path.name] = _now()
        log.warning("ignored_directory", file=path.name, folder="query",
                    reason="a directory, not a photo; the query folder is not searched into")

    def removed(self, events: list[FileRemoved]) -> None:
        snapshot = self.engine.snapshot()
        entries = [e for ev in events if (e := snapshot.by_path(str(ev.path))) is not None]
        if entries:
            removed = self.engine.remove(entries)
            self.counts["removed"] += len(removed)
            log.info("catalog_removed", files=[str(ev.path) for ev in events], removed=len(removed))

    def renamed(self, event: FileRenamed) -> None:
        moved = self.engine.rename(event.src, event.dest, self.catalog_dir)
        if moved is None:
            self.tracker.observe("moved_in", event.dest, "catalog")
            return
        log.info("catalog_renamed", src=str(event.src), dest=str(event.dest), label=moved.label, sha256=moved.sha256)

    def reconcile(self) -> None:
        """Make the index agree with the catalog folder; pick up missed files."""
        cfg = self.config
        indexed = {e.path for e in self.engine.snapshot().entries}
        busy = {r.path for r in self.catalog_waiting} | {r.path for r, _ in self.inflight} | {r.path for r, _ in self.batch}
        present = set()
        for path in photo_files(self.catalog_dir, cfg, recursive=True):
            present.add(str(path))
            if str(path) not in indexed and path not in busy:
                self.tracker.observe("scan", path, "catalog")
        gone = [FileRemoved(Path(p)) for p in indexed if is_inside(Path(p), self.catalog_dir) and p not in present]
        if gone:
            self.removed(gone)
        queued = {r.path for r in self.queries}
        for path in photo_files(self.query_dir, cfg, recursive=False):
            if path not in queued:
                self.tracker.observe("scan", path, "query")
        for path in self.query_dir.iterdir():
            if is_photo(path, self.query_dir, cfg) and path.is_dir() and not path.is_symlink():
                self.directory_seen(path)
        self.ignored_dirs = {n: t for n, t in self.ignored_dirs.items() if (self.query_dir / n).is_dir()}

    # ------------------------------------------------------------- status
    def note_error(self, path: Path, code: str, reason: str) -> None:
        self.last_error = {"file": str(path), "code": code, "reason": reason, "at": _now()}

    def write_status(self, running: bool = True) -> None:
        """The status file: `Engine.status` with this daemon's live section."""
        self.engine.publish_status(daemon={
            "pid": os.getpid(), "running": running, "started_at": self.started_at, "updated_at": _now(),
            "processed": self.counts, "last_error": self.last_error,
            "ignored": {"query_directories": sorted(self.ignored_dirs)},
            "queue": {"query": len(self.queries), "catalog": len(self.catalog_waiting) + len(self.inflight) + len(self.batch),
                      "unsettled": self.tracker.pending_count()},
        })


def run_daemon(root: Path, config: Config) -> int:
    """`teaprint run`: lock the root, load the engine, serve until SIGTERM/SIGINT."""
    try:
        lock = acquire_lock(root, config)
    except AlreadyRunning as err:
        log.error("refused", reason=str(err))
        print(f"teaprint: {err}", file=__import__("sys").stderr)
        return 1
    try:
        engine = Engine.load(config, Path(root), component="daemon")
        daemon = Daemon(root, config, engine)
        signal.signal(signal.SIGTERM, daemon.request_stop)
        signal.signal(signal.SIGINT, daemon.request_stop)
        daemon.run()
    finally:
        lock.release()
    return 0


def _worker_init() -> None:
    """Catalog workers yield the CPU to queries and die with the daemon.

    Lower priority: queries are prepared in the daemon process, and with both
    cores busy decoding a catalog burst they waited ~10 s at equal priority.
    PR_SET_PDEATHSIG: without it, workers of a SIGKILLed daemon lived on.
    """
    import ctypes
    import signal as _signal
    import sys

    os.nice(10)
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, _signal.SIGTERM)


def _worker_ready() -> bool:
    import pipeline.daemon.budget  # noqa: F401  (the import is the warm-up)

    return True


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _round(timings: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in timings.items()}
