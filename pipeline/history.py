"""The history of checks: every answered query, once, in a SQLite file (WAL).

An anti-counterfeiting desk first asks which cakes were checked where and
when. Each answer (from the drop folder, the CLI or the HTTP API) appends one
`Check` whose `key` is derived from the answer itself (`idempotency_key`), so
appending the same answer again (a daemon killed after writing the result
JSON and restarted, replaying its journal) is a no-op: `INSERT OR IGNORE` on a
unique key.

The history never blocks answering. `History.append` never raises: when the
database is locked past a short busy timeout, unwritable or broken, the check
goes to a pending spool (`<db>.pending.jsonl`, appended and fsynced; in memory
if even that fails), the failure is logged once, and writes are retried with
backoff (1 s doubling to 60 s) on the next append or `flush`; the spool is
emptied into the database in one transaction when it works again. Replaying
a spool twice is harmless for the same reason as above.

Times are stored as the answer's ISO 8601 UTC text (`at`) and as integer
microseconds since the epoch (`at_us`) for ordering and ranges.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TextIO

import structlog

from pipeline.config import Config
from pipeline.results import dumps, escape_surrogates

log = structlog.get_logger("teaprint.history")

SOURCES = ("folder", "cli", "http")
SCHEMA_VERSION = 1
MAX_PAGE = 500
_BACKOFF_S = (1.0, 60.0)
_RELATIVE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checks (
  id INTEGER PRIMARY KEY,
  key TEXT NOT NULL UNIQUE,
  at TEXT NOT NULL,
  at_us INTEGER NOT NULL,
  source TEXT NOT NULL,
  query TEXT NOT NULL,
  sha256 TEXT,
  status TEXT NOT NULL,
  label TEXT,
  confidence REAL NOT NULL,
  result_path TEXT,
  error_code TEXT
);
CREATE INDEX IF NOT EXISTS checks_at ON checks(at_us);
CREATE INDEX IF NOT EXISTS checks_label_at ON checks(label, at_us);
"""


class HistoryError(RuntimeError):
    """The history cannot be read now (locked, unreadable or broken database)."""


@dataclass(frozen=True)
class Check:
    """One answered query. Text fields hold lone surrogates (non-UTF-8 names) as `\\udcXX` escapes."""

    key: str
    at: str
    source: str
    query: str
    sha256: str | None
    status: str
    label: str | None
    confidence: float
    result_path: str | None = None
    error_code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS = tuple(f.name for f in fields(Check))
EXPORT_COLUMNS = ("at", "source", "query", "status", "label", "confidence", "sha256", "result_path", "error_code", "key")  # for people: when first


@dataclass(frozen=True)
class LabelChecks:
    """How often a cake was identified (status matched), and when first and last."""

    label: str
    count: int
    first_at: str | None
    last_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "first_at": self.first_at, "last_at": self.last_at}


@dataclass(frozen=True)
class HistoryPage:
    total: int
    offset: int
    limit: int
    items: tuple[Check, ...]


@dataclass(frozen=True)
class Filters:
    """Which checks: all given conditions hold (`since` inclusive, `until` exclusive)."""

    label: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    status: str | None = None
    source: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        terms: list[str] = []
        args: list[Any] = []
        for column, value in (("label", self.label), ("status", self.status), ("source", self.source)):
            if value is not None:
                terms.append(f"{column} = ?")
                args.append(_storable(value))
        if self.since is not None:
            terms.append("at_us >= ?")
            args.append(_micros(self.since))
        if self.until is not None:
            terms.append("at_us < ?")
            args.append(_micros(self.until))
        return (" WHERE " + " AND ".join(terms)) if terms else "", args


