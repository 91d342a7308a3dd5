"""`teaprint serve` as a real subprocess on a loopback port, checked against its own OpenAPI document.

One server (tiny real Keras model, a token, small limits) serves the whole
session; `test_browser.py` uses it too. Every response passes through
`Api.call`, which asserts that its status is documented for the operation
and validates its JSON body against the documented schema, so these tests
keep `/openapi.json` true.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qsl

import jsonschema
import pytest
import requests

from daemon_support import QUIET, DaemonProcess, distinct_photos, jpeg_bytes, results, wait_until
from imagefiles import truncate_file, write_png_claiming
from pipeline.catalog import CatalogIndex
from pipeline.results import load_schema
from pipeline.server.api import _hostname, _same_origin

TOKEN = "test-token-0123456789abcdef"
RESULT_SCHEMA = load_schema()


class ServerProcess:
    """`teaprint --config CFG --root ROOT serve --port 0` in a subprocess; its port comes from the log."""

    def __init__(self, root: Path, config: Path, token: str | None = TOKEN) -> None:
        self.root = root
        self.config = config
        self.token = token
        self.log_path = root / f"server-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> "ServerProcess":
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **QUIET}
        env.pop("TEAPRINT_TOKEN", None)
        if self.token:
            env["TEAPRINT_TOKEN"] = self.token
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "--config", str(self.config), "--root", str(self.root), "serve", "--port", "0"],
            stdout=self.log_file, stderr=subprocess.STDOUT, env=env, cwd=str(self.root),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            for event in self.events():
                if event.get("event") == "serving":
                    self.port = int(event["port"])
            if self.port:
                try:
                    if requests.get(self.url + "/health", timeout=2).status_code == 200:
                        return self
                except (requests.ConnectionError, requests.Timeout):  # not up yet, or a loaded machine
                    pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready in {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def events(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def stop(self, send: bool = True) -> int | None:
        """SIGTERM (once: a second one during shutdown would kill it) and the exit code."""
        if self.proc is None:
            return None
        if send and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.log_file.close()
        return code


class Api:
    """A requests session that checks every response against the server's OpenAPI document."""

    def __init__(self, server: ServerProcess, token: str | None = TOKEN) -> None:
        self.server = server
        self._local = threading.local()
        self.token = token
        self.doc = requests.get(server.url + "/openapi.json", timeout=10).json()
        self.exercised: set[tuple[str, str]] = set()

    @property
    def session(self) -> requests.Session:
        """One session per thread (requests.Session is not thread-safe)."""
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def call(self, method: str, template: str, *, token: str | None | bool = True, expect: int | None = None,
             at: dict | None = None, query: dict | None = None, **kwargs: Any) -> requests.Response:
        """`method` on `template` filled from `at`, with `query` parameters; checked against the document."""
        path = template.format(**(at or {}))
        headers = dict(kwargs.pop("headers", {}))
        use = self.token if token is True else token or None
        if use:
            headers["Authorization"] = f"Bearer {use}"
        response = self.session.request(method, self.server.url + path, params=query, headers=headers, timeout=60, **kwargs)
        check_against_openapi(self.doc, method, template, response)
        self.exercised.add((method.lower(), template))
        if expect is not None:
            assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response


def check_against_openapi(doc: dict, method: str, template: str, response: requests.Response) -> None:
    """The status is documented for the operation and the body matches its schema."""
    route = template
    operation = doc["paths"].get(route, {}).get(method.lower())
    assert operation is not None, f"{method} {route} is not in the OpenAPI document"
    assert response.status_code < 500, f"{method} {route}: server error {response.status_code}: {response.text[:500]}"
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"{method} {route}: status {response.status_code} undocumented ({sorted(operation['responses'])})"
    content_type = response.headers.get("content-type", "").split(";")[0]
    assert content_type in documented.get("content", {}), f"{method} {route} {response.status_code}: {content_type} undocumented"
    if content_type == "application/json":
        schema = {"components": doc.get("components", {}), **documented["content"][content_type]["schema"]}
        jsonschema.Draft202012Validator(schema).validate(response.json())


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def server_config(tmp_path_factory: pytest.TempPathFactory, tiny_config_file: Path) -> Path:
    """The tiny model with small limits (1 MB requests, 0.5 MB photos) and a quick daemon."""
    model = re.search(r"model:\n(?:  .*\n)+", tiny_config_file.read_text())
    assert model is not None
    path = tmp_path_factory.mktemp("server-config") / "server.yaml"
    path.write_text(
        model.group(0)
        + "intake:\n  work_side: 256\n  max_file_mb: 0.5\n"
        + "http:\n  max_upload_mb: 1.0\n  max_files: 8\n  page_size: 3\n"
        + "daemon:\n  workers: 1\n  catalog_batch_wait_s: 0.2\n  watch:\n    stable_after_s: 0.3\n    reconcile_interval_s: 1.0\n"
        + "matcher:\n  decide:\n    accept_confidence: 0.5\n"  # the tiny model is not calibrated
        + "locate:\n  enabled: true\n"  # the cake locator on (as shipped; named here because the page draws the cake it found)
    )
    return path


