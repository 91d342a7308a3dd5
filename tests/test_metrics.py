"""Prometheus metrics from real answers of the real engine, read back with prometheus_client's text parser."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from conftest import source_photos, write_rgb
from pipeline.ops.metrics import Metrics, merge_expositions, summary, summary_lines


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_counters_and_stage_histograms_match_the_answers_given(tiny_config_file: Path, tmp_path: Path) -> None:
    from pipeline.config import load_config
    from pipeline.engine import Engine

    photos = source_photos()
    for name in ("astronaut", "coffee", "chelsea"):
        write_rgb(tmp_path / "catalog" / f"{name}-1.jpg", photos[name])
    engine = Engine.load(load_config(tiny_config_file), tmp_path / "root")
    engine.index_files(sorted((tmp_path / "catalog").glob("*.jpg")), catalog_root=tmp_path / "catalog")
    write_rgb(tmp_path / "q" / "rocket.jpg", photos["rocket"])
    (tmp_path / "q" / "broken.jpg").write_bytes(b"not a photo")
    queries = [tmp_path / "catalog" / "coffee-1.jpg", tmp_path / "q" / "rocket.jpg", tmp_path / "q" / "broken.jpg"]
    results = [engine.match_file(q).to_dict() for q in queries]

    metrics = Metrics("daemon")
    for result in results:
        metrics.observe_result(result, "folder")
    metrics.failed_file("query", "not_an_image")
    metrics.set_catalog(len(engine.snapshot()), 3)
    metrics.set_backlog(catalog=0, query=2)
    values = samples(metrics.render())

    by_status = Counter(r["status"] for r in results)
    assert by_status["rejected"] == 1
    for status, n in by_status.items():
        assert values[("teaprint_queries_total", (("component", "daemon"), ("source", "folder"), ("status", status)))] == n
    stages = Counter(stage for r in results for stage in r["timings_ms"])
    assert {"embed", "verify", "decide", "total"} <= set(stages)
    for stage, n in stages.items():
        assert values[("teaprint_stage_seconds_count", (("component", "daemon"), ("stage", stage)))] == n
        total_s = sum(r["timings_ms"].get(stage, 0.0) for r in results) / 1e3
        assert abs(values[("teaprint_stage_seconds_sum", (("component", "daemon"), ("stage", stage)))] - total_s) < 1e-6
    assert values[("teaprint_catalog_photos", (("component", "daemon"),))] == 3
    assert values[("teaprint_ingest_backlog", (("component", "daemon"), ("folder", "query")))] == 2
    assert values[("teaprint_failed_files_total", (("code", "not_an_image"), ("component", "daemon"), ("folder", "query")))] == 1


def test_the_server_merges_the_daemons_file_into_one_exposition(tmp_path: Path) -> None:
    daemon, server = Metrics("daemon"), Metrics("server")
    daemon.observe_result({"status": "matched", "timings_ms": {"embed": 12.0, "total": 40.0}}, "folder")
    daemon.observe_result({"status": "matched", "timings_ms": {"embed": 14.0, "total": 45.0}}, "folder")
    server.observe_result({"status": "no_match", "timings_ms": {"embed": 30.0, "total": 900.0}}, "http")
    daemon.set_catalog(12, 4)
    daemon.write(tmp_path / "state" / "metrics.prom")

    text = merge_expositions(server.render(), (tmp_path / "state" / "metrics.prom").read_text(encoding="utf-8"))

    families = list(text_string_to_metric_families(text))
    names = [f.name for f in families]
    assert len(names) == len(set(names)), "a family appears twice"
    values = samples(text)
    assert values[("teaprint_queries_total", (("component", "daemon"), ("source", "folder"), ("status", "matched")))] == 2
    assert values[("teaprint_queries_total", (("component", "server"), ("source", "http"), ("status", "no_match")))] == 1
    data = summary(text)
    assert data["queries"] == {"matched": 2, "no_match": 1} and data["catalog"] == {"labels": 4, "photos": 12}
    assert data["stage_ms"]["total"]["count"] == 3 and data["stage_ms"]["total"]["p95_ms"] == 1000.0
    assert data["stage_ms"]["embed"]["mean_ms"] == round((12 + 14 + 30) / 3, 1)
    lines = summary_lines(data)
    assert lines[0] == "answered  2 matched, 1 no_match"
    assert any(line.strip().startswith("total") and "p95 <= 1000 ms (3 queries)" in line for line in lines)
