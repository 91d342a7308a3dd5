"""The query answerer in-process, with a real engine, journal, history database and files:
each answer is noted once (history of checks, metrics), live or finished by recovery, and the status file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import source_photos, write_rgb
from pipeline.config import load_config
from pipeline.daemon.answerer import QueryAnswerer
from pipeline.daemon.events import FileReady
from pipeline.daemon.folders import DropFolders, FailedFolder
from pipeline.daemon.journal import Intent, Journal
from pipeline.daemon.status import StatusWriter, Tally
from pipeline.engine import Engine
from pipeline.history import History


@pytest.fixture
def parts(tmp_path: Path, tiny_config_file: Path) -> tuple[Engine, QueryAnswerer, DropFolders, Journal]:
    config = load_config(tiny_config_file)
    root = tmp_path / "root"
    engine = Engine.load(config, root, component="daemon")
    folders = DropFolders.of(root, config)
    photos = list(source_photos().items())
    for name, rgb in photos[:3]:
        write_rgb(folders.catalog / f"{name}-1.jpg", rgb)
    engine.register(engine.describe([engine.prepare(p) for p in sorted(folders.catalog.glob("*.jpg"))], catalog_root=folders.catalog))
    journal = Journal(root / ".teaprint" / "journal")
    answerer = QueryAnswerer(engine, config, folders, journal, FailedFolder(folders.failed), Tally(), engine.serving_snapshot)
    return engine, answerer, folders, journal


def ready(path: Path) -> FileReady:
    st = path.stat()
    return FileReady(path, "query", "closed", st.st_size, st.st_mtime_ns)


def checks(engine: Engine) -> list:
    return History(engine.root / ".teaprint" / "history.sqlite").checks()


def test_every_answer_is_noted_once_in_the_history_and_the_metrics(parts) -> None:
    engine, answerer, folders, _ = parts
    name, rgb = list(source_photos().items())[1]
    good = write_rgb(folders.query / "shot.jpg", rgb)
    bad = folders.query / "bad.jpg"
    bad.write_bytes(b"not a photo")
    events = [ready(good), ready(bad)]
    shot, refused = (answerer.answer(event) for event in events)
    assert shot.result == json.loads((folders.outbox / "shot.json").read_text())
    assert shot.result["label"] == name and shot.result["catalog"]["generation"] == engine.snapshot().generation
    assert shot.destination == folders.processed / "shot.jpg" and shot.destination.exists()
    assert refused.result["status"] == "rejected" and refused.destination.parent == folders.failed
    assert (folders.failed / "bad.jpg.error.json").exists()
    assert answerer.answer(events[0]) is None  # gone: no second answer
    rows = checks(engine)
    assert [(c.query, c.status, c.result_path) for c in rows] == [
        ("shot.jpg", "matched", str(folders.outbox / "shot.json")), ("bad.jpg", "rejected", str(folders.outbox / "bad.json"))]
    metrics = engine.metrics_text(with_daemon=False)
    assert 'teaprint_queries_total{component="daemon",source="folder",status="matched"} 1.0' in metrics
    assert 'teaprint_failed_files_total{code="not_an_image",component="daemon",folder="query"} 1.0' in metrics


@pytest.mark.parametrize("noted_before_kill", [False, True])
def test_an_answer_finished_by_recovery_is_noted_exactly_once(parts, noted_before_kill: bool) -> None:
    engine, answerer, folders, journal = parts
    photo = write_rgb(folders.query / "late.jpg", list(source_photos().values())[0])
    result = engine.match_prepared(engine.prepare(photo, root=folders.query), "late.jpg")
    result_path = folders.outbox / "late.json"
    # A kill after the result JSON was written, before its record went (and, or not, before it was noted).
    journal.begin(Intent(str(photo), result.sha256 or "", str(result_path), str(folders.processed / "late.jpg")))
    result_path.write_text(result.to_json(indent=2))
    if noted_before_kill:
        engine.answered(result, "folder", result_path)
    assert [i.photo for i in answerer.recover()] == [str(photo)]
    assert not photo.exists() and (folders.processed / "late.jpg").exists()
    assert [(c.query, c.result_path, c.at) for c in checks(engine)] == [("late.jpg", str(result_path), result.created_at)]
    assert answerer.recover() == [] and len(checks(engine)) == 1


def test_the_status_file_carries_the_daemon_section_and_the_metrics(parts) -> None:
    engine, _, _, _ = parts
    writer = StatusWriter(engine, lambda: {"processed": {"answered": 3}, "queue": {"query": 2, "catalog": 5}})
    writer.write()
    state = engine.root / ".teaprint"
    status = json.loads((state / "status.json").read_text())
    assert status["daemon"]["processed"] == {"answered": 3} and status["daemon"]["pid"] == os.getpid()
    assert status["daemon"]["running"] is True and status["entries"] == 3
    assert status["metrics"]["backlog"] == {"catalog": 5, "query": 2}
    assert 'teaprint_ingest_backlog{component="daemon",folder="catalog"} 5.0' in (state / "metrics.prom").read_text()