_SHARED: dict[str, Any] = {"users": 0}


def acquire_shared(root: Path, config: Path) -> tuple[ServerProcess, DaemonProcess]:
    """The session's server and daemon on ONE root, started on first use (both at once).

    Every API and browser test therefore runs with a live daemon reconciling
    the same catalog folder and committing to the same index. Shared through
    this module so that `test_browser.py`, which imports these fixtures,
    reuses the same pair instead of starting another.
    """
    if "pair" not in _SHARED:
        daemon = DaemonProcess(root, config).start(wait_ready=False)
        server = ServerProcess(root, config)
        _SHARED["pair"] = (server, daemon)
        try:
            server.start()
        except BaseException:
            release_shared(force=True)
            raise
    _SHARED["users"] += 1
    return _SHARED["pair"]


def release_shared(force: bool = False) -> None:
    _SHARED["users"] -= 1
    if _SHARED["users"] > 0 and not force:
        return
    server, daemon = _SHARED.pop("pair")
    for proc in (daemon.proc, server.proc):  # both stop at once
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    daemon_code = daemon.proc.wait(timeout=60) if daemon.proc is not None else 0
    server_code = server.stop(send=False) if server.proc is not None else 0
    if not force:
        assert daemon_code == 0, daemon.log_path.read_text()[-3000:]
        assert server_code == 0, server.log_path.read_text()[-3000:]


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory: pytest.TempPathFactory, server_config: Path) -> Iterator[tuple[ServerProcess, DaemonProcess]]:
    pair = acquire_shared(tmp_path_factory.mktemp("server-root"), server_config)
    yield pair
    release_shared()


@pytest.fixture(scope="session")
def server(shared_root: tuple[ServerProcess, DaemonProcess]) -> ServerProcess:
    return shared_root[0]


@pytest.fixture(scope="session")
def daemon(shared_root: tuple[ServerProcess, DaemonProcess]) -> DaemonProcess:
    return shared_root[1]


@pytest.fixture(scope="session")
def api(server: ServerProcess) -> Api:
    return Api(server)


PHOTOS = distinct_photos(48, side=160, seed=7)  # each test uses its own indexes


def jpeg(i: int) -> bytes:
    return jpeg_bytes(PHOTOS[i])


def files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "image/jpeg")) for name, data in items]


# ------------------------------------------------------------------ tests
def test_health_needs_no_token_and_openapi_is_published(api: Api) -> None:
    body = api.call("GET", "/health", token=None, expect=200).json()
    assert body == {"status": "ok", "auth_required": True, "version": "1"}
    doc = api.doc
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {"/health", "/status", "/catalog", "/catalog/{entry_id}", "/catalog/{entry_id}/image", "/match",
                                 "/records/{label}", "/history", "/metrics"}
    assert {"MatchResult", "CakeRecord"} <= set(doc["components"]["schemas"])
    page = requests.get(api.server.url + "/", timeout=10)
    assert page.status_code == 200 and 'capture="environment"' in page.text


