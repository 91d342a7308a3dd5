"""The worker processes that decode catalog photos and extract their features.

`PreparePool` owns the photos waiting for a worker and those in flight. A
poison file costs that file only: `prepare_within` turns every error into a
`Failure`; a worker that dies (a crash in a decoder, an out-of-memory kill)
or hangs in one C call is ended and the pool replaced, and the file at fault
comes back as a `Failure` while the innocent ones are re-run.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable

import structlog

from pipeline.config import Config
from pipeline.daemon.budget import Failure, prepare_within
from pipeline.daemon.events import FileReady
from pipeline.prepare import EncoderInput, Prepared
from pipeline.threads import limit_blas_threads

log = structlog.get_logger("teaprint.daemon")

Outcome = tuple[FileReady, Prepared | Failure]
WORKER_NICE = 10  # workers' priority below the daemon's query lane


class PreparePool:
    """Catalog photos waiting for a worker, in flight, and the worker processes.

    Parameters
    ----------
    config : Config
    shape : EncoderInput
        The loaded encoder's input, for `prepare`.
    catalog_dir : Path
        Links must stay inside it.
    clock : callable
        Monotonic seconds.
    """

    def __init__(self, config: Config, shape: EncoderInput, catalog_dir: Path,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.shape = shape
        self.catalog_dir = catalog_dir
        self.clock = clock
        self.workers = max(1, config.daemon.workers)
        self.waiting: deque[FileReady] = deque()
        self.inflight: deque[tuple[FileReady, Future]] = deque()
        # Catalog files in flight when a worker process died: re-run one at a
        # time, so the next crash names the file that causes it.
        self.suspects: set[Path] = set()
        self.running_since: dict[Future, float] = {}
        self.closed = False
        # Absolute, from the daemon's own nice: workers started by a thread
        # that already runs at a lower priority must not add to it.
        self.worker_nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICE)
        self.executor = self._new_executor()

    # ------------------------------------------------------------- lifecycle
    def warm_up(self) -> list[Future]:
        """Start every worker now (spawn and imports), not on the first photo."""
        return [self.executor.submit(_worker_ready) for _ in range(self.workers)]

    def shutdown(self) -> None:
        """End the workers now: what they hold is not committed and is indexed again after a restart.

        Waiting for them would hold a stop for up to a file's budget.
        """
        self.closed = True
        self._kill(self.executor)

    def _new_executor(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")  # native libraries' threads don't survive fork
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=context, initializer=_worker_init,
                                   initargs=(os.getpid(), self.worker_nice))

    def _replace(self) -> None:
        """A worker died or hangs: end the pool's processes and start a fresh pool (not once shut down)."""
        self._kill(self.executor)
        if not self.closed:
            self.executor = self._new_executor()
        self.running_since.clear()

    @staticmethod
    def _kill(executor: ProcessPoolExecutor) -> None:
        for process in list((getattr(executor, "_processes", None) or {}).values()):  # no public way to end one task
            if process.is_alive():
                process.kill()
        executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------- counts
    def add(self, ready: FileReady) -> None:
        self.waiting.append(ready)

    def finished(self) -> int:
        """Photos in flight, in order, whose work is done (collectable now)."""
        n = 0
        for _, future in self.inflight:
            if not future.done():
                break
            n += 1
        return n

    def paths(self) -> set[Path]:
        """Every file waiting or in flight."""
        return {r.path for r in self.waiting} | {r.path for r, _ in self.inflight}

    # ------------------------------------------------------------- work
    def submit(self, count: int) -> list[Outcome]:
        """Give up to `count` waiting photos to the workers; failures of a broken pool come back."""
        for _ in range(count):
            if not self.waiting:
                break
            ready = self.waiting.popleft()
            try:
                future = self.executor.submit(prepare_within, ready.path, self.config, self.shape, self.catalog_dir, for_catalog=True)
            except BrokenProcessPool:
                self.waiting.appendleft(ready)
                return self._broke()
            self.inflight.append((ready, future))
        return []

    def collect(self) -> list[Outcome]:
        """Finished photos, in the order they were given, and the files a crash or a hang is blamed on."""
        out: list[Outcome] = []
        while self.inflight and self.inflight[0][1].done():
            ready, future = self.inflight[0]
            try:
                outcome = future.result()
            except BrokenProcessPool:
                return out + self._broke()
            except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be unpickled
                outcome = Failure("processing_failed", f"{ready.path.name}: processing failed: {type(exc).__name__}: {exc}")
            self.inflight.popleft()
            self.running_since.pop(future, None)
            self.suspects.discard(ready.path)
            out.append((ready, outcome))
        return out

    def _broke(self) -> list[Outcome]:
        """A worker process died: the file alone in flight is the cause; several are re-run one by one.

        An innocent file is never failed for another's crash.
        """
        flight = [ready for ready, _ in self.inflight]
        self.inflight.clear()
        self._replace()
        out: list[Outcome] = []
        if len(flight) == 1 or (flight and flight[0].path in self.suspects):
            culprit = flight.pop(0)
            self.suspects.discard(culprit.path)
            out.append((culprit, Failure("worker_crashed", f"{culprit.path.name}: the worker process died while decoding this file")))
        self.suspects.update(r.path for r in flight)
        self.waiting.extendleft(reversed(flight))
        log.warning("worker_crashed", requeued=len(flight))
        return out

    def check_stalled(self) -> list[Outcome]:
        """A worker past twice the file budget is stuck in one call: end it, fail its file."""
        budget = self.config.daemon.file_budget_s
        if budget <= 0 or not self.inflight:
            return []
        now = self.clock()
        for _, future in self.inflight:
            if future.running():
                self.running_since.setdefault(future, now)
        # The budget is enforced inside the worker; this catches only a call
        # that never returns to Python (the margin covers the one queued task).
        hard = 2 * budget + 5.0
        stalled = [(r, f) for r, f in self.inflight if not f.done() and now - self.running_since.get(f, now) > hard]
        if not stalled:
            return []
        flight = [r for r, f in self.inflight if not f.done() and (r, f) not in stalled]
        self.inflight = deque((r, f) for r, f in self.inflight if f.done())
        self._replace()
        self.waiting.extendleft(reversed(flight))
        return [(r, Failure("timeout", f"{r.path.name}: decoding took more than {hard:g} s; the worker was ended")) for r, _ in stalled]


def _worker_init(daemon_pid: int, nice: int) -> None:
    """Catalog workers yield the CPU to queries and die with the daemon.

    Lower priority: queries are prepared in the daemon process, and with both
    cores busy decoding a catalog burst they waited ~10 s at equal priority.
    PR_SET_PDEATHSIG: without it, workers of a SIGKILLed daemon lived on. It
    only covers a parent alive when it is set: a daemon killed while this
    worker was still starting (a spawn takes seconds on a loaded machine)
    has already left it to init, so the worker checks and exits.
    """
    import ctypes
    import signal
    import sys

    if os.getpriority(os.PRIO_PROCESS, 0) < nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != daemon_pid:
        os._exit(1)
    limit_blas_threads()  # inherited through the environment already, unless the daemon started the pool first


def _worker_ready() -> bool:
    import pipeline.daemon.budget  # noqa: F401  (the import is the warm-up)

    return True
