"""The catalog lane: folder events in, catalog writes and published snapshots out.

Runs in its own thread, at a lower CPU priority than the query lane, with
its own encoder handle. Catalog photos are decoded and described by the
worker pool (`PreparePool`) while this thread embeds and commits the
previous batch; the scheduler (`pipeline.daemon.scheduler`) decides each
move. Deletions and renames in the catalog folder become writer calls
through `Engine` at once. A commit is visible to queries once this lane
publishes it (`SnapshotBoard`): it builds what the matcher derives from the
generation first, so no query pays for it.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import structlog

from pipeline.catalog import CatalogSnapshot
from pipeline.config import Config
from pipeline.daemon.budget import Failure
from pipeline.daemon.events import DaemonEvent, FileReady, FileRemoved, FileRenamed
from pipeline.daemon.folders import DropFolders, FailedFolder
from pipeline.daemon.pool import Outcome, PreparePool
from pipeline.daemon.readiness import ReadinessTracker
from pipeline.daemon.scheduler import BatchPolicy, Collect, Commit, LaneState, Publish, Submit, Wait, next_step
from pipeline.daemon.status import Tally
from pipeline.engine import Engine
from pipeline.fsutil import is_inside
from pipeline.photos import photo_files
from pipeline.prepare import Prepared

log = structlog.get_logger("teaprint.daemon")

# The catalog lane's thread (and its encoder's threads) yield the CPU to queries, but less than the
# workers (nice 10): on a machine busy with other work a nice-10 lane got too little CPU to keep up.
CATALOG_LANE_NICE = 5


class SnapshotBoard:
    """The catalog generation queries read: one reference, replaced whole by the catalog lane."""

    def __init__(self, snapshot: CatalogSnapshot) -> None:
        self._snapshot = snapshot

    def get(self) -> CatalogSnapshot:
        return self._snapshot

    def set(self, snapshot: CatalogSnapshot) -> None:
        self._snapshot = snapshot


@dataclass(frozen=True)
class _Publication:
    generation: int
    at: float
    cost_s: float


class CatalogSync:
    """Keeps the catalog equal to the catalog folder, and publishes its generations to queries.

    Parameters
    ----------
    engine : Engine
    config : Config
    folders : DropFolders
    failed : FailedFolder
    tally : Tally
    tracker : ReadinessTracker
        Files it is done with are forgotten there; scans feed it.
    board : SnapshotBoard
        Where published generations go.
    clock : callable
        Monotonic seconds.
    """

    def __init__(self, engine: Engine, config: Config, folders: DropFolders, failed: FailedFolder, tally: Tally,
                 tracker: ReadinessTracker, board: SnapshotBoard, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.config = config
        self.folders = folders
        self.failed = failed
        self.tally = tally
        self.tracker = tracker
        self.board = board
        self.clock = clock
        d = config.daemon
        self.policy = BatchPolicy(d.catalog_batch_size, max(d.catalog_batch_size, d.catalog_batch_max), d.catalog_batch_wait_s,
                                  max(1, d.workers))
        self.events: queue.Queue[DaemonEvent] = queue.Queue()
        self.pool = PreparePool(config, engine.encoder_input, folders.catalog, clock)
        self.batch: list[tuple[FileReady, Prepared]] = []
        self.batch_started = 0.0
        self.published = _Publication(board.get().generation, clock(), 0.0)
        self.dirty = True  # a generation not yet published with its derived data (at start: the loaded one)

    # ------------------------------------------------------------- the lane
    def run(self, stop: threading.Event) -> None:
        """The lane's thread: publish the loaded catalog, warm up, reconcile, then turn until `stop` is set.

        Queries that arrive before the first publication wait for the
        derived data of the loaded generation (built once, by whichever
        lane asks first); after it, no query waits for catalog work.
        """
        _lower_priority()
        try:
            warm = self.pool.warm_up()
            self.publish()
            self.engine.warm_up()  # this thread's own encoder handle
            for future in warm:
                future.result()
            self.reconcile()
        except Exception as exc:  # noqa: BLE001 - the turns below retry what is left (publication, the pool)
            log.error("catalog_lane_error", error=f"{type(exc).__name__}: {exc}")
        next_reconcile = self.clock() + self.config.daemon.watch.reconcile_interval_s
        try:
            while not stop.is_set():
                try:
                    self.turn()
                except Exception as exc:  # noqa: BLE001 - last line of defence: log, breathe, go on
                    log.error("catalog_lane_error", error=f"{type(exc).__name__}: {exc}")
                    stop.wait(0.5)
                if self.clock() >= next_reconcile:
                    self.reconcile()
                    next_reconcile = self.clock() + self.config.daemon.watch.reconcile_interval_s
        finally:
            self.pool.shutdown()

    def state(self) -> LaneState:
        now = self.clock()
        return LaneState(
            waiting=len(self.pool.waiting), inflight=len(self.pool.inflight), finished=self.pool.finished(),
            batch=len(self.batch), batch_age_s=now - self.batch_started if self.batch else 0.0,
            suspects=bool(self.pool.suspects), unpublished=self.dirty,
            since_publish_s=now - self.published.at, publish_cost_s=self.published.cost_s,
        )

    def turn(self) -> None:
        """Take new events, then one step of the scheduler."""
        self.drain(0.0)
        self.take(self.pool.check_stalled())
        step = next_step(self.state(), self.policy)
        if isinstance(step, Collect):
            self.take(self.pool.collect())
        elif isinstance(step, Submit):
            self.take(self.pool.submit(step.count))
        elif isinstance(step, Commit):
            self.commit_batch()
        elif isinstance(step, Publish):
            self.publish()
        elif isinstance(step, Wait):
            if not self.drain(step.seconds) and not self.dirty and self.engine.snapshot().generation != self.published.generation:
                self.dirty = True  # another process (`teaprint index`, the server) committed

    def drain(self, timeout: float) -> bool:
        """Act on the events waiting (block up to `timeout` for the first); True when there were any."""
        removes: list[FileRemoved] = []
        try:
            event = self.events.get(timeout=timeout) if timeout > 0 else self.events.get_nowait()
        except queue.Empty:
            return False
        while True:
            if isinstance(event, FileReady):
                self.pool.add(event)
            elif isinstance(event, FileRemoved):
                removes.append(event)
            elif isinstance(event, FileRenamed):
                self.removed(removes)
                removes = []
                self.renamed(event)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
        self.removed(removes)
        return True

    # ------------------------------------------------------------- photos in
    def take(self, outcomes: list[Outcome]) -> None:
        for ready, outcome in outcomes:
            if isinstance(outcome, Failure):
                self.fail(ready, outcome)
                continue
            if not self.batch:
                self.batch_started = self.clock()
            self.batch.append((ready, outcome))

    def commit_batch(self) -> None:
        batch, self.batch = self.batch, []
        try:
            self.describe_and_register(batch)
        except Exception as exc:  # noqa: BLE001 - find the file at fault: commit each alone
            if len(batch) == 1:
                ready, _ = batch[0]
                self.fail(ready, Failure("processing_failed", f"{ready.path.name}: indexing failed: {type(exc).__name__}: {exc}"))
                return
            log.warning("batch_failed", files=len(batch), error=f"{type(exc).__name__}: {exc}")
            for item in batch:
                self.batch = [item]
                self.commit_batch()

    def describe_and_register(self, batch: list[tuple[FileReady, Prepared]]) -> None:
        t0 = time.perf_counter()
        entries = self.engine.describe([p for _, p in batch], catalog_root=self.folders.catalog)
        t1 = time.perf_counter()
        result = self.engine.register(entries)
        t2 = time.perf_counter()
        self.dirty = True
        added = {e.sha256 for e in result.added}
        timings = {"embed_batch": round((t1 - t0) * 1e3, 1), "commit_batch": round((t2 - t1) * 1e3, 1)}
        for (ready, prepared), entry in zip(batch, entries):
            outcome = "indexed" if entry.sha256 in added else "duplicate"
            added.discard(entry.sha256)  # the same bytes twice in one batch: the second is a duplicate
            self.tally.count("indexed" if outcome == "indexed" else "duplicates")
            log.info("catalog", file=str(ready.path), sha256=prepared.sha256, label=entry.label, outcome=outcome,
                     ready=ready.reason, generation=result.generation, batch=len(batch),
                     timings_ms={**{k: round(v, 1) for k, v in prepared.timings_ms.items()}, **timings})

    def publish(self) -> None:
        """Make the latest generation the one queries read, its derived data built first and saved after."""
        t0 = self.clock()
        snapshot = self.engine.serving_snapshot(persist=False)
        self.board.set(snapshot)
        now = self.clock()
        self.published = _Publication(snapshot.generation, now, now - t0)
        self.dirty = False
        log.info("published", generation=snapshot.generation, entries=len(snapshot), cost_ms=round((now - t0) * 1e3, 1))
        self.engine.persist_search()

    def fail(self, ready: FileReady, failure: Failure) -> None:
        path = ready.path
        self.tracker.forget(path)
        destination = self.failed.move_with_reason(path, {
            "file": str(path.relative_to(self.folders.catalog)), "folder": "catalog", "code": failure.code,
            "reason": failure.reason, "sha256": failure.sha256})
        if destination is None:
            return
        self.tally.count("failed")
        self.engine.failed_file("catalog", failure.code)
        self.tally.error(path, failure.code, failure.reason)
        log.warning("catalog", file=str(path), outcome="failed", code=failure.code, reason=failure.reason, moved_to=str(destination))

    # ------------------------------------------------------------- folder changes
    def removed(self, events: list[FileRemoved]) -> None:
        if not events:
            return
        snapshot = self.engine.snapshot()
        entries = [e for ev in events if (e := snapshot.by_path(str(ev.path))) is not None]
        if entries:
            removed = self.engine.remove(entries)
            self.dirty = True
            self.tally.count("removed", len(removed))
            log.info("catalog_removed", files=[str(ev.path) for ev in events], removed=len(removed))

    def renamed(self, event: FileRenamed) -> None:
        moved = self.engine.rename(event.src, event.dest, self.folders.catalog)
        if moved is None:
            self.tracker.observe("moved_in", event.dest, "catalog")
            return
        self.dirty = True
        log.info("catalog_renamed", src=str(event.src), dest=str(event.dest), label=moved.label, sha256=moved.sha256)

    def reconcile(self) -> None:
        """Make the index agree with the catalog folder; pick up missed files."""
        catalog = self.folders.catalog
        indexed = self.engine.snapshot().paths  # a column, not 10k (or 1M) entry objects every rescan
        busy = self.pool.paths() | {r.path for r, _ in self.batch}
        present = set()
        for path in photo_files(catalog, self.config, recursive=True):
            present.add(str(path))
            if str(path) not in indexed and path not in busy:
                self.tracker.observe("scan", path, "catalog")
        self.removed([FileRemoved(Path(p)) for p in indexed if is_inside(Path(p), catalog) and p not in present])

    def pending(self) -> int:
        """Catalog photos known and not yet committed (for the status)."""
        return len(self.pool.waiting) + len(self.pool.inflight) + len(self.batch) + self.events.qsize()


def _lower_priority() -> None:
    """Lower this thread's CPU priority (Linux nice is per thread; threads it starts inherit it)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + CATALOG_LANE_NICE)
    except (OSError, AttributeError):
        pass