def test_register_list_get_image_delete(api: Api, server: ServerProcess) -> None:
    catalog_dir = server.root / "inbox" / "catalog"
    response = api.call("POST", "/catalog", expect=201, files=files(("IMG_1.jpg", jpeg(0)), ("IMG_2.jpg", jpeg(1))),
                        data={"label": "Menghai 2019"})
    body = response.json()
    assert [e["label"] for e in body["added"]] == ["Menghai 2019", "Menghai 2019"]
    for entry in body["added"]:  # server-chosen names: <label>/<sha16><ext of the detected format>
        assert Path(entry["path"]) == catalog_dir / "Menghai 2019" / f"{entry['id']}.jpg"
        assert Path(entry["path"]).read_bytes() in (jpeg(0), jpeg(1))
    # Without a label field the file-name convention applies; a PNG gets .png whatever its name says.
    import cv2
    ok, png = cv2.imencode(".png", PHOTOS[2])
    named = api.call("POST", "/catalog", expect=201, files=[("files", ("dayi7542-front.jpeg", png.tobytes(), "image/png"))]).json()
    entry = named["added"][0]
    assert entry["label"] == "dayi7542" and entry["path"].endswith(f"/dayi7542/{entry['id']}.png")
    # The same bytes again: 200, reported as a duplicate of the existing entry.
    again = api.call("POST", "/catalog", expect=200, files=files(("copy-x.jpg", jpeg(0)))).json()
    assert again["added"] == [] and again["duplicates"][0]["label"] == "Menghai 2019"

    first = api.call("GET", "/catalog", expect=200).json()
    assert first["limit"] == 3 and first["offset"] == 0 and first["total"] >= 3 and first["items"]
    seen, page = [], first
    while True:
        seen += [e["id"] for e in page["items"]]
        if page["next"] is None:
            break
        assert page["next"].startswith("/catalog?")
        page = api.call("GET", "/catalog", expect=200, query=dict(parse_qsl(page["next"].split("?", 1)[1]))).json()
    assert len(seen) == len(set(seen)) == first["total"]
    labelled = api.call("GET", "/catalog", expect=200, query={"label": "Menghai 2019", "limit": 50}).json()
    assert {e["label"] for e in labelled["items"]} == {"Menghai 2019"} and labelled["total"] == 2
    api.call("GET", "/catalog", expect=400, query={"limit": 501})
    api.call("GET", "/catalog", expect=400, query={"offset": "minus one"})

    target = body["added"][0]
    assert api.call("GET", "/catalog/{entry_id}", expect=200, at={"entry_id": target["id"]}).json() == target
    image = api.call("GET", "/catalog/{entry_id}/image", expect=200, at={"entry_id": target["id"]})
    assert image.content[:2] == b"\xff\xd8"

    removed = api.call("DELETE", "/catalog/{entry_id}", expect=200, at={"entry_id": target["id"]}).json()
    assert removed["removed"]["id"] == target["id"]
    moved = server.root / ".teaprint" / "deleted" / removed["moved_to"]
    assert moved.read_bytes() in (jpeg(0), jpeg(1)) and not Path(target["path"]).exists()  # moved, never deleted
    assert json.loads(moved.with_name(moved.name + ".json").read_text())["label"] == "Menghai 2019"
    api.call("GET", "/catalog/{entry_id}", expect=404, at={"entry_id": target["id"]})
    api.call("GET", "/catalog/{entry_id}/image", expect=404, at={"entry_id": target["id"]})
    api.call("DELETE", "/catalog/{entry_id}", expect=404, at={"entry_id": target["id"]})
    api.call("GET", "/catalog/{entry_id}", expect=400, at={"entry_id": "NOT-AN-ID"})
    # The index on disk agrees with the API.
    index = CatalogIndex(server.root / "index")
    assert target["sha256"] not in {e.sha256 for e in index.entries()}
    assert api.call("GET", "/status", expect=200).json()["entries"] == len(index)


def test_match_returns_the_daemon_result_object(api: Api) -> None:
    api.call("POST", "/catalog", files=files(("puer-a.jpg", jpeg(5)), ("oolong-a.jpg", jpeg(6)), ("shou-a.jpg", jpeg(7))))
    result = api.call("POST", "/match", expect=200, files={"file": ("phone shot.jpg", jpeg(6), "image/jpeg")}).json()
    jsonschema.validate(result, RESULT_SCHEMA)
    assert result["status"] == "matched" and result["label"] == "oolong" and result["query"] == "phone shot.jpg"
    assert result["matches"][0]["label"] == "oolong" and 0 <= result["confidence"] <= 1


