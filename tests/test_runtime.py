"""The serving runtime: a real tiny Keras encoder exported to LiteRT and served without TensorFlow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import structlog

from conftest import REPO, rotated_view, source_photos, write_rgb
from daemon_support import QUIET, distinct_photos, jpeg_bytes, wait_until
from pipeline.cli import main
from pipeline.features.embedding import Encoder, ModelError, file_model_id, metadata_path, serving_path
from test_server import Api, DaemonProcess, ServerProcess  # noqa: F401  (session fixtures below)
from test_server import api, daemon, server, server_config, shared_root  # noqa: F401

TENSORFLOW_ROOTS = ("tensorflow", "keras", "tf_keras", "tensorboard")


def _copy_model(src: Path, folder: Path, with_export: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / src.name
    shutil.copy2(src, dst)
    shutil.copy2(metadata_path(src), metadata_path(dst))
    if with_export:
        shutil.copy2(serving_path(src), serving_path(dst))
    return dst


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_litert_export_matches_keras_on_real_photos_and_keeps_the_model_id(tiny_model: Path) -> None:
    light = Encoder.load(tiny_model)
    heavy = Encoder.load(tiny_model, runtime="keras")
    assert light.info.runtime == "litert" and heavy.info.runtime == "keras"
    assert light.info.model_id == heavy.info.model_id == file_model_id(tiny_model)
    assert light.info.embedding_dim == heavy.info.embedding_dim == 16
    photos = list(source_photos().values())
    held_out = photos + [rotated_view(p, 23, gain=0.9) for p in photos] + [np.ascontiguousarray(p[::2, ::3]) for p in photos]
    cos = _cosines(light.embed(held_out, batch_size=5), heavy.embed(held_out, batch_size=5))
    assert cos.min() >= 0.999, cos
    meta = json.loads(metadata_path(tiny_model).read_text())
    assert meta["serving"]["source_model_id"] == light.info.model_id
    assert meta["serving"]["check"]["cosine_min"] >= 0.999


def test_litert_encoder_gives_the_same_vectors_from_many_threads(tiny_model: Path) -> None:
    encoder = Encoder.load(tiny_model)
    photos = list(source_photos().values())
    expected = encoder.embed(photos)
    got: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):  # alternate batch sizes: each thread resizes its own interpreter
                got[i] = encoder.embed(photos, batch_size=1 + i)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for vectors in got.values():
        np.testing.assert_allclose(vectors, expected, atol=1e-5)


def test_without_export_serving_falls_back_to_keras_with_a_warning(tiny_keras_model: Path, tmp_path: Path) -> None:
    path = _copy_model(tiny_keras_model, tmp_path / "m", with_export=False)
    with structlog.testing.capture_logs() as logs:
        encoder = Encoder.load(path)
    assert encoder.info.runtime == "keras" and encoder.info.model_id == file_model_id(path)
    warnings = [e for e in logs if e["event"] == "encoder_fallback_keras"]
    assert warnings and warnings[0]["log_level"] == "warning" and "records no serving export" in warnings[0]["reason"]
    with pytest.raises(ModelError, match="records no serving export"):
        Encoder.load(path, runtime="litert")


def test_a_stale_export_is_not_served(tiny_model: Path, tmp_path: Path) -> None:
    """An export made from other weights must not serve this .keras: vectors would not match the catalog's."""
    path = _copy_model(tiny_model, tmp_path / "m", with_export=True)
    meta = json.loads(metadata_path(path).read_text())
    meta["serving"]["source_model_id"] = "0" * 16
    metadata_path(path).write_text(json.dumps(meta))
    with structlog.testing.capture_logs() as logs:
        encoder = Encoder.load(path)
    assert encoder.info.runtime == "keras"
    assert any("stale" in e.get("reason", "") for e in logs)
    serving_path(path).unlink()
    meta["serving"]["source_model_id"] = file_model_id(path)
    metadata_path(path).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="serving export not found"):
        Encoder.load(path, runtime="litert")


