"""bench/bench_server.py's catalog builder: a kept base is left as a daemon that served it leaves it."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import REPO
from pipeline.config import load_config
from pipeline.engine import Engine
from pipeline.search.votes import FILE as VOTES_FILE

sys.path.insert(0, str(REPO / "bench"))

from bench_server import build_catalog  # noqa: E402


def test_build_catalog_saves_the_vote_store_and_a_kept_base_reuses_it(tmp_path: Path, tiny_config_file: Path) -> None:
    root = tmp_path / "base"
    queries = build_catalog(root, tiny_config_file, 12)
    votes = root / "index" / VOTES_FILE
    assert votes.is_file(), "the base must hold its vote store, or every run on it measures a rebuild"
    assert queries and all(label.startswith("cake") for _, label in queries)

    # A process opening the base (the daemon, the server) takes the store from the file: nothing is rebuilt.
    engine = Engine.load(load_config(tiny_config_file), root)
    snap = engine.serving_snapshot()
    assert len(snap) == 12
    assert engine._votes(snap).opened_from_file == 12  # noqa: SLF001 - what a restart reads, not recomputes

    # Built again on the kept root: the catalog and its store are taken as they are.
    saved = votes.stat().st_mtime_ns
    build_catalog(root, tiny_config_file, 12)
    assert votes.stat().st_mtime_ns == saved