def test_auth_is_required_for_everything_but_health(api: Api) -> None:
    some_id = "0123456789abcdef"
    for token in (None, "wrong-token-0123456789"):
        for method, template, kwargs in (
            ("POST", "/catalog", {"files": files(("x-1.jpg", jpeg(9)))}),
            ("POST", "/match", {"files": {"file": ("q.jpg", jpeg(9), "image/jpeg")}}),
            ("DELETE", "/catalog/{entry_id}", {"at": {"entry_id": some_id}}),
            ("GET", "/catalog", {}),
            ("GET", "/catalog/{entry_id}", {"at": {"entry_id": some_id}}),
            ("GET", "/catalog/{entry_id}/image", {"at": {"entry_id": some_id}}),
            ("GET", "/status", {}),
            ("GET", "/records/{label}", {"at": {"label": "x"}}),
            ("PUT", "/records/{label}", {"at": {"label": "x"}, "json": {"notes": "x"}}),
            ("GET", "/history", {}),
            ("GET", "/metrics", {}),
        ):
            response = api.call(method, template, token=token, expect=401, **kwargs)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"] == "unauthorized"
    assert not list((api.server.root / "inbox" / "catalog").glob("x/*")) and not (api.server.root / "inbox" / "catalog" / "x").exists()


def test_oversize_broken_and_hostile_uploads_get_clear_4xx(api: Api, server: ServerProcess, tmp_path: Path) -> None:
    big = os.urandom(1_200_000)  # above http.max_upload_mb (1 MB)
    r = api.call("POST", "/match", expect=413, files={"file": ("big.jpg", big, "image/jpeg")})
    assert r.json()["error"] == "too_large_request"

    def chunked() -> Iterator[bytes]:  # no Content-Length: cut off while streaming
        boundary = b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\n"
        yield boundary
        for _ in range(20):
            yield b"\0" * 100_000
        yield b"\r\n--xyz--\r\n"

    r = api.call("POST", "/match", expect=413, data=chunked(), headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert r.json()["error"] == "too_large_request"
    noise = jpeg_bytes(__import__("numpy").random.default_rng(0).integers(0, 255, (600, 600, 3), dtype="uint8"), quality=98)
    assert 500_000 < len(noise) < 1_000_000  # under the request limit, above intake.max_file_mb (0.5 MB)
    r = api.call("POST", "/match", expect=413, files={"file": ("noise.jpg", noise, "image/jpeg")})
    assert r.json()["error"] == "too_large_file"

    truncated = truncate_file(_write(tmp_path / "t.jpg", jpeg(3))).read_bytes()
    bomb = write_png_claiming(tmp_path / "bomb.png", 30000, 30000).read_bytes()
    for name, data, status, code in (
        ("cut.jpg", truncated, 422, "truncated"),
        ("empty.jpg", b"", 422, "empty"),
        ("notes.jpg", b"not an image at all\n" * 10, 415, "not_an_image"),
        ("bomb.png", bomb, 413, "too_many_pixels"),
    ):
        r = api.call("POST", "/match", expect=status, files={"file": (name, data, "image/jpeg")})
        body = r.json()
        assert body["error"] == code and body["message"].startswith(name), body
        assert str(server.root) not in body["message"]  # our temp file's path never leaks
        jsonschema.validate(body["result"], RESULT_SCHEMA)
        assert body["result"]["status"] == "rejected" and body["result"]["error_code"] == code
        r = api.call("POST", "/catalog", expect=status, files=files((name, data)), data={"label": "broken"})
        assert r.json()["failed"][0]["error"] == code

    # One bad photo among good ones: the good one is registered, the bad one reported.
    r = api.call("POST", "/catalog", expect=201, files=files(("mixed-1.jpg", jpeg(10)), ("mixed-2.jpg", truncated))).json()
    assert len(r["added"]) == 1 and r["failed"][0]["error"] == "truncated"

    # Missing fields, too many files, hostile labels and names.
    api.call("POST", "/match", expect=400, files={"other": ("q.jpg", jpeg(3), "image/jpeg")})
    api.call("POST", "/catalog", expect=400, data={"label": "x"})
    api.call("POST", "/catalog", expect=400, files=files(*[(f"n{i}.jpg", jpeg(11)) for i in range(9)]))
    for label in ("../escape", "a/b", "..", ".hidden", "x" * 65, "bad\nlabel"):
        r = api.call("POST", "/catalog", expect=400, files=files(("ok-1.jpg", jpeg(12))), data={"label": label})
        assert r.json()["error"] == "bad_label"
    r = api.call("POST", "/catalog", expect=201, files=files(("../../../../tmp/evil-1.jpg", jpeg(13)))).json()
    stored = Path(r["added"][0]["path"])
    assert stored.parent == server.root / "inbox" / "catalog" / "evil" and stored.name == r["added"][0]["id"] + ".jpg"
    r = api.call("POST", "/catalog", expect=400, files=files(("..\\..\\.x.jpg", jpeg(14))))
    assert r.json()["failed"][0]["error"] == "bad_label"
    assert not list(server.root.parent.glob("evil*")) and not Path("/tmp/evil-1.jpg").exists()
    # A cross-site page cannot post here even with the browser's cookies (there are none, but still).
    r = api.call("POST", "/match", expect=403, headers={"Origin": "http://evil.example"},
                 files={"file": ("q.jpg", jpeg(3), "image/jpeg")})
    assert r.json()["error"] == "origin_not_allowed"
    assert not list((server.root / ".teaprint" / "uploads").iterdir())  # no temp file left behind


def test_concurrent_matches_while_registering(api: Api, server: ServerProcess) -> None:
    known = api.call("POST", "/catalog", files=files(*[(f"base{i}-1.jpg", jpeg(15 + i)) for i in range(3)])).json()
    assert len(known["added"]) == 3
    before = api.call("GET", "/status", expect=200).json()["entries"]
    new = [(f"fresh{i}-1.jpg", jpeg(20 + i)) for i in range(8)]
    stop = threading.Event()
    answers: list[dict] = []

    def matcher(k: int) -> int:
        n = 0
        while n < 3 and not (stop.is_set() and n >= 2):
            i = (k + n) % 3
            result = api.call("POST", "/match", expect=200, files={"file": (f"q{k}.jpg", jpeg(15 + i), "image/jpeg")}).json()
            assert result["label"] == f"base{i}", result
            answers.append(result)
            n += 1
        return n

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(matcher, k) for k in range(6)]
        registered = []
        for start in range(0, 8, 2):
            batch = new[start : start + 2]
            body = api.call("POST", "/catalog", expect=201, files=files(*batch)).json()
            registered += body["added"]
            # Reads see a consistent index while writes go on.
            assert api.call("GET", "/status", expect=200).json()["entries"] >= before + len(registered)
        stop.set()
        total = sum(f.result() for f in futures)
    assert total >= 12 and len(registered) == 8
    for result in answers:
        jsonschema.validate(result, RESULT_SCHEMA)
    assert api.call("GET", "/status", expect=200).json()["entries"] == before + 8
    for i in (0, 4, 7):
        result = api.call("POST", "/match", expect=200, files={"file": ("again.jpg", jpeg(20 + i), "image/jpeg")}).json()
        assert result["label"] == f"fresh{i}"


