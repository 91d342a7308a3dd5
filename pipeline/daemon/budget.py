"""One file's work, bounded in time and isolated from the daemon: `prepare_within`.

Runs in the daemon (queries) and in its worker processes (catalog photos), so
it imports nothing heavy. Any failure while decoding and extracting features
of one file comes back as a `Failure` value, never as an exception: a poison
file costs that file, never the daemon or the pool.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pipeline.config import Config
from pipeline.intake import IntakeError
from pipeline.prepare import EncoderInput, Prepared, prepare


@dataclass(frozen=True)
class Failure:
    """Why one file was not taken: a code, one line of reason, and the hash of what was read."""

    code: str
    reason: str
    sha256: str | None = None


class BudgetExceeded(BaseException):
    """The file's time budget ran out.

    A BaseException, like KeyboardInterrupt: decoders' broad `except
    Exception` (Pillow's header parsing) must not turn it into "not an image".
    """


@contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Raise `BudgetExceeded` in this thread once `seconds` of wall time have passed.

    A SIGALRM interval timer: Python runs the handler between bytecodes, so a
    single long C call (one decode) finishes before the budget bites; every
    stage of `prepare` is such a call, so the overrun is at most one stage,
    and intake's pixel and size limits bound each. Only the main thread gets
    signals; elsewhere (and where `setitimer` is missing) no budget applies.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise BudgetExceeded()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def prepare_within(path: Path, config: Config, shape: EncoderInput, root: Path | None, for_catalog: bool = False) -> Prepared | Failure:
    """`prepare` under `daemon.file_budget_s`; any failure as a `Failure`.

    Codes: intake's (see `pipeline.intake.CODES`), "timeout" (over budget),
    "processing_failed" (any other error while decoding or extracting, e.g.
    out of memory or a library error on odd pixels).
    """
    budget = config.daemon.file_budget_s
    try:
        with time_budget(budget):
            return prepare(path, config, shape, root=root, for_catalog=for_catalog)
    except IntakeError as err:
        return Failure(err.code, str(err), err.sha256)
    except BudgetExceeded:
        return Failure("timeout", f"{path.name}: decoding and feature extraction took more than {budget:g} s (daemon.file_budget_s)")
    except Exception as exc:  # noqa: BLE001 - the point: nothing about one file may stop the daemon
        return Failure("processing_failed", f"{path.name}: processing failed: {type(exc).__name__}: {exc}")
