"""The query answerer in-process, with a real engine, journal and files: its one 'published' hook, and the status sections."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import source_photos, write_rgb
from pipeline.config import load_config
from pipeline.daemon.answerer import Answered, QueryAnswerer
from pipeline.daemon.events import FileReady
from pipeline.daemon.folders import DropFolders, FailedFolder
from pipeline.daemon.journal import Intent, Journal
from pipeline.daemon.status import StatusWriter, Tally
from pipeline.engine import Engine


@pytest.fixture
def parts(tmp_path: Path, tiny_config_file: Path) -> tuple[Engine, QueryAnswerer, DropFolders, Journal]:
    config = load_config(tiny_config_file)
    root = tmp_path / "root"
    engine = Engine.load(config, root)
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


def test_every_published_answer_reaches_the_observers_once(parts) -> None:
    engine, answerer, folders, _ = parts
    seen: list[Answered] = []
    answerer.add_observer(seen.append)
    answerer.add_observer(lambda answered: 1 / 0)  # a broken observer costs nothing
    name, rgb = list(source_photos().items())[1]
    good = write_rgb(folders.query / "shot.jpg", rgb)
    bad = folders.query / "bad.jpg"
    bad.write_bytes(b"not a photo")
    events = [ready(good), ready(bad)]
    for event in events:
        answerer.answer(event)
    assert [a.photo.name for a in seen] == ["shot.jpg", "bad.jpg"]
    shot, refused = seen
    assert shot.result == json.loads((folders.outbox / "shot.json").read_text())
    assert shot.result["label"] == name and shot.result["catalog"]["generation"] == engine.snapshot().generation
    assert shot.destination == folders.processed / "shot.jpg" and shot.destination.exists() and not shot.recovered
    assert refused.result["status"] == "rejected" and refused.destination.parent == folders.failed
    assert (folders.failed / "bad.jpg.error.json").exists()
    assert answerer.answer(events[0]) is None and len(seen) == 2  # gone: no second answer


def test_an_answer_finished_by_recovery_reaches_the_observers(parts) -> None:
    _, answerer, folders, journal = parts
    seen: list[Answered] = []
    answerer.add_observer(seen.append)
    # A kill after the result JSON was written, before the photo moved.
    photo = write_rgb(folders.query / "late.jpg", list(source_photos().values())[0])
    result = folders.outbox / "late.json"
    journal.begin(Intent(str(photo), "0" * 64, str(result), str(folders.processed / "late.jpg")))
    result.write_text(json.dumps({"query": "late.jpg", "status": "no_match"}))
    assert [i.photo for i in answerer.recover()] == [str(photo)]
    assert len(seen) == 1 and seen[0].recovered and seen[0].result == {"query": "late.jpg", "status": "no_match"}
    assert not photo.exists() and (folders.processed / "late.jpg").exists()


def test_the_status_file_carries_added_sections(parts, tmp_path: Path, tiny_config_file: Path) -> None:
    engine, _, _, _ = parts
    config = load_config(tiny_config_file)
    writer = StatusWriter(engine.root, config, engine, lambda: {"processed": {"answered": 3}})
    writer.add_section("metrics", lambda: {"answers_total": 3})
    writer.add_section("broken", lambda: 1 / 0)
    with pytest.raises(ValueError, match="taken"):
        writer.add_section("daemon", dict)
    writer.write()
    status = json.loads((engine.root / ".teaprint" / "status.json").read_text())
    assert status["metrics"] == {"answers_total": 3} and "broken" not in status
    assert status["daemon"]["processed"] == {"answered": 3} and status["daemon"]["pid"] == os.getpid()
    assert status["entries"] == 3
