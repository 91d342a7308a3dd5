"""The milvus search backend (issue 13) against a real milvus-lite file, with the shipped model.

The same catalog is matched with the embedded backend (exact scan in the
process, and its IVF index), and with `search.backend: milvus`: answers must agree. The
collection follows removals and additions, is taken over by a new process
without being refilled, and `teaprint reindex --backend milvus` rebuilds it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, source_photos, write_rgb
from pipeline.cli import main
from pipeline.training import views

NAMES = ("coffee", "chelsea", "rocket", "astronaut", "camera", "brick")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("milvus")
    photos = source_photos()
    rng = np.random.default_rng(11)
    queries = []
    for name in NAMES:
        image = photos[name]
        h, w = image.shape[:2]
        centre, radius = (w / 2, h / 2), min(h, w) / 2 - 2
        write_rgb(tmp / "catalog" / f"{name}-1.jpg", views.disc_photo(image, rng, centre, radius, out_size=640))
        queries.append(write_rgb(tmp / "query" / f"{name}.jpg", views.disc_photo(image, rng, centre, radius, out_size=640, max_tilt=25.0)))
    from skimage import data

    stranger = np.ascontiguousarray(data.immunohistochemistry())
    queries.append(write_rgb(tmp / "query" / "stranger.jpg", views.disc_photo(stranger, rng, (256, 256), 240, out_size=640)))
    root = tmp / "root"
    assert main(["--root", str(root), "index", str(tmp / "catalog")]) == 0
    config = tmp / "milvus.yaml"
    config.write_text(f"search:\n  backend: milvus\n  milvus:\n    uri: {tmp / 'lite' / 'catalog.db'}\n", encoding="utf-8")
    ann = tmp / "ann.yaml"  # the embedded ANN index from the first row, every list probed
    ann.write_text("search:\n  ann:\n    min_rows: 1\n    lists: 2\n    probes: 2\n    save_every: 1\n", encoding="utf-8")
    return {"root": root, "config": config, "db": tmp / "lite" / "catalog.db", "queries": tmp / "query", "catalog": tmp / "catalog",
            "ann": ann}


def cli(*args: str) -> subprocess.CompletedProcess:
    """teaprint as a real process: milvus-lite serves its file from a server of the process that opens it."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env, cwd=str(REPO), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def answers(bench: dict[str, Path], milvus: bool, ann: bool = False) -> dict[str, dict]:
    extra = ["--config", str(bench["config"])] if milvus else ["--config", str(bench["ann"])] if ann else []
    done = cli(*extra, "--root", str(bench["root"]), "match", "--json", *sorted(map(str, bench["queries"].iterdir())))
    out = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {Path(r["query"]).name: r for r in out}


def brief(result: dict) -> tuple:
    return result["status"], result["label"], result["confidence"], [m["label"] for m in result["matches"]]


def test_milvus_answers_as_the_embedded_backend(bench: dict[str, Path]) -> None:
    embedded = answers(bench, milvus=False)
    lite = answers(bench, milvus=True)
    assert bench["db"].exists()  # the collection really lives in the milvus-lite file
    assert {q: brief(r) for q, r in lite.items()} == {q: brief(r) for q, r in embedded.items()}
    assert sum(r["status"] == "matched" for r in embedded.values()) >= 4 and embedded["stranger.jpg"]["status"] == "no_match"


def test_the_embedded_ann_index_answers_as_the_exact_scan_and_is_saved_beside_the_segments(bench: dict[str, Path]) -> None:
    files = [bench["root"] / "index" / name for name in ("embeddings.ivf", "lbps_sqrt.ivf")]
    exact = answers(bench, milvus=False)
    assert not any(f.exists() for f in files)  # the shipped min_rows: a small catalog is scanned
    assert {q: brief(r) for q, r in answers(bench, milvus=False, ann=True).items()} == {q: brief(r) for q, r in exact.items()}
    assert all(f.exists() for f in files)
    assert {q: brief(r) for q, r in answers(bench, milvus=False, ann=True).items()} == {q: brief(r) for q, r in exact.items()}