def test_teaprint_export_writes_the_litert_file_and_records_it(tiny_keras_model: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = _copy_model(tiny_keras_model, tmp_path / "m", with_export=False)
    assert main(["export", str(path)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["exported"] == str(serving_path(path)) and serving_path(path).stat().st_size > 0
    assert report["model_id"] == file_model_id(path) and report["cosine_min"] >= 0.999
    assert Encoder.load(path).info.runtime == "litert"


SERVING_SCRIPT = r"""
import json, sys
from pathlib import Path
from pipeline.cli import main
config, root, catalog, query = sys.argv[1:5]
base = ["--config", config, "--root", root]
assert main(base + ["index", catalog]) == 0
assert main(base + ["match", "--json", query]) == 0
import pipeline.daemon.service, pipeline.server.api, pipeline.server.run
from pipeline.config import load_config
from pipeline.server.service import TeaprintService
service = TeaprintService.load(load_config(Path(config)), Path(root))
service.warm_up()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {roots})
print(json.dumps({{"runtime": service.status()["model"]["runtime"], "loaded": loaded}}))
"""


def test_cli_index_match_and_server_service_never_import_tensorflow(tiny_config_file: Path, tmp_path: Path) -> None:
    photos = source_photos()
    for name, rgb in list(photos.items())[:4]:
        write_rgb(tmp_path / "catalog" / f"{name}-1.jpg", rgb)
    query = write_rgb(tmp_path / "q" / "query.jpg", rotated_view(photos["astronaut"], 30))
    proc = subprocess.run(
        [sys.executable, "-c", SERVING_SCRIPT.format(roots=repr(set(TENSORFLOW_ROOTS))),
         str(tiny_config_file), str(tmp_path / "root"), str(tmp_path / "catalog"), str(query)],
        capture_output=True, text=True, env={**os.environ, **QUIET}, cwd=str(REPO), timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert json.loads(lines[-2])["matches"][0]["label"] == "astronaut"
    report = json.loads(lines[-1])
    assert report == {"runtime": "litert", "loaded": []}


WARM_SCRIPT = r"""
import json, sys, time
from pathlib import Path
from pipeline.config import load_config
from pipeline.server.service import TeaprintService
service = TeaprintService.load(load_config(Path(sys.argv[1])), Path(sys.argv[2]))
before = "sklearn.svm" in sys.modules
service.warm_up()
deadline = time.monotonic() + 120
while "sklearn.svm" not in sys.modules and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"before": before, "after": "sklearn.svm" in sys.modules}))
"""


def test_the_server_loads_the_classifier_library_before_its_first_request(tiny_config_file: Path, tmp_path: Path) -> None:
    """Without a request, the server's warm-up loads scikit-learn (in the background): the first /match does not pay it."""
    proc = subprocess.run([sys.executable, "-c", WARM_SCRIPT, str(tiny_config_file), str(tmp_path / "root")],
                          capture_output=True, text=True, env={**os.environ, **QUIET}, cwd=str(REPO), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"before": False, "after": True}


def _tensorflow_libraries(pid: int) -> list[str]:
    """TensorFlow's own shared libraries mapped into process `pid` (LiteRT's live under ai_edge_litert/)."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sorted({line.split()[-1] for line in maps if "/site-packages/tensorflow/" in line or "/site-packages/keras/" in line})


def test_running_daemon_and_server_answer_without_tensorflow_loaded(server: ServerProcess, daemon: DaemonProcess,
                                                                    api: Api) -> None:
    photo = distinct_photos(1, side=160, seed=1414)[0]
    response = api.call("POST", "/match", files={"file": ("runtime-q.jpg", jpeg_bytes(photo), "image/jpeg")}, expect=200)
    assert response.json()["model"]["id"] == api.call("GET", "/status", expect=200).json()["model"]["id"]
    query = daemon.root / "inbox" / "query" / "runtime-q.jpg"
    query.parent.mkdir(parents=True, exist_ok=True)
    query.write_bytes(jpeg_bytes(photo))
    wait_until(lambda: (daemon.root / "outbox" / "runtime-q.json").exists(), 60, "the daemon's answer")
    for proc in (server.proc, daemon.proc):
        assert proc is not None and proc.poll() is None
        assert _tensorflow_libraries(proc.pid) == []
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "/site-packages/ai_edge_litert/" in maps  # the encoder really ran in this process, on LiteRT


def test_concurrent_matches_through_the_service_equal_sequential_ones(tiny_config_file: Path, tmp_path: Path) -> None:
    """The server matches without a global lock: parallel answers must be exactly the sequential ones."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.config import load_config
    from pipeline.server.service import TeaprintService, Upload

    photos = source_photos()
    for name, rgb in photos.items():
        write_rgb(tmp_path / "catalog" / f"{name}-1.jpg", rgb)
    service = TeaprintService.load(load_config(tiny_config_file), tmp_path / "root")
    service.engine.index_files(sorted((tmp_path / "catalog").glob("*.jpg")), catalog_root=tmp_path / "catalog")
    queries = [jpeg_bytes(rotated_view(rgb, angle, gain=1.05)) for rgb in photos.values() for angle in (17, 200)]

    def answer(data: bytes) -> tuple:
        r = service.match(Upload(io.BytesIO(data), "q.jpg"))
        return r.status, r.label, r.confidence, tuple((m.id, m.similarity, m.inliers) for m in r.matches)

    sequential = [answer(q) for q in queries]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(answer, queries * 2))
    assert parallel == sequential * 2
    assert sum(s[1] == name for s, name in zip(sequential, [n for n in photos for _ in (0, 1)])) >= len(queries) // 2
