"""The real daemon, as a subprocess, with a real observer on temp folders."""

from __future__ import annotations

import json
import os
import random
from collections import Counter
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from conftest import rendered_cakes
from daemon_support import QUIET, DaemonProcess, alive, children, distinct_photos, jpeg_bytes, results, root, wait_until, write_slowly  # noqa: F401 (root: fixture)
from pipeline.catalog import CatalogIndex
from pipeline.history import History
from pipeline.results import load_schema

SCHEMA = load_schema()


def drop_burst(root: Path, staging: Path, n_catalog: int, n_query: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Drop catalog photos and queries at once: copied, moved in, renamed from .part, written slowly."""
    rng = random.Random(seed)
    photos = distinct_photos(n_catalog + 5, seed=seed)
    staging.mkdir(parents=True, exist_ok=True)
    catalog_names = [f"c{i:04d}-1.jpg" for i in range(n_catalog)]
    query_names = [f"q{i:04d}.jpg" for i in range(n_query)]
    jobs: list[tuple[Path, bytes]] = [(root / "inbox/catalog" / n, jpeg_bytes(photos[i])) for i, n in enumerate(catalog_names)]
    for i, name in enumerate(query_names):
        source = photos[i % (n_catalog + 5)] if i % 10 else photos[n_catalog + (i // 10) % 5]
        jobs.append((root / "inbox/query" / name, jpeg_bytes(source[::-1].copy(), quality=80)))
    rng.shuffle(jobs)
    writers = []
    for k, (dest, data) in enumerate(jobs):
        how = k % 4
        if how == 0:  # copied in place
            dest.write_bytes(data)
        elif how == 1:  # moved in from another folder
            tmp = staging / dest.name
            tmp.write_bytes(data)
            shutil.move(str(tmp), str(dest))
        elif how == 2:  # downloaded as .part then renamed
            part = dest.with_name(dest.name + ".part")
            part.write_bytes(data)
            part.rename(dest)
        elif len(writers) < 8:  # written slowly over ~2 s, held open
            writers.append(write_slowly(dest, data, seconds=2.0))
        else:
            dest.write_bytes(data)
    for w in writers:
        w.join()
    return catalog_names, query_names


def assert_all_answered_once(root: Path, query_names: list[str]) -> None:
    got = results(root / "outbox")
    for r in got:
        jsonschema.validate(r, SCHEMA)
    answered = sorted(r["query"] for r in got)
    assert answered == sorted(query_names), "every query exactly one JSON"
    assert not list((root / "inbox/query").glob("*.jpg"))
    assert sorted(p.name for p in (root / "outbox/processed").glob("*.jpg")) == sorted(query_names)


def test_burst_every_query_answered_once(root: Path, tmp_path: Path, tiny_config_file: Path) -> None:
    daemon = DaemonProcess(root, tiny_config_file).start()
    try:
        catalog_names, query_names = drop_burst(root, tmp_path / "staging", n_catalog=200, n_query=50)
        wait_until(lambda: len(list((root / "outbox").glob("*.json"))) >= 50, 240, "50 results")
        wait_until(lambda: len(CatalogIndex(root / "index")) >= 200, 120, "200 catalog entries")
        time.sleep(1.5)  # room for any duplicate answer to show up
        assert_all_answered_once(root, query_names)
        assert {Path(e.path).name for e in CatalogIndex(root / "index").entries()} == set(catalog_names)
        kinds = {e.get("ready") for e in daemon.events() if e.get("event") == "query"}
        assert {"closed", "moved_in"} <= kinds
    finally:
        assert daemon.signal(signal.SIGTERM) == 0


def test_sigkill_mid_burst_then_restart_loses_nothing(root: Path, tmp_path: Path, tiny_config_file: Path) -> None:
    daemon = DaemonProcess(root, tiny_config_file).start()
    catalog_names, query_names = drop_burst(root, tmp_path / "staging", n_catalog=120, n_query=40, seed=3)
    wait_until(lambda: len(list((root / "outbox").glob("*.json"))) >= 8, 120, "some answers")
    # The catalog workers run below the query lane (an absolute nice 10 above the daemon's) and die with it.
    assert daemon.proc is not None
    daemon_nice = os.getpriority(os.PRIO_PROCESS, daemon.proc.pid)
    workers = lambda: {pid: nice for pid, (nice, cmd) in children(daemon.proc.pid).items() if "spawn_main" in cmd}  # noqa: E731
    # A worker sets its priority once its imports are done (seconds on a loaded machine).
    wait_until(lambda: workers() and set(workers().values()) == {min(19, daemon_nice + 10)}, 60, "workers at nice +10")
    started = workers()
    daemon.signal(signal.SIGKILL)
    wait_until(lambda: not any(alive(pid) for pid in started), 30, "the killed daemon's workers to exit")
    mid = len(list((root / "outbox").glob("*.json")))
    assert mid < 40, "the kill should land mid-burst"
    restarted = DaemonProcess(root, tiny_config_file).start()
    try:
        wait_until(lambda: len(list((root / "outbox").glob("*.json"))) >= 40, 240, "40 results")
        # Every catalog photo ends registered, or moved aside with its reason (the cake locator, on by default,
        # sees two cakes in some of these arbitrary crops): none lost, none registered twice.
        refused = lambda: {p.name for p in (root / "inbox/failed").glob("c*.jpg")}  # noqa: E731
        wait_until(lambda: len(CatalogIndex(root / "index")) + len(refused()) >= 120, 120, "120 catalog photos handled")
        time.sleep(1.5)
        assert_all_answered_once(root, query_names)
        registered = [Path(e.path).name for e in CatalogIndex(root / "index").entries()]
        assert len(registered) == len(set(registered)) and len(registered) >= 100
        assert sorted(p.name for p in (root / "inbox/catalog").iterdir()) == sorted(registered)
        assert set(registered) | refused() == set(catalog_names) and not set(registered) & refused()
        for name in refused():
            assert json.loads((root / "inbox/failed" / f"{name}.error.json").read_text())["code"] == "several_cakes"
    finally:
        assert restarted.signal(signal.SIGTERM) == 0
    # The history of checks: exactly one row per answer, the kill and the restart notwithstanding.
    checks = History(root / ".teaprint" / "history.sqlite").checks()
    assert sorted(c.query for c in checks) == sorted(query_names)
    assert sorted(c.result_path or "" for c in checks) == sorted(str(p) for p in (root / "outbox").glob("*.json"))
    assert {c.source for c in checks} == {"folder"} and not (root / ".teaprint" / "history.sqlite.pending.jsonl").exists()


def metric_values(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_bad_files_deletion_same_stem_single_daemon_and_clean_stop(root: Path, locate_config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny_config_file = locate_config_file  # the cake locator on: a catalog photo of two cakes is refused
    photos = distinct_photos(5, seed=5)
    for i, p in enumerate(photos[:4]):
        (root / "inbox/catalog" / f"k{i}-1.jpg").write_bytes(jpeg_bytes(p))
    # Cake records: a Chinese sidecar beside a cake's photos, a sheet row, and a malformed sidecar.
    (root / "inbox/catalog/普洱-2019").mkdir()
    (root / "inbox/catalog/普洱-2019/正面.jpg").write_bytes(jpeg_bytes(photos[4]))
    (root / "inbox/catalog/普洱-2019/普洱-2019.json").write_text(
        '{"名称": "勐海 7542 青饼", "年份": "2019年", "生产商": "勐海茶厂", "重量": "357克", "仓位": "B-12"}', encoding="utf-8")
    (root / "inbox/catalog/cakes.csv").write_text("标签,名称,年份\nk0,大益 7572,2020\n", encoding="utf-8")
    (root / "inbox/catalog/k1.json").write_text('{"名称": "易武",\n "年份": 2019', encoding="utf-8")
    daemon = DaemonProcess(root, tiny_config_file).start()
    try:
        wait_until(lambda: len(CatalogIndex(root / "index")) == 5, 60, "5 entries")  # k1's photo too, its sidecar broken
        # A second daemon on the same root refuses, clearly.
        second = subprocess.run(
            [sys.executable, "-m", "pipeline", "--config", str(tiny_config_file), "--root", str(root), "run"],
            capture_output=True, text=True, env={**__import__("os").environ, **QUIET}, timeout=120,
        )
        assert second.returncode == 1 and "already running" in second.stderr
        # Bad files move aside with a reason; the daemon keeps answering.
        q = root / "inbox/query"
        (q / "empty.jpg").write_bytes(b"")
        (q / "text.jpg").write_text("not an image at all")
        (q / "broken.jpg").write_bytes(jpeg_bytes(photos[0])[:700])
        (root / "inbox/catalog" / "bad-1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        pair = rendered_cakes(5, kind="two", tilt=15.0, tilt_axis=30.0, angle=0.0).image  # registration needs one cake a photo
        (root / "inbox/catalog" / "pair-1.jpg").write_bytes(jpeg_bytes(pair))
        (q / "k0.jpg").write_bytes(jpeg_bytes(photos[0]))
        (q / "k0.png").write_bytes((root / "inbox/catalog/k0-1.jpg").read_bytes())  # same stem, other file
        (q / "普洱.jpg").write_bytes(jpeg_bytes(photos[4]))
        wait_until(lambda: len(results(root / "outbox")) == 6, 60, "6 results")
        failed = root / "inbox/failed"
        for name in ("empty.jpg", "text.jpg", "broken.jpg", "bad-1.png"):
            assert (failed / name).exists(), name
            reason = json.loads((failed / f"{name}.error.json").read_text())
            assert reason["code"] and reason["reason"]
        wait_until(lambda: (failed / "pair-1.jpg.error.json").exists(), 60, "two-cake catalog photo refused")
        assert json.loads((failed / "pair-1.jpg.error.json").read_text())["code"] == "several_cakes"
        assert len(CatalogIndex(root / "index")) == 5  # the pair refused, the others kept
        by_query = {r["query"]: r for r in results(root / "outbox")}
        assert {by_query[n]["status"] for n in ("empty.jpg", "text.jpg", "broken.jpg")} == {"rejected"}
        assert by_query["k0.jpg"]["matches"][0]["label"] == "k0"
        assert {p.name for p in (root / "outbox").glob("k0*.json")} == {"k0.json", "k0-1.json"}
        # The matched cake's record is in its result, Chinese as UTF-8 text; a broken sidecar is reported, never blocking.
        puer = by_query["普洱.jpg"]
        assert puer["status"] == "matched" and puer["label"] == "普洱-2019"
        assert {k: puer["record"][k] for k in ("display_name", "year", "producer", "weight_g", "extra")} == {
            "display_name": "勐海 7542 青饼", "year": 2019, "producer": "勐海茶厂", "weight_g": 357.0, "extra": {"仓位": "B-12"}}
        assert "勐海 7542 青饼" in (root / "outbox/普洱.json").read_text(encoding="utf-8")
        assert by_query["k0.jpg"]["record"]["display_name"] == "大益 7572" and by_query["k0.jpg"]["record"]["sources"] == ["cakes.csv:2"]
        note = json.loads((failed / "k1.json.error.json").read_text(encoding="utf-8"))
        assert note["code"] == "bad_record" and note["file"] == "k1.json" and note["problems"][0]["code"] == "invalid_json"
        # Deleting a catalog photo takes it out of later matches.
        (root / "inbox/catalog/k0-1.jpg").unlink()
        wait_until(lambda: len(CatalogIndex(root / "index")) == 4, 30, "entry removed")
        (q / "again.jpg").write_bytes(jpeg_bytes(photos[0]))
        wait_until(lambda: (root / "outbox/again.json").exists(), 30, "answer after deletion")
        again = json.loads((root / "outbox/again.json").read_text())
        assert all(m["label"] != "k0" for m in again["matches"])
        # Metrics: the daemon's file counts exactly the answers given and the files that failed.
        answers = results(root / "outbox")
        metrics = root / ".teaprint" / "metrics.prom"
        queries = lambda: sum(v for (name, _), v in metric_values(metrics).items() if name == "teaprint_queries_total")  # noqa: E731
        wait_until(lambda: queries() == len(answers) == 7, 30, "7 answers in the metrics file")
        values = metric_values(metrics)
        for status in ("matched", "no_match", "rejected"):
            key = ("teaprint_queries_total", (("component", "daemon"), ("source", "folder"), ("status", status)))
            assert values.get(key, 0.0) == sum(r["status"] == status for r in answers), status
        notes = [json.loads(p.read_text(encoding="utf-8")) for p in failed.glob("*.error.json")]
        moved = Counter((n["folder"], n["code"]) for n in notes if n["code"] != "bad_record")  # a record note moves no file
        assert sum(moved.values()) == 5 and moved[("catalog", "several_cakes")] == 1
        assert {(dict(k)["folder"], dict(k)["code"]): v for (name, k), v in values.items() if name == "teaprint_failed_files_total"} == moved
        assert values[("teaprint_catalog_photos", (("component", "daemon"),))] == 4
        # The same through the status file and `teaprint status`.
        status = json.loads((root / ".teaprint" / "status.json").read_text(encoding="utf-8"))
        assert status["records"]["cakes"] == 2 and status["records"]["problem_count"] == 1
        assert status["records"]["problems"][0]["source"] == "k1.json" and status["history"]["ok"] is True
        from pipeline.cli import main

        assert main(["--config", str(tiny_config_file), "--root", str(root), "status"]) == 0
        shown = capsys.readouterr().out
        counts = {s: sum(r["status"] == s for r in answers) for s in ("matched", "no_match", "rejected") if any(r["status"] == s for r in answers)}
        assert "answered  " + ", ".join(f"{n} {s}" for s, n in counts.items()) in shown
        assert "records   2 cakes with a record, 1 problem in record files" in shown and "k1.json" in shown
        # The history of checks: one row per answer.
        checks = History(root / ".teaprint" / "history.sqlite").checks()
        assert sorted(c.result_path or "" for c in checks) == sorted(str(p) for p in (root / "outbox").glob("*.json"))
    finally:
        code = daemon.signal(signal.SIGTERM)
    assert code == 0
    assert any(e.get("event") == "stop" for e in daemon.events())
    assert not [p for p in (root / "outbox").iterdir() if p.name.endswith(".tmp")]
    assert not list((root / ".teaprint" / "journal").glob("*.intent"))


def test_polling_mode_and_catalog_rename(root: Path, tmp_path: Path, tiny_config_file: Path) -> None:
    config = tmp_path / "polling.yaml"
    config.write_text(tiny_config_file.read_text() + "daemon:\n  watch:\n    mode: polling\n    poll_interval_s: 0.2\n")
    photos = distinct_photos(3, seed=9)
    for i, p in enumerate(photos):
        (root / "inbox/catalog" / f"p{i}-1.jpg").write_bytes(jpeg_bytes(p))
    daemon = DaemonProcess(root, config).start()
    try:
        wait_until(lambda: len(CatalogIndex(root / "index")) == 3, 60, "3 entries")
        before = next(e for e in CatalogIndex(root / "index").entries() if e.label == "p1")
        assert before.local is not None and len(before.local) > 0
        (root / "inbox/catalog/p1-1.jpg").rename(root / "inbox/catalog/renamed-1.jpg")
        wait_until(lambda: "renamed" in CatalogIndex(root / "index").labels(), 30, "rename applied")
        assert len(CatalogIndex(root / "index")) == 3
        # A rename changes the path and label only: every descriptor, keypoints
        # included (they were once dropped), and the registration time stay.
        after = CatalogIndex(root / "index").get(before.sha256)
        assert after.local is not None and len(after.local) == len(before.local)
        assert after.path == str(root / "inbox/catalog/renamed-1.jpg") and after.added_at == before.added_at
        for a, b in ((after.embedding, before.embedding), (after.lbp, before.lbp), (after.local.points, before.local.points),
                     (after.local.descriptors, before.local.descriptors)):
            assert (a == b).all()
        (root / "inbox/query/x.jpg").write_bytes(jpeg_bytes(photos[1]))
        wait_until(lambda: (root / "outbox/x.json").exists(), 30, "polling answer")
        best = json.loads((root / "outbox/x.json").read_text())["matches"][0]
        assert best["label"] == "renamed" and best["inliers"] > 0  # still verified after the rename
    finally:
        assert daemon.signal(signal.SIGTERM) == 0


def test_a_query_dropped_during_a_catalog_burst_is_answered_before_the_burst_is_committed(
        root: Path, tmp_path: Path, tiny_config_file: Path) -> None:
    """The query lane: a query never waits behind catalog batches (issue 14)."""
    config = tmp_path / "lane.yaml"
    config.write_text(tiny_config_file.read_text() + "daemon:\n  catalog_batch_size: 5\n  catalog_batch_max: 10\n")
    photos = distinct_photos(101, seed=21)
    staging = tmp_path / "staging"
    staging.mkdir()
    names = [f"b{i:04d}-1.jpg" for i in range(100)]
    for name, rgb in zip(names, photos):
        (staging / name).write_bytes(jpeg_bytes(rgb))
    daemon = DaemonProcess(root, config).start()
    try:
        for name in names:  # the burst: every photo moved in at once
            (staging / name).rename(root / "inbox/catalog" / name)
        wait_until(lambda: any(e.get("event") == "catalog" for e in daemon.events()), 120, "the first catalog commit")
        (root / "inbox/query/mid-burst.jpg").write_bytes(jpeg_bytes(photos[100]))
        wait_until(lambda: len(CatalogIndex(root / "index")) == 100, 300, "the whole burst committed")
        wait_until(lambda: (root / "outbox/mid-burst.json").exists(), 60, "the query's answer")
        events = daemon.events()
        answer = next(e for e in events if e.get("event") == "query")
        commits = sorted({(e["timestamp"], e["generation"]) for e in events if e.get("event") == "catalog" and e.get("outcome") == "indexed"})
        assert len({g for _, g in commits}) >= 8, "the burst should take many batches"
        # Answered before the burst's last batch was committed, against a generation published mid-burst.
        assert answer["timestamp"] < commits[-1][0]
        assert answer["generation"] < commits[-1][1]
        result = json.loads((root / "outbox/mid-burst.json").read_text())
        assert result["catalog"]["generation"] == answer["generation"] and result["catalog"]["entries"] < 100
    finally:
        assert daemon.signal(signal.SIGTERM) == 0