# ---------------------------------------------------------------- checks from answers
def idempotency_key(source: str, result: Mapping[str, Any], result_path: str | None = None) -> str:
    """The key of one answer: same answer, same key, however often it is appended.

    Built from the source, where the result was written (unique per answer in
    the outbox), and the result's own query, sha256 and `created_at` (ms).
    A front-end with no result file and possibly two answers in one
    millisecond (HTTP) passes its own request id as `Check.from_result(key=)`.
    """
    parts = (source, result_path or "", str(result.get("query")), str(result.get("sha256")), str(result.get("created_at")))
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def check_from_result(result: Mapping[str, Any], source: str, result_path: str | Path | None = None, key: str | None = None) -> Check:
    """The `Check` of one result object (`MatchResult.to_dict()` or a result JSON file's content)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    path = None if result_path is None else str(result_path)
    return Check(
        key=key or idempotency_key(source, result, path),
        at=str(result["created_at"]),
        source=source,
        query=str(result["query"]),
        sha256=result.get("sha256"),
        status=str(result["status"]),
        label=result.get("label"),
        confidence=float(result.get("confidence") or 0.0),
        result_path=path,
        error_code=result.get("error_code"),
    )


def check_from_result_file(path: Path, source: str = "folder") -> Check:
    """The `Check` of a result JSON file in the outbox (journal replay after a restart)."""
    return check_from_result(json.loads(Path(path).read_text(encoding="utf-8")), source, str(path))


# ---------------------------------------------------------------- the store
def history_at(root: Path, config: Config) -> "History":
    """The history of checks of a root (`history.path`, relative to `root` unless absolute)."""
    return History(Path(root) / config.history.path, config.history.busy_timeout_s)


class History:
    """The checks database at `path` with its pending spool beside it.

    Parameters
    ----------
    path : Path
        The SQLite file (created with its folder on first write).
    busy_timeout_s : float
        How long one write waits for a lock held by another process, in s.
    clock : callable
        Monotonic seconds, for the retry backoff.
    """

    def __init__(self, path: Path, busy_timeout_s: float = 0.25, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.spool = self.path.with_name(self.path.name + ".pending.jsonl")
        self.busy_timeout_s = busy_timeout_s
        self._clock = clock
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._memory: list[Check] = []
        self._failures = 0
        self._retry_at = 0.0
        self.last_error: str | None = None

    # ------------------------------------------------------------ writing
    def append(self, check: Check) -> bool:
        """Record one check; True if it is in the database now, False if it waits in the spool. Never raises."""
        with self._lock:
            if self._clock() < self._retry_at:
                self._queue(check)
                return False
            try:
                self._insert([*self._pending(), check])
            except (sqlite3.Error, OSError) as exc:
                self._failed(exc)
                self._queue(check)
                return False
            self._clear_pending()
            return True

    def flush(self, force: bool = False) -> int:
        """Retry the pending checks (for a periodic timer) once the backoff allows, or now with `force`.

        Returns how many still wait. Never raises.
        """
        with self._lock:
            waiting = self._pending()
            if not waiting or (not force and self._clock() < self._retry_at):
                return len(waiting)
            try:
                self._insert(waiting)
            except (sqlite3.Error, OSError) as exc:
                self._failed(exc)
                return len(waiting)
            self._clear_pending()
            return 0

    @property
    def pending(self) -> int:
        """Checks waiting for the database (spool and memory)."""
        with self._lock:
            return len(self._pending())

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ------------------------------------------------------------ reading
    def page(self, filters: Filters = Filters(), offset: int = 0, limit: int = 50) -> HistoryPage:
        """One page of checks, newest first, and how many match in all.

        Raises
        ------
        HistoryError
            When the database cannot be read now.
        """
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"offset must be >= 0 and limit 1..{MAX_PAGE}, got {offset}, {limit}")
        where, args = filters.where()
        with self._reading() as conn:
            total = conn.execute(f"SELECT COUNT(*) FROM checks{where}", args).fetchone()[0]
            rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM checks{where} ORDER BY at_us DESC, id DESC LIMIT ? OFFSET ?",
                                [*args, limit, offset]).fetchall()
        return HistoryPage(int(total), offset, limit, tuple(Check(*row) for row in rows))

    def checks(self, filters: Filters = Filters()) -> list[Check]:
        """Every matching check, oldest first (for export). Raises `HistoryError` like `page`."""
        where, args = filters.where()
        with self._reading() as conn:
            rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM checks{where} ORDER BY at_us, id", args).fetchall()
        return [Check(*row) for row in rows]

    def label_checks(self, label: str) -> LabelChecks | None:
        """How often and when `label` was identified; None when the database cannot be read now. Never raises."""
        try:
            with self._reading() as conn:
                count, first, last = conn.execute(
                    "SELECT COUNT(*), MIN(at_us), MAX(at_us) FROM checks WHERE label = ? AND status = 'matched'",
                    [_storable(label)]).fetchone()
                at = dict(conn.execute("SELECT at_us, at FROM checks WHERE label = ? AND status = 'matched' AND at_us IN (?, ?)",
                                       [_storable(label), first, last]).fetchall())
        except HistoryError:
            return None
        return LabelChecks(label, int(count), at.get(first), at.get(last))

    def health(self) -> dict[str, Any]:
        """For status and doctor: the file, whether the last write worked, pending checks, the last error."""
        with self._lock:
            return {"path": str(self.path), "ok": self._failures == 0, "pending": len(self._pending()), "error": self.last_error}

    # ------------------------------------------------------------ internals
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, check_same_thread=False, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")  # a committed check survives a power cut, not only a kill
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            except sqlite3.Error:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _insert(self, checks: list[Check]) -> None:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                f"INSERT OR IGNORE INTO checks ({', '.join(COLUMNS)}, at_us) VALUES ({', '.join('?' * (len(COLUMNS) + 1))})",
                [(*(_storable(getattr(c, name)) for name in COLUMNS), _micros(_parse_time(c.at))) for c in checks],
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection under the lock; any SQLite or file error becomes `HistoryError`."""
        with self._lock:
            try:
                conn = self._connection()  # an absent history opens as an empty one
            except (sqlite3.Error, OSError) as exc:
                raise HistoryError(f"history {self.path}: {exc}") from None
            try:
                yield conn
            except sqlite3.Error as exc:
                self.close()
                raise HistoryError(f"history {self.path}: {exc}") from None

    def _failed(self, exc: BaseException) -> None:
        """Log the first failure of a streak, drop a broken connection, back off."""
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self._failures == 0:
            log.error("history_write_failed", path=str(self.path), error=self.last_error, pending=len(self._pending()) + 1)
        self._failures += 1
        self.close()
        low, high = _BACKOFF_S
        self._retry_at = self._clock() + min(high, low * 2 ** (self._failures - 1))

    def _queue(self, check: Check) -> None:
        try:
            with open(self.spool, "a", encoding="utf-8") as fh:
                fh.write(dumps(check.to_dict()) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            self._memory.append(check)

    def _pending(self) -> list[Check]:
        return [*_read_spool(self.spool), *self._memory]

    def _clear_pending(self) -> None:
        if self._failures:
            log.info("history_write_recovered", path=str(self.path), failures=self._failures)
        self._failures = 0
        self._retry_at = 0.0
        self.last_error = None
        self._memory.clear()
        try:
            os.unlink(self.spool)
        except FileNotFoundError:
            pass


def _read_spool(spool: Path) -> list[Check]:
    """Checks in the spool; a line cut short by a kill is skipped."""
    try:
        text = spool.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(Check(**json.loads(line)))
        except (ValueError, TypeError):
            log.warning("history_spool_line_skipped", spool=str(spool), line=line[:200])
    return out


# ---------------------------------------------------------------- export
def write_csv(checks: Iterable[Check], stream: TextIO, bom: bool = False) -> None:
    """Checks as CSV with a header row, UTF-8 text as is (`bom` for Excel, which otherwise guesses the encoding)."""
    if bom:
        stream.write("\ufeff")
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for check in checks:
        writer.writerow(["" if v is None else v for v in (getattr(check, name) for name in EXPORT_COLUMNS)])


def read_csv(stream: TextIO) -> list[Check]:
    """Checks back from `write_csv` output (empty cells are None)."""
    rows = csv.DictReader(stream)
    out = []
    for row in rows:
        values = {k.lstrip("\ufeff"): (v if v != "" else None) for k, v in row.items()}
        values["confidence"] = float(values["confidence"] or 0.0)
        out.append(Check(**values))
    return out


def write_json_lines(checks: Iterable[Check], stream: TextIO) -> None:
    """One JSON object per line, UTF-8 text as is (Chinese is written, not `\\u` escaped)."""
    for check in checks:
        stream.write(dumps(check.to_dict()) + "\n")


# ---------------------------------------------------------------- times
def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A point in time from `7d`, `12h`, `30m`, `2w` (ago) or an ISO date/time.

    A date or time without a zone is local time (`2024-05-01` is local
    midnight), as a shop's staff mean it.

    Raises
    ------
    ValueError
        For anything else, saying what is accepted.
    """
    now = now or datetime.now(timezone.utc)
    match = _RELATIVE.match(text)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a time: use e.g. 7d, 12h, 30m, 2024-05-01 or 2024-05-01T08:00+08:00") from None
    return moment if moment.tzinfo else moment.astimezone()


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _micros(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _storable(value: Any) -> Any:
    """Text SQLite can hold: a lone surrogate (a non-UTF-8 file name byte) as its `\\udcXX` escape."""
    return escape_surrogates(value) if isinstance(value, str) else value
