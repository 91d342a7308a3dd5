"""Every path that writes a catalog entry stores every descriptor the matcher needs.

CLI `index`, the daemon's add and rename, the server's upload and `reembed`
all go through the catalog's one writer; each is exercised here with its
front-end's own code (in process, real files, a real tiny model) and the
stored entries are checked field by field.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from conftest import source_photos, write_rgb
from pipeline.catalog import CatalogEntry, CatalogIndex, EntryError, NewEntry
from pipeline.cli import main
from pipeline.config import load_config


def assert_complete(entry: CatalogEntry, dim: int, bins: int) -> None:
    """What the matcher reads of an entry: a unit embedding, an LBP histogram, keypoints."""
    assert entry.embedding.shape == (dim,) and np.isfinite(entry.embedding).all(), entry.path
    assert abs(float(np.linalg.norm(entry.embedding)) - 1.0) < 1e-3, entry.path
    assert entry.lbp.shape == (bins,) and np.isfinite(entry.lbp).all() and entry.lbp.sum() > 0, entry.path
    assert entry.local is not None and len(entry.local) > 0, f"{entry.path}: no keypoints"
    assert entry.local.descriptors.dtype == np.uint8 and entry.local.points.shape == (len(entry.local), 2), entry.path
    assert entry.model_id and entry.added_at > 0 and Path(entry.path).is_absolute(), entry.path


def test_every_front_end_path_stores_complete_entries(tmp_path: Path, tiny_config_file: Path) -> None:
    from pipeline.daemon.budget import prepare_within
    from pipeline.daemon.events import FileReady, FileRenamed
    from pipeline.daemon.service import Daemon
    from pipeline.engine import Engine
    from pipeline.server.service import TeaprintService, Upload

    config = load_config(tiny_config_file)
    root = tmp_path / "root"
    photos = list(source_photos().items())
    index = lambda: CatalogIndex(root / "index").entries()  # noqa: E731

    # CLI index
    for name, rgb in photos[:2]:
        write_rgb(tmp_path / "cli" / f"{name}-1.jpg", rgb)
    assert main(["--config", str(tiny_config_file), "--root", str(root), "index", str(tmp_path / "cli")]) == 0
    written = {"cli": {e.sha256 for e in index()}}

    # daemon: add a dropped photo (through its batch commit), then rename it
    engine = Engine.load(config, root)
    daemon = Daemon(root, config, engine)
    name, rgb = photos[2]
    dropped = write_rgb(daemon.catalog_dir / f"{name}-1.jpg", rgb)
    prepared = prepare_within(dropped, config, engine.encoder_input, daemon.catalog_dir)
    daemon.batch = [(FileReady(dropped, "catalog", "scan", dropped.stat().st_size, dropped.stat().st_mtime_ns), prepared)]
    daemon.commit_batch()
    renamed = daemon.catalog_dir / "moved" / "x.jpg"
    renamed.parent.mkdir()
    dropped.rename(renamed)
    daemon.renamed(FileRenamed(dropped, renamed))
    stored = {e.path: e for e in index()}
    assert stored[str(renamed)].label == "moved" and str(dropped) not in stored
    written["daemon"] = {stored[str(renamed)].sha256}

    # server upload
    service = TeaprintService(config, root, engine)
    name, rgb = photos[3]
    data = write_rgb(tmp_path / "up" / f"{name}.jpg", rgb).read_bytes()
    report = service.register([Upload(io.BytesIO(data), f"{name}-front.jpg")], None)
    assert len(report.added) == 1 and not report.failed
    written["server"] = {report.added[0].sha256}

    entries = index()
    assert {s for shas in written.values() for s in shas} == {e.sha256 for e in entries}
    dim, bins = entries[0].embedding.size, entries[0].lbp.size
    for entry in entries:
        assert_complete(entry, dim, bins)

    # reembed rewrites every entry: each is still complete, paths, labels and times kept
    before = {e.sha256: e for e in entries}
    assert main(["--config", str(tiny_config_file), "--root", str(root), "reembed"]) == 0
    after = index()
    assert {e.sha256 for e in after} == set(before)
    for entry in after:
        assert_complete(entry, dim, bins)
        old = before[entry.sha256]
        assert (entry.path, entry.label, entry.added_at) == (old.path, old.label, old.added_at)


def test_the_writer_refuses_an_entry_the_matcher_could_not_use(tmp_path: Path) -> None:
    from pipeline.catalog import CatalogWriter

    writer = CatalogWriter(CatalogIndex(tmp_path / "idx", model_id="m1"), "m1", require_local=True)
    sha = "ab" * 32
    unit = np.ones(4, np.float32) / 2
    with pytest.raises(EntryError, match="keypoints"):
        writer.register([NewEntry(sha, "/x/a-1.jpg", "a", unit, np.ones(3, np.float32))])
    with pytest.raises(EntryError, match="embedding"):
        writer.register([NewEntry(sha, "/x/a-1.jpg", "a", np.full(4, np.nan, np.float32), np.ones(3, np.float32))])
    with pytest.raises(EntryError, match="sha256"):
        writer.register([NewEntry("nothex", "/x/a-1.jpg", "a", unit, np.ones(3, np.float32))])
    assert len(writer.snapshot()) == 0