def test_milvus_follows_removals_and_reindex_rebuilds_it(bench: dict[str, Path]) -> None:
    answers(bench, milvus=True)  # attach and fill
    cli("--root", str(bench["root"]), "remove", str((bench["catalog"] / "coffee-1.jpg").absolute()))
    after = answers(bench, milvus=True)
    assert "coffee" not in [m["label"] for r in after.values() for m in r["matches"]]
    assert {q: brief(r) for q, r in after.items()} == {q: brief(r) for q, r in answers(bench, milvus=False).items()}
    done = json.loads(cli("--config", str(bench["config"]), "--root", str(bench["root"]), "reindex", "--backend", "milvus").stdout.splitlines()[-1])
    assert done["milvus"]["rows"] == len(NAMES) - 1 and done["entries"] == len(NAMES) - 1
    count = ("from pymilvus import MilvusClient; import sys; c = MilvusClient(sys.argv[1]); c.load_collection('teaprint_embeddings'); "
             "print(len(c.query('teaprint_embeddings', filter='slot >= 0', output_fields=['slot']))); c.close()")
    rows = subprocess.run([sys.executable, "-c", count, str(bench["db"])], capture_output=True, text=True, timeout=120)
    assert rows.stdout.split()[-1:] == [str(len(NAMES) - 1)], rows.stderr[-2000:]  # the collection itself, read back
    assert {q: brief(r) for q, r in answers(bench, milvus=True).items()} == \
        {q: brief(r) for q, r in answers(bench, milvus=False).items()}


def collection_index(db: Path) -> tuple[str, str]:
    """The index Milvus reports for the collection's vectors, and its row count, read back by another process."""
    script = ("from pymilvus import MilvusClient; import sys; c = MilvusClient(sys.argv[1]); n = 'teaprint_embeddings'; "
              "d = c.describe_index(n, c.list_indexes(n, field_name='embedding')[0]); c.load_collection(n); "
              "print(d['index_type'], len(c.query(n, filter='slot >= 0', output_fields=['slot']))); c.close()")
    done = subprocess.run([sys.executable, "-c", script, str(db)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    kind, rows = done.stdout.split()[-2:]
    return kind, rows


@pytest.mark.parametrize("index", ["IVF_FLAT", "HNSW", "FLAT"])
def test_the_collection_takes_the_configured_vector_index_and_answers_as_the_exact_scan(
        bench: dict[str, Path], index: str, tmp_path: Path) -> None:
    """Each kind of index, switched on the same collection: Milvus rebuilds it from the stored rows, answers agree."""
    config = tmp_path / f"{index}.yaml"
    config.write_text(bench["config"].read_text(encoding="utf-8") +
                      f"    index: {index}\n    lists: 2\n    probes: 2\n    hnsw_m: 8\n    hnsw_ef: 16\n", encoding="utf-8")
    rows_before = collection_index(bench["db"])[1] if bench["db"].exists() else None
    done = cli("--config", str(config), "--root", str(bench["root"]), "match", "--json", *sorted(map(str, bench["queries"].iterdir())))
    lite = {Path(r["query"]).name: r for r in map(json.loads, (x for x in done.stdout.splitlines() if x.startswith("{")))}
    kind, rows = collection_index(bench["db"])
    assert kind == index
    assert rows_before in (None, rows)  # the index changed, not the rows
    assert {q: brief(r) for q, r in lite.items()} == {q: brief(r) for q, r in answers(bench, milvus=False).items()}


def test_index_settings_reach_milvus_as_its_parameters() -> None:
    from pipeline.search.milvus import IndexSpec

    ivf, hnsw, flat = IndexSpec("IVF_FLAT", 64, 300, 16, 256), IndexSpec("HNSW", 1024, 256, 8, 32), IndexSpec("FLAT", 1024, 256, 16, 256)
    assert ivf.build_params() == {"nlist": 64} and ivf.search_params(10) == {"params": {"nprobe": 64}}  # no more probes than lists
    assert hnsw.build_params() == {"M": 8, "efConstruction": 32}
    assert hnsw.search_params(10) == {"params": {"ef": 32}} and hnsw.search_params(100) == {"params": {"ef": 100}}
    assert flat.build_params() == {} and flat.search_params(10) == {}
    assert ivf.matches({"index_type": "IVF_FLAT", "nlist": "64"}) and ivf.matches({"index_type": "IVF_FLAT"})
    assert not ivf.matches({"index_type": "IVF_FLAT", "nlist": "128"}) and not ivf.matches({"index_type": "FLAT"})
