"""`teaprint run`: the observer, the two lanes, the pool and the signals, wired together.

- The **query lane** is this process's main thread: it takes each ready
  query photo in arrival order and answers it (`QueryAnswerer`) against the
  catalog generation the catalog lane last published. It never waits for
  catalog work: it shares no lock with the catalog lane, only the published
  snapshot, an immutable value swapped whole.
- The **catalog lane** is one thread (`CatalogSync`) at a lower CPU priority,
  with its own encoder handle, driving the worker pool that decodes catalog
  photos (lower priority still), embedding and committing batches, applying
  deletions and renames, and publishing each new generation to queries.

Events from the observer are routed by folder: query photos and
query-folder directories to the query lane, everything about the catalog
folder to the catalog lane.
"""

from __future__ import annotations

import queue
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import structlog

from pipeline.config import Config
from pipeline.daemon.answerer import QueryAnswerer
from pipeline.daemon.catalog_sync import CatalogSync, SnapshotBoard
from pipeline.daemon.events import DaemonEvent, DirectorySeen, FileReady
from pipeline.daemon.folders import DropFolders, FailedFolder, now
from pipeline.daemon.journal import Journal
from pipeline.daemon.readiness import ReadinessTracker
from pipeline.daemon.status import StatusWriter, Tally
from pipeline.daemon.watcher import DropFolderHandler, make_observer
from pipeline.engine import Engine
from pipeline.photos import is_photo, photo_files
from pipeline.state import AlreadyRunning, acquire_lock, state_dir

log = structlog.get_logger("teaprint.daemon")

STATUS_EVERY_S = 2.0
STOP_WAIT_S = 2.0  # at SIGTERM, how long the catalog lane may take to finish its step


