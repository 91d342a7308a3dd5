"""The history of checks on a real SQLite file: once per answer across kills, never blocking, Chinese round-trips."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon_support import QUIET, wait_until
from pipeline.history import (
    Filters, History, HistoryError, check_from_result, check_from_result_file, parse_since, read_csv, write_csv,
    write_json_lines,
)
from pipeline.results import MatchResult, dumps

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=timezone.utc)


def answer(query: str, label: str | None, minutes: int, status: str = "matched", sha: str = "ab" * 32) -> dict:
    created = (T0 + timedelta(minutes=minutes)).isoformat(timespec="milliseconds")
    return MatchResult(query=query, status=status, label=label if status == "matched" else None,  # type: ignore[arg-type]
                       confidence=0.9 if status == "matched" else 0.1, sha256=sha, created_at=created).to_dict()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_append_then_page_filter_and_count_by_label(tmp_path: Path) -> None:
    history = History(tmp_path / "h" / "history.sqlite")
    answers = [("IMG_1.jpg", "大益-7542", 0, "folder"), ("IMG_2.jpg", "下关沱茶", 5, "http"), ("IMG_3.jpg", "大益-7542", 10, "cli"),
               ("IMG_4.jpg", None, 15, "folder")]
    for query, label, minutes, source in answers:
        status = "matched" if label else "no_match"
        assert history.append(check_from_result(answer(query, label, minutes, status), source))

    everything = history.page()
    assert everything.total == 4 and [c.query for c in everything.items] == ["IMG_4.jpg", "IMG_3.jpg", "IMG_2.jpg", "IMG_1.jpg"]
    page = history.page(Filters(label="大益-7542"), offset=1, limit=1)
    assert page.total == 2 and [c.query for c in page.items] == ["IMG_1.jpg"]
    assert [c.query for c in history.page(Filters(since=T0 + timedelta(minutes=5), until=T0 + timedelta(minutes=15))).items] == ["IMG_3.jpg", "IMG_2.jpg"]
    assert [c.query for c in history.page(Filters(status="no_match")).items] == ["IMG_4.jpg"]
    assert [c.source for c in history.page(Filters(source="http")).items] == ["http"]
    checks = history.label_checks("大益-7542")
    assert checks is not None and checks.count == 2
    assert (checks.first_at, checks.last_at) == ("2024-05-01T08:00:00.000+00:00", "2024-05-01T08:10:00.000+00:00")
    assert history.label_checks("nobody").count == 0  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        history.page(limit=0)
    mode = sqlite3.connect(history.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_the_same_answer_appended_twice_is_one_row(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    result_file = outbox / "IMG_1.json"
    result_file.write_text(dumps(answer("IMG_1.jpg", "易武", 0), indent=2), encoding="utf-8")
    history = History(tmp_path / "history.sqlite")
    assert history.append(check_from_result_file(result_file))
    assert history.append(check_from_result_file(result_file))
    assert history.page().total == 1
    # The same photo answered again is another check (another result file and time).
    again = outbox / "IMG_1-1.json"
    again.write_text(dumps(answer("IMG_1.jpg", "易武", 1), indent=2), encoding="utf-8")
    history.append(check_from_result_file(again))
    assert history.page().total == 2


WRITER = """
import sys, time
from pathlib import Path
from pipeline.history import History, check_from_result_file
from pipeline.results import MatchResult, write_json_atomic
outbox, db = Path(sys.argv[1]), Path(sys.argv[2])
history = History(db)
for i in range(100000):
    path = outbox / f"IMG_{i:05d}.json"
    write_json_atomic(path, MatchResult(query=f"普洱_{i}.jpg", status="matched", label=f"茶饼-{i % 7}", confidence=0.9).to_json())
    history.append(check_from_result_file(path))