def test_server_and_daemon_share_one_root(api: Api, server: ServerProcess, daemon: DaemonProcess) -> None:
    """Photos dropped in the catalog folder and posted to the API at once: one consistent index."""
    root = server.root
    daemon.wait_for_event("ready", 90)
    catalog_dir = root / "inbox" / "catalog"
    dropped = {f"drop{i}-1.jpg": jpeg(32 + i) for i in range(4)}
    via_api = [(f"api{i}-1.jpg", jpeg(36 + i)) for i in range(4)]
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:  # listings stay consistent while both write
        while not stop.is_set():
            try:
                page = api.call("GET", "/catalog", expect=200).json()
            except Exception as exc:  # reported by the main thread
                errors.append(repr(exc))
                return
            if len(page["items"]) != min(page["limit"], page["total"]):
                errors.append(f"inconsistent page {page}")

    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        for (name, data), (api_name, api_data) in zip(dropped.items(), via_api):
            (catalog_dir / name).write_bytes(data)
            api.call("POST", "/catalog", expect=201, files=files((api_name, api_data)))
        expected = {hashlib.sha256(d).hexdigest() for d in [*dropped.values(), *(d for _, d in via_api)]}
        wait_until(lambda: expected <= {e.sha256 for e in CatalogIndex(root / "index").entries()}, 30, "both writers' entries")
        # Delete one the API registered and one the daemon registered; after the
        # daemon's reconcile (every 1 s here) neither comes back.
        index = CatalogIndex(root / "index")
        gone = [index.get(hashlib.sha256(via_api[0][1]).hexdigest()), index.get(hashlib.sha256(dropped["drop0-1.jpg"]).hexdigest())]
        for entry in gone:
            api.call("DELETE", "/catalog/{entry_id}", expect=200, at={"entry_id": entry.id})
        # The daemon answers against the generation it last published to its query lane.
        latest = CatalogIndex(root / "index").generation
        wait_until(lambda: daemon.published_generation() >= latest, 30, "the daemon to publish the latest generation")
        # A query through the daemon and one through the API: the same result object.
        (root / "inbox" / "query" / "shot.jpg").write_bytes(dropped["drop2-1.jpg"])
        wait_until(lambda: any(r.get("query") == "shot.jpg" for r in results(root / "outbox")), 30, "the daemon's answer")
        from_daemon = next(r for r in results(root / "outbox") if r.get("query") == "shot.jpg")
        from_api = api.call("POST", "/match", expect=200, files={"file": ("shot.jpg", dropped["drop2-1.jpg"], "image/jpeg")}).json()
        for result in (from_daemon, from_api):
            jsonschema.validate(result, RESULT_SCHEMA)
        assert from_daemon["label"] == from_api["label"] == "drop2" and set(from_daemon) == set(from_api)
        assert from_daemon["catalog"]["generation"] >= latest
        time.sleep(1.5)  # over one reconcile period
    finally:
        stop.set()
        watcher.join()
    final = {e.sha256 for e in CatalogIndex(root / "index").entries()}
    assert expected - {e.sha256 for e in gone} <= final and not {e.sha256 for e in gone} & final
    paths = [e.path for e in CatalogIndex(root / "index").entries()]
    assert len(paths) == len(set(paths))
    assert not errors, errors[:3]
    status = api.call("GET", "/status", expect=200).json()
    assert status["entries"] == len(final) and status["daemon"]["running"] is True
    assert not [e for e in daemon.events() if e.get("level") == "error"]


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, read with prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_records_history_and_metrics_through_the_api(api: Api, server: ServerProcess) -> None:
    label = "冰岛-2020"
    at = {"label": label}
    api.call("POST", "/catalog", expect=201, files=files(("a.jpg", jpeg(41))), data={"label": label})
    assert api.call("GET", "/records/{label}", expect=404, at=at).json()["error"] == "no_record"
    # A record set through the API: a bad field refuses the whole request and writes nothing.
    bad = api.call("PUT", "/records/{label}", expect=400, at=at, json={"名称": "冰岛古树", "年份": "明年", "重量": "一饼"}).json()
    assert bad["error"] == "bad_record" and {p["field"] for p in bad["problems"]} == {"年份", "重量"}
    api.call("GET", "/records/{label}", expect=404, at=at)
    assert api.call("PUT", "/records/{label}", expect=400, at={"label": ".hidden"}, json={"notes": "x"}).json()["error"] == "bad_label"
    record = api.call("PUT", "/records/{label}", expect=200, at=at, json={"名称": "冰岛古树", "年份": 2020, "重量": "357克", "仓位": "B-12"}).json()
    assert (record["display_name"], record["year"], record["weight_g"], record["extra"]) == ("冰岛古树", 2020, 357.0, {"仓位": "B-12"})
    assert record["sources"] == [f"{label}/{label}.json"] and record["checks"]["count"] == 0
    sidecar = (server.root / "inbox" / "catalog" / label / f"{label}.json").read_text(encoding="utf-8")
    assert "冰岛古树" in sidecar and "\\u" not in sidecar
    assert api.call("GET", "/records/{label}", expect=200, at=at).json() == record

    # Answers: each counted once in /metrics and kept once in the history; a matched one carries the record.
    before = metric_samples(api.call("GET", "/metrics", expect=200).text)
    answers = [api.call("POST", "/match", expect=200, files={"file": (f"查验-{i}.jpg", jpeg(41), "image/jpeg")}).json() for i in (1, 2)]
    answers.append(api.call("POST", "/match", expect=415, files={"file": ("坏.jpg", b"not a photo", "image/jpeg")}).json()["result"])
    after = metric_samples(api.call("GET", "/metrics", expect=200).text)
    first, second = answers[0], answers[1]
    for result in answers:
        jsonschema.validate(result, RESULT_SCHEMA)
    assert first["label"] == second["label"] == label and first["record"]["display_name"] == "冰岛古树"
    assert first["record"]["checks"]["count"] == 0 and second["record"]["checks"] == {
        "count": 1, "first_at": first["created_at"], "last_at": first["created_at"]}
    for status in ("matched", "rejected"):
        key = ("teaprint_queries_total", (("component", "server"), ("source", "http"), ("status", status)))
        assert after[key] - before.get(key, 0.0) == sum(r["status"] == status for r in answers)
    total = ("teaprint_stage_seconds_count", (("component", "server"), ("stage", "total")))
    assert after[total] - before.get(total, 0.0) == 2  # a refused photo has no stages
    assert any(name == "teaprint_catalog_photos" and dict(labels)["component"] == "daemon" for name, labels in after)  # merged in

    # The history, newest first, a page at a time, with filters.
    page = api.call("GET", "/history", expect=200, query={"label": label, "limit": 1}).json()
    assert page["total"] == 2 and page["items"][0]["at"] == second["created_at"] and page["items"][0]["query"] == "查验-2.jpg"
    assert page["next"] is not None
    following = api.call("GET", "/history", expect=200, query=dict(parse_qsl(page["next"].split("?", 1)[1]))).json()
    assert [c["query"] for c in following["items"]] == ["查验-1.jpg"] and following["next"] is None
    refused = api.call("GET", "/history", expect=200, query={"status": "rejected", "source": "http", "since": "1h", "limit": 50}).json()
    assert "坏.jpg" in [c["query"] for c in refused["items"]] and all(c["status"] == "rejected" for c in refused["items"])
    assert api.call("GET", "/history", expect=400, query={"since": "last tuesday"}).json()["error"] == "bad_since"
    status = api.call("GET", "/status", expect=200).json()
    assert status["records"]["cakes"] >= 1 and status["history"]["ok"] is True and status["metrics"]["queries"]["matched"] >= 2


