"""Readiness rules with an exact clock, on real files."""

from __future__ import annotations

from pathlib import Path

from pipeline.daemon.events import FileReady
from pipeline.daemon.readiness import ReadinessTracker

PATTERNS = ("*.part", "*.tmp", "*~", ".*")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tracker() -> tuple[ReadinessTracker, list[FileReady], Clock]:
    got: list[FileReady] = []
    clock = Clock()
    return ReadinessTracker(got.append, PATTERNS, stable_s=1.0, settle_s=0.3, clock=clock), got, clock


def test_closed_file_is_ready_at_once(tmp_path: Path) -> None:
    t, got, _ = tracker()
    f = tmp_path / "a.jpg"
    f.write_bytes(b"x" * 10)
    t.observe("created", f, "query")
    t.observe("modified", f, "query")
    t.observe("closed", f, "query")
    assert [(e.path, e.reason) for e in got] == [(f, "closed")]


def test_duplicate_events_give_one_ready(tmp_path: Path) -> None:
    t, got, clock = tracker()
    f = tmp_path / "a.jpg"
    f.write_bytes(b"x" * 10)
    for kind in ("closed", "closed", "moved_in", "scan"):
        t.observe(kind, f, "query")
    clock.now += 5
    t.poll()
    assert len(got) == 1


def test_bare_created_counts_as_moved_in_after_settle(tmp_path: Path) -> None:
    t, got, clock = tracker()
    f = tmp_path / "a.jpg"
    f.write_bytes(b"x" * 10)
    t.observe("created", f, "catalog")
    clock.now += 0.2
    t.poll()
    assert got == []
    clock.now += 0.2
    t.poll()
    assert [e.reason for e in got] == ["created"]


def test_file_still_growing_is_not_ready_until_stable(tmp_path: Path) -> None:
    t, got, clock = tracker()
    f = tmp_path / "a.jpg"
    f.write_bytes(b"x")
    t.observe("created", f, "query")
    for n in range(2, 6):
        clock.now += 0.5
        f.write_bytes(b"x" * n)
        t.observe("modified", f, "query")
        t.poll()
    assert got == []
    clock.now += 0.9
    t.poll()
    assert got == []
    clock.now += 0.2
    t.poll()
    assert [(e.reason, e.size) for e in got] == [("stable", 5)]


def test_partial_names_wait_for_rename(tmp_path: Path) -> None:
    t, got, clock = tracker()
    part = tmp_path / "a.jpg.part"
    part.write_bytes(b"x")
    t.observe("closed", part, "query")
    clock.now += 10
    t.poll()
    assert got == []
    final = tmp_path / "a.jpg"
    part.rename(final)
    t.observe("moved_in", final, "query")
    assert [e.path for e in got] == [final]


def test_rewritten_file_is_ready_again(tmp_path: Path) -> None:
    t, got, _ = tracker()
    f = tmp_path / "a.jpg"
    f.write_bytes(b"x")
    t.observe("closed", f, "catalog")
    f.write_bytes(b"yy")
    t.observe("closed", f, "catalog")
    assert [e.size for e in got] == [1, 2]