"""


def test_sigkill_and_replay_leaves_exactly_one_row_per_answer(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    db = tmp_path / "state" / "history.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(outbox), str(db)], env={**os.environ, **QUIET})
    try:
        wait_until(lambda: len(list(outbox.glob("*.json"))) >= 60, 120, "60 answers written")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    answered = sorted(p for p in outbox.glob("*.json"))
    history = History(db)
    stored_before = history.page().total
    assert stored_before in (len(answered), len(answered) - 1)  # the kill may fall between the result and its row
    # The restarted daemon replays every answer it finds (its journal's recovery): no row is doubled, none is missing.
    for path in answered:
        history.append(check_from_result_file(path))
    rows = history.checks()
    assert len(rows) == len(answered) == len({r.key for r in rows})
    assert {r.result_path for r in rows} == {str(p) for p in answered}
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_locked_database_never_blocks_the_answer_and_the_check_arrives_later(tmp_path: Path) -> None:
    clock = Clock()
    history = History(tmp_path / "history.sqlite", busy_timeout_s=0.05, clock=clock)
    history.append(check_from_result(answer("IMG_0.jpg", "勐海", 0), "folder"))
    locker = sqlite3.connect(history.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    outcome: list[bool] = []
    with capture_logs() as logs:
        worker = threading.Thread(target=lambda: outcome.extend(
            history.append(check_from_result(answer(f"IMG_{i}.jpg", "勐海", i), "http")) for i in (1, 2)))
        worker.start()
        worker.join(30)
        assert not worker.is_alive(), "append blocked on a locked database"
    assert outcome == [False, False] and history.pending == 2
    assert [e["event"] for e in logs] == ["history_write_failed"]  # said once, not per answer
    assert "locked" in history.health()["error"] and history.health()["ok"] is False
    locker.execute("ROLLBACK")
    locker.close()
    assert history.flush() == 2  # still backing off: nothing tried yet
    clock.now += 61
    assert history.flush() == 0 and history.pending == 0 and not history.spool.exists()
    assert [c.query for c in history.checks()] == ["IMG_0.jpg", "IMG_1.jpg", "IMG_2.jpg"]
    assert history.health() == {"path": str(history.path), "ok": True, "pending": 0, "error": None}


def test_a_broken_database_is_reported_and_the_spool_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite"
    db.write_bytes(b"this is not a database, it was overwritten" * 100)
    history = History(db, clock=Clock())
    assert history.append(check_from_result(answer("IMG_1.jpg", "景迈", 0), "folder")) is False
    assert "not a database" in history.health()["error"]
    with pytest.raises(HistoryError):
        history.page()
    assert history.label_checks("景迈") is None
    # A new process (restart) finds the spool; once the file is moved aside, the check is stored.
    with open(history.spool, "a", encoding="utf-8") as fh:
        fh.write('{"key": "cut-short-by-a-ki')  # a line a kill cut short
    db.rename(tmp_path / "history.sqlite.broken")
    restarted = History(db)
    assert restarted.pending == 1
    assert restarted.flush() == 0
    (check,) = restarted.checks()
    assert check.label == "景迈" and check.query == "IMG_1.jpg"


def test_csv_and_json_exports_round_trip_chinese_and_odd_names(tmp_path: Path) -> None:
    history = History(tmp_path / "history.sqlite")
    odd = os.fsdecode(b"IMG_\xff\xfe.jpg")  # a name that is not UTF-8
    history.append(check_from_result(answer("普洱茶饼 2019.jpg", "大益-7542", 0), "folder", "/srv/outbox/普洱茶饼 2019.json"))
    history.append(check_from_result(answer(odd, None, 1, "rejected"), "http"))
    history.append(check_from_result(answer("a,\"b\".jpg", "下关", 2), "cli"))
    rows = history.checks()
    assert rows[1].query == "IMG_\\udcff\\udcfe.jpg"

    buffer = io.StringIO()
    write_csv(rows, buffer, bom=True)
    raw = buffer.getvalue().encode("utf-8")
    assert raw.startswith(b"\xef\xbb\xbf") and "大益-7542".encode() in raw
    assert read_csv(io.StringIO(raw.decode("utf-8"))) == rows

    lines = io.StringIO()
    write_json_lines(rows, lines)
    text = lines.getvalue()
    assert "普洱茶饼" in text and "\\u5927" not in text
    assert [json.loads(line)["label"] for line in text.splitlines()] == ["大益-7542", None, "下关"]


def test_parse_since_takes_relative_and_local_times() -> None:
    now = datetime(2024, 5, 8, 12, 0, tzinfo=timezone.utc)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("12h", now) == now - timedelta(hours=12)
    assert parse_since("2024-05-01T08:00+08:00", now) == datetime(2024, 5, 1, 0, 0, tzinfo=timezone.utc)
    local = parse_since("2024-05-01", now)
    assert local.tzinfo is not None and local.replace(tzinfo=None) == datetime(2024, 5, 1)
    with pytest.raises(ValueError, match="7d"):
        parse_since("last week", now)


def test_unknown_source_is_refused() -> None:
    with pytest.raises(ValueError, match="folder, cli, http"):
        check_from_result(answer("a.jpg", "x", 0), "email")


def test_a_restart_replays_a_killed_answer_into_the_history_once(tmp_path: Path, tiny_config_file: Path) -> None:
    """The daemon's order (result JSON, history row, then the journal record dropped) with a kill at either gap."""
    from pipeline.config import load_config
    from pipeline.daemon.journal import Intent, Journal
    from pipeline.engine import Engine
    from pipeline.results import write_json_atomic

    root = tmp_path / "root"
    engine = Engine.load(load_config(tiny_config_file), root, component="daemon")
    journal = Journal(root / ".teaprint" / "journal")
    (root / "outbox").mkdir()

    def answered_until_killed(name: str, noted: bool) -> Path:
        photo = tmp_path / name
        photo.write_bytes(b"not a photo " + name.encode())
        result = engine.match_file(photo)
        result_path = root / "outbox" / f"{photo.stem}.json"
        journal.begin(Intent(str(photo), result.sha256 or "", str(result_path), str(root / "failed" / name)))
        write_json_atomic(result_path, result.to_json(indent=2))
        if noted:
            engine.answered(result, "folder", result_path)
        return result_path  # killed here: the journal record stays

    before_row = answered_until_killed("a.jpg", noted=False)
    after_row = answered_until_killed("b.jpg", noted=True)
    replayed = journal.recover(answered=lambda intent: engine.replayed(Path(intent.result)))
    assert sorted(i.result for i in replayed) == sorted([str(before_row), str(after_row)])
    engine.replayed(before_row)  # a kill inside recovery repeats the call: still one row
    assert journal.recover(answered=lambda intent: engine.replayed(Path(intent.result))) == []
    checks = History(root / ".teaprint" / "history.sqlite").checks()
    assert sorted(c.result_path or "" for c in checks) == sorted([str(before_row), str(after_row)])
    assert [c.status for c in checks] == ["rejected", "rejected"] and {c.source for c in checks} == {"folder"}