def test_refuses_to_serve_beyond_localhost_without_a_token(server_config: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from pipeline.cli import main

    monkeypatch.delenv("TEAPRINT_TOKEN", raising=False)
    base = ["--config", str(server_config), "--root", str(tmp_path), "serve", "--port", "0"]
    assert main([*base, "--host", "0.0.0.0"]) == 2
    assert "refusing to serve on 0.0.0.0 without a token" in capsys.readouterr().err
    monkeypatch.setenv("TEAPRINT_TOKEN", "short")
    assert main([*base, "--host", "127.0.0.1"]) == 2
    assert "at least 16 characters" in capsys.readouterr().err


def test_host_and_origin_checks() -> None:
    assert _hostname("127.0.0.1:8080") == "127.0.0.1" and _hostname("[::1]:80") == "[::1]" and _hostname("LOCALHOST") == "localhost"
    assert _hostname("evil.example:80") == "evil.example"
    assert _same_origin(None, "127.0.0.1:8080") and _same_origin("http://127.0.0.1:8080", "127.0.0.1:8080")
    assert not _same_origin("http://evil.example", "127.0.0.1:8080") and not _same_origin("null", "127.0.0.1:8080")


def test_every_documented_operation_was_exercised(api: Api, request: pytest.FixtureRequest) -> None:
    """Run last in this module: together the tests above called every operation in the document."""
    here = {item.name for item in request.session.items if item.module is request.module}
    wanted = {name for name in dir(request.module) if name.startswith("test_")}
    if here != wanted:
        pytest.skip("only meaningful when the whole module runs")
    documented = {(method, path) for path, item in api.doc["paths"].items() for method in item}
    assert documented <= api.exercised, f"never called: {sorted(documented - api.exercised)}"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