class Daemon:
    """Watches `inbox/catalog` and `inbox/query` under `root` until stopped."""

    def __init__(self, root: Path, config: Config, engine: Engine, matcher_warm: threading.Thread | None = None) -> None:
        """`matcher_warm`: the thread of `start_matcher_warm_up` if already started (beside the engine's load)."""
        self.matcher_warm = matcher_warm
        self.root = Path(root).resolve()
        self.config = config
        self.engine = engine
        self.folders = DropFolders.of(self.root, config)
        self.stop_requested = threading.Event()
        self.queries: queue.Queue[FileReady | DirectorySeen] = queue.Queue()
        self.in_hand = 0  # queries being answered now (0 or 1)
        self.ignored_dirs: dict[str, str] = {}  # name -> first seen, for status
        watch = config.daemon.watch
        self.tracker = ReadinessTracker(self.route, watch.ignore_patterns, stable_s=watch.stable_after_s)
        self.tally = Tally()
        failed = FailedFolder(self.folders.failed)
        self.board = SnapshotBoard(engine.snapshot())
        self.answerer = QueryAnswerer(engine, config, self.folders, Journal(state_dir(self.root, config) / "journal"),
                                      failed, self.tally, self.board.get)
        self.catalog = CatalogSync(engine, config, self.folders, failed, self.tally, self.tracker, self.board)
        self.status = StatusWriter(engine, self.daemon_section)

    # ------------------------------------------------------------- lifecycle
    def run(self) -> None:
        """Recover, watch, scan, then answer queries until `stop_requested` is set.

        `ready` is logged once the first query would be answered at full
        speed: the matcher's classifier library (scikit-learn, 0.9 s to import
        on an idle machine) loads on a thread beside the start-up and is
        waited for. Loaded after `ready` instead, it made the first query of a
        benchmark that drops photos at once take 1.7 s and the next five
        queue behind it.
        """
        warm = self.matcher_warm or start_matcher_warm_up()
        self.answerer.recover()
        cfg = self.config
        log.info("start", root=str(self.root), model=self.engine.model_info.id, entries=len(self.board.get()),
                 watch_mode=cfg.daemon.watch.mode, config={"daemon": asdict(cfg.daemon), "matcher": asdict(cfg.matcher)})
        observer = make_observer(cfg.daemon.watch.mode, cfg.daemon.watch.poll_interval_s)
        for folder, kind, recursive in ((self.folders.catalog, "catalog", True), (self.folders.query, "query", False)):
            observer.schedule(DropFolderHandler(folder, kind, self.tracker, self.route, cfg), str(folder), recursive=recursive)
        # Observer first, then the scans: a file dropped in between is seen by
        # one or the other, and the tracker deduplicates the overlap.
        observer.start()
        catalog_lane = threading.Thread(target=self.catalog.run, args=(self.stop_requested,), name="catalog-lane", daemon=True)
        status = threading.Thread(target=self.write_status_until_stopped, name="status", daemon=True)
        try:
            self.engine.warm_up()
            catalog_lane.start()  # publishes the loaded catalog, warms its workers, reconciles the catalog folder
            status.start()
            self.scan_queries()
            warm.join()
            log.info("ready", entries=len(self.board.get()), generation=self.board.get().generation,
                     pending=self.tracker.pending_count() + self.queries.qsize())
            self.answer_until_stopped()
        finally:
            self.stop_requested.set()
            observer.stop()
            self.stop_catalog_lane(catalog_lane)
            if status.is_alive():
                status.join(timeout=STOP_WAIT_S)
            observer.join(timeout=5)
            self.status.write(running=False)
            log.info("stop", **self.tally.counts())

    def answer_until_stopped(self) -> None:
        """The query lane: answer each ready query in arrival order; rescan the query folder now and then."""
        next_scan = time.monotonic() + self.config.daemon.watch.reconcile_interval_s
        while not self.stop_requested.is_set():
            self.tracker.poll()
            try:
                ready = self.queries.get(timeout=0.05)
            except queue.Empty:
                ready = None
            if isinstance(ready, DirectorySeen):
                self.directory_seen(ready.path)
            elif ready is not None:
                self.in_hand = 1
                try:
                    self.answerer.answer(ready)
                except Exception as exc:  # noqa: BLE001 - last line of defence: log, breathe, go on
                    log.error("query_lane_error", file=ready.path.name, error=f"{type(exc).__name__}: {exc}")
                    time.sleep(0.5)
                finally:
                    self.in_hand = 0
                    self.tracker.forget(ready.path)
            if time.monotonic() >= next_scan:
                self.scan_queries()
                next_scan = time.monotonic() + self.config.daemon.watch.reconcile_interval_s

    def write_status_until_stopped(self) -> None:
        """Its own thread: reading the catalog's status must never hold up a query."""
        while not self.stop_requested.is_set():
            try:
                self.status.write()
            except Exception as exc:  # noqa: BLE001 - e.g. disk full: the status is not worth a daemon
                log.warning("status_failed", error=f"{type(exc).__name__}: {exc}")
            self.stop_requested.wait(STATUS_EVERY_S)

    def stop_catalog_lane(self, lane: threading.Thread) -> None:
        """Give the catalog lane `STOP_WAIT_S` to finish its step, then leave it.

        Leaving it is safe at any instant: a commit is atomic, and photos not
        yet committed are still in the catalog folder, indexed after restart.
        """
        if lane.is_alive():
            lane.join(timeout=STOP_WAIT_S)
        if lane.is_alive():
            log.warning("catalog_lane_left", reason=f"busy after {STOP_WAIT_S:g} s; its uncommitted photos are indexed after restart")
            self.catalog.pool.shutdown()

    def request_stop(self, *_: Any) -> None:
        self.stop_requested.set()

    # ------------------------------------------------------------- events
    def route(self, event: DaemonEvent) -> None:
        """Called by the observer's and the tracker's threads: each event to its lane."""
        if (isinstance(event, FileReady) and event.folder == "query") or isinstance(event, DirectorySeen):
            self.queries.put(event)
        else:
            self.catalog.events.put(event)

    def scan_queries(self) -> None:
        """Pick up query photos no event announced (before a start, or missed)."""
        folder = self.folders.query
        for path in photo_files(folder, self.config, recursive=False):
            self.tracker.observe("scan", path, "query")
        for path in folder.iterdir():
            if is_photo(path, folder, self.config) and path.is_dir() and not path.is_symlink():
                self.directory_seen(path)
        self.ignored_dirs = {n: t for n, t in self.ignored_dirs.items() if (folder / n).is_dir()}

    def directory_seen(self, path: Path) -> None:
        """A directory with a photo's name in the query folder: said once, in the log and the status."""
        if path.name in self.ignored_dirs or not path.is_dir() or path.is_symlink():
            return
        self.ignored_dirs[path.name] = now()
        log.warning("ignored_directory", file=path.name, folder="query",
                    reason="a directory, not a photo; the query folder is not searched into")

    def daemon_section(self) -> dict[str, Any]:
        published = self.board.get()
        return {
            "processed": self.tally.counts(), "last_error": self.tally.last_error(),
            "ignored": {"query_directories": sorted(self.ignored_dirs)},
            "queue": {"query": self.queries.qsize() + self.in_hand, "catalog": self.catalog.pending(),
                      "unsettled": self.tracker.pending_count()},
            "published": {"generation": published.generation, "entries": len(published)},
        }


def start_matcher_warm_up() -> threading.Thread:
    """Load what the matcher loads on first use on a thread of its own; the log's `warm` says how long it took."""

    def warm() -> None:
        t0 = time.perf_counter()
        Engine.warm_up_matcher()
        log.info("warm", seconds=round(time.perf_counter() - t0, 2))

    thread = threading.Thread(target=warm, name="warm-up", daemon=True)
    thread.start()
    return thread


def run_daemon(root: Path, config: Config) -> int:
    """`teaprint run`: lock the root, load the engine, serve until SIGTERM/SIGINT."""
    try:
        lock = acquire_lock(root, config)
    except AlreadyRunning as err:
        log.error("refused", reason=str(err))
        print(f"teaprint: {err}", file=sys.stderr)
        return 1
    try:
        warm = start_matcher_warm_up()  # beside the engine's load: much of that is C (model, HDF5) that lets it run
        engine = Engine.load(config, Path(root), component="daemon")
        daemon = Daemon(root, config, engine, matcher_warm=warm)
        signal.signal(signal.SIGTERM, daemon.request_stop)
        signal.signal(signal.SIGINT, daemon.request_stop)
        daemon.run()
    finally:
        lock.release()
    return 0
