"""bench/bench_scale.py at a small N: it builds, measures in a fresh process and prints its JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import REPO
from test_evaluation import REGISTERED, make_bench

SCRIPT = REPO / "bench" / "bench_scale.py"
KEYS = ("entries", "backend", "build_s", "open_s", "rss_mb", "query_p50_ms", "query_p95_ms", "query_p50_decode_ms",
        "query_p95_decode_ms", "add_one_ms", "next_query_ms", "bytes_per_entry", "top1", "recall_at_far1")


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=str(REPO), timeout=300)


def test_bench_scale_small(tmp_path: Path, tiny_config_file: Path) -> None:
    bench = make_bench(tmp_path / "bench")
    answers = tmp_path / "answers.jsonl"
    n = 300
    done = run_script("--entries", str(n), "--backend", "embedded", "--bench", str(bench), "--config", str(tiny_config_file),
                      "--work", str(tmp_path / "work"), "--answers", str(answers), "--seed", "3",
                      "--pool-per-photo", "1", "--pool-per-texture", "1", "--pool-textures", "4")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert "bench_scale" in done.stdout  # the human table came first
    for key in KEYS:
        assert key in figures, key
    assert figures["backend"] == "embedded"
    assert figures["entries"] == n + len(REGISTERED)
    assert figures["distractors"] == n and figures["catalog"] == len(REGISTERED)
    assert 0.0 <= figures["top1"] <= 1.0
    assert figures["recall_at_far1"] is None or 0.0 <= figures["recall_at_far1"] <= 1.0
    assert 0 < figures["query_p50_ms"] <= figures["query_p95_ms"]
    assert figures["query_p50_decode_ms"] <= figures["query_p95_decode_ms"]
    assert figures["query_p50_decode_ms"] >= figures["query_p50_ms"]
    for key in ("build_s", "open_s", "rss_mb", "add_one_ms", "next_query_ms", "next_query_before_add_ms", "bytes_per_entry"):
        assert figures[key] > 0, key
    assert figures["registered_queries"] == 11 and figures["unregistered_queries"] == 2  # make_bench's truth
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert len(rows) == figures["queries"] == len(REGISTERED) * 2 + 3
    assert {r["status"] for r in rows if r["query"] == "q999.jpg"} == {"rejected"}
    # The kept work root holds the catalog the fresh process measured (plus the one photo it added).
    assert (tmp_path / "work" / "index").is_dir()
    # Measuring that root again with the same spec would time the refusal of a duplicate as a registration: refused.
    again = run_script("--child", str(tmp_path / "work" / "measure.json"))
    assert again.returncode != 0
    assert "already in the catalog" in again.stderr


def test_distractors_are_deterministic_and_recombine_real_views(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    import synthetic

    rng = np.random.default_rng(0)
    views, width = 5, 128
    counts = np.array([30, 10, 25, 40, 5])
    pool = synthetic.Pool(
        names=[f"v{i}" for i in range(views)],
        embeddings=synthetic._unit(rng.normal(size=(views, 16)).astype(np.float32)),
        lbp=np.full((views, 10 + 18), 1.0, np.float32) / np.array([10] * 10 + [18] * 18, np.float32),
        blocks=(10, 18),
        points=rng.uniform(0, 300, (counts.sum(), 2)).astype(np.float32),
        descriptors=rng.integers(0, 256, (counts.sum(), width)).astype(np.uint8),
        offsets=np.concatenate([[0], np.cumsum(counts)[:-1]]),
        counts=counts,
        sides=np.full(views, 320),
        local=True,
    )
    a = synthetic.chunk(pool, 1, 50, seed=9, folder=tmp_path, chunk_size=50)
    b = synthetic.chunk(pool, 1, 50, seed=9, folder=tmp_path, chunk_size=50)
    assert [e.sha256 for e in a] == [e.sha256 for e in b]
    assert all(np.array_equal(x.local.descriptors, y.local.descriptors) for x, y in zip(a, b))
    assert len({e.sha256 for e in a}) == 50 and len({e.label for e in a}) == 50
    assert a[0].label == "distractor0000050"
    for e in a:
        assert e.embedding.dtype == np.float32 and abs(float(np.linalg.norm(e.embedding)) - 1) < 1e-5
        assert np.allclose([e.lbp[:10].sum(), e.lbp[10:].sum()], 1.0, atol=1e-5)
        assert 1 <= len(e.local) <= counts.max() and e.local.descriptors.dtype == np.uint8
        assert e.local.points.dtype == np.float32 and (e.local.points >= 0).all() and (e.local.points <= 319).all()
        # every descriptor is a pool descriptor moved by at most DESC_NOISE per byte
        gap = np.abs(e.local.descriptors[:, None, :].astype(int) - pool.descriptors[None, :, :].astype(int)).max(axis=2)
        assert (gap.min(axis=1) <= synthetic.DESC_NOISE).all()


def test_milvus_backend_gives_the_embedded_answers(tmp_path: Path, tiny_config_file: Path) -> None:
    """Same seed, same catalog: the milvus-lite run answers every query as the embedded run does."""
    bench = make_bench(tmp_path / "bench")
    results = {}
    for backend in ("embedded", "milvus"):
        answers = tmp_path / f"{backend}.jsonl"
        done = run_script("--entries", "200", "--backend", backend, "--bench", str(bench), "--config", str(tiny_config_file),
                          "--work", str(tmp_path / backend), "--answers", str(answers), "--seed", "4",
                          "--pool-per-photo", "1", "--pool-per-texture", "1", "--pool-textures", "4")
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout.strip().splitlines()[-1])["backend"] == backend
        results[backend] = [(r["query"], r["status"], r["label"], r["confidence"]) for r in map(json.loads, answers.read_text().splitlines())]
    assert (tmp_path / "milvus" / "milvus.db").exists()
    assert results["milvus"] == results["embedded"]
