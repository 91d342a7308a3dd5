"""Issue 11: no file can stop the daemon. A fuzz corpus through the daemon, the CLI and the API.

Real parts only: the daemon and the server run as subprocesses with their real
observer and uvicorn; files, links, FIFOs and sockets are real.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
import requests

from daemon_support import QUIET, DaemonProcess, results, root, wait_until  # noqa: F401 (root: fixture)
from fuzz_corpus import GOOD_LABEL, Case, build_cases, drop, photo, prepare_outside, _jpeg
from pipeline.catalog import CatalogIndex
from pipeline.daemon.journal import Journal, error_name
from pipeline.fsutil import TEMP_SUFFIX
from pipeline.results import load_schema

SCHEMA = load_schema()


def _is_query(case: Case) -> bool:
    """Cases that must get exactly one result in the query folder."""
    return case.expect in ("good", "refused")


def _inodes_under(root: Path) -> set[tuple[int, int]]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            found.add((st.st_dev, st.st_ino))
    return found


def _drop_all(cases: list[Case], root: Path, outside: Path, sockets: list[socket.socket]) -> dict[bytes, tuple[int, int]]:
    """Every case into both drop folders at once; the (dev, inode) of each entry kept."""
    threads = []
    folders = (root / "inbox/catalog", root / "inbox/query")
    targets = {}
    for folder in folders:
        target = folder / ".link-target.jpg"  # a dotfile: never taken itself
        target.write_bytes(_jpeg(photo(41 if "catalog" in str(folder) else 42)))
        targets[folder] = target
    inodes: dict[bytes, tuple[int, int]] = {}
    for case in cases:
        for folder in folders:
            thread = drop(case, folder, outside, targets[folder], sockets)
            if thread is not None:
                threads.append(thread)
            if case.expect != "gone":  # seen at once: the daemon may move it any moment now
                path = os.path.join(os.fsencode(folder), case.name)
                st = os.lstat(path)
                inodes[path] = (st.st_dev, st.st_ino)
    for thread in threads:
        thread.join()
    return inodes


def test_fuzz_corpus_cannot_stop_the_daemon(root: Path, tmp_path: Path, tiny_config_file: Path) -> None:
    cases = build_cases(tmp_path / "corpus-work")
    assert len(cases) >= 60
    outside = tmp_path / "outside"
    prepare_outside(outside)
    queries = [c for c in cases if _is_query(c)]
    sockets: list[socket.socket] = []
    daemon = DaemonProcess(root, tiny_config_file).start()
    inodes = _drop_all(cases, root, outside, sockets)
    # Killed mid-run: some answered, most not.
    wait_until(lambda: len(list((root / "outbox").glob("*.json"))) >= 5, 120, "first answers")
    daemon.signal(signal.SIGKILL)
    assert len(list((root / "outbox").glob("*.json"))) < len(queries), "the kill should land mid-run"
    # Left by a kill: a journal temp file. And a file that already took the daemon down twice.
    journal = root / ".teaprint/journal"
    stale = journal / f".{'c' * 24}.intent.999999.tmp"
    stale.write_text("{")
    # Temp files of an answer and of a reason whose writer is gone (a kill mid-write), beside one whose writer runs.
    gone_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                                  check=True).stdout)
    stale_answer = root / "outbox" / f".q-stale.jpg.json.{gone_pid}.tmp"
    stale_reason = root / "inbox/failed" / f".x-stale.jpg.error.json.{gone_pid}.tmp"
    being_written = root / "outbox" / f".q-writing.jpg.json.{os.getpid()}.tmp"
    not_ours = root / "outbox" / f".notes.txt.{gone_pid}.tmp"  # named like a temp file, but of no answer
    for path in (stale_answer, stale_reason, being_written, not_ours):
        path.write_text("{")
    poison = root / "inbox/query/poison.jpg"
    poison.write_bytes(_jpeg(photo(43)))
    for _ in range(2):
        Journal(journal).begin_attempt(poison)
    inodes[os.fsencode(poison)] = (poison.lstat().st_dev, poison.lstat().st_ino)

    restarted = DaemonProcess(root, tiny_config_file).start()
    try:
        expected = Counter([c.text for c in queries] + ["poison.jpg"])
        wait_until(lambda: len(list((root / "outbox").glob("*.json"))) >= sum(expected.values()), 180, "every query answered")
        good_catalog = {str(root / "inbox/catalog" / c.text) for c in cases if c.expect == "good"}
        wait_until(lambda: good_catalog <= {e.path for e in CatalogIndex(root / "index").entries()}, 120, "good catalog photos registered")
        latest = CatalogIndex(root / "index").generation  # committed is not yet visible to queries: wait for its publication
        wait_until(lambda: restarted.published_generation() >= latest, 60, "the daemon to publish the registered catalog")
        # Alive, and still right: a valid query of a registered cake.
        (root / "inbox/query/check.jpg").write_bytes((root / f"inbox/catalog/{GOOD_LABEL}-front.jpg").read_bytes())
        wait_until(lambda: (root / "outbox/check.json").exists(), 60, "the check query")
        assert restarted.proc.poll() is None
        check = json.loads((root / "outbox/check.json").read_text())
        # broken-exif.jpg holds the same JPEG stream as the good photo (only an EXIF block differs), so the two
        # registered photos tie on every descriptor: either label is the right answer.
        assert check["status"] != "rejected" and check["matches"][0]["label"] in (GOOD_LABEL, "broken")
        assert {m["label"] for m in check["matches"][:2]} == {GOOD_LABEL, "broken"}
        time.sleep(1.5)  # room for a second answer to show up
        got = results(root / "outbox")
        for r in got:
            jsonschema.validate(r, SCHEMA)
        # Exactly one JSON per query file, names kept exactly (os.fsdecode round trip).
        assert Counter(r["query"] for r in got) == expected + Counter(["check.jpg"])
        by_name = {r["query"]: r for r in got}
        for case in queries:
            status = by_name[case.text]["status"]
            assert (status != "rejected") == (case.expect == "good"), (case.why, by_name[case.text]["error"])
        assert by_name["poison.jpg"]["error_code"] == "crashed_daemon"
        for leak in ("link-passwd.jpg", "link-outjpeg.jpg", "link-devzero.jpg"):
            assert by_name[leak]["sha256"] is None and by_name[leak]["error_code"] == "outside_root"
        assert by_name["fifo.jpg"]["error_code"] == "not_a_file"
        # Nothing lost: every dropped entry is still somewhere under the root.
        present = _inodes_under(root)
        lost = [p for p, ino in inodes.items() if ino not in present]
        assert not lost, lost
        assert len(inodes) == 2 * sum(c.expect != "gone" for c in cases) + 1
        # Every file moved aside has its reason beside it (the catalog lane may still be writing the last reasons:
        # its refusals are not among what was waited for above).
        failed = root / "inbox/failed"
        refused = 2 * sum(c.expect == "refused" for c in cases) + 1

        def reasons_written() -> bool:
            # A reason is written to a hidden temp name and renamed in: count once none is in flight. (A temp file left
            # by the kill, `.bad-idat-1.png.error.json.<pid>.tmp`, stayed for good and was counted as a moved photo
            # until the daemon's start removed such files.)
            names = os.listdir(os.fsencode(failed))
            in_flight = any(n.startswith(b".") and n.endswith(TEMP_SUFFIX.encode()) for n in names)
            return not in_flight and sum(n.endswith(b".error.json") for n in names) >= refused

        wait_until(reasons_written, 60, "every refused file's reason")
        moved = [n for n in os.listdir(os.fsencode(failed)) if not n.endswith(b".error.json")]
        assert len(moved) == refused
        for name in moved:
            text = os.fsdecode(name)
            assert os.path.lexists(failed / error_name(text)), text
        assert not stale.exists() and not stale_answer.exists() and not stale_reason.exists()
        assert being_written.exists() and not_ours.exists()  # its writer (this test) still runs; not an answer's
        status = json.loads((root / ".teaprint/status.json").read_text())  # Engine.status with the daemon's live section
        assert status["daemon"]["ignored"]["query_directories"] == ["folder.jpg"]
        assert [e for e in restarted.events() if e.get("event") == "ignored_directory"][0]["file"] == "folder.jpg"
        assert len([e for e in restarted.events() if e.get("event") == "ignored_directory"]) == 1
    finally:
        t0 = time.monotonic()
        code = restarted.signal(signal.SIGTERM)
        stopped_in = time.monotonic() - t0
        for sock in sockets:
            sock.close()
    assert code == 0 and stopped_in < 5.0, (code, stopped_in)
    for log in (daemon.log_path, restarted.log_path):
        assert "Traceback" not in log.read_text(errors="replace"), log.read_text(errors="replace")[-3000:]


def _corpus_folder(folder: Path, outside: Path, cases: list[Case], sockets: list[socket.socket]) -> None:
    folder.mkdir(parents=True)
    target = folder / ".link-target.jpg"
    target.write_bytes(_jpeg(photo(44)))
    for case in cases:
        thread = drop(case, folder, outside, target, sockets)
        if thread is not None:
            thread.join()


def test_fuzz_corpus_through_cli_and_http(tmp_path: Path, tiny_config_file: Path) -> None:
    from test_server import TOKEN, ServerProcess

    cases = build_cases(tmp_path / "corpus-work")
    outside = tmp_path / "outside"
    prepare_outside(outside)
    corpus = tmp_path / "corpus"
    sockets: list[socket.socket] = []
    _corpus_folder(corpus, outside, cases, sockets)
    present = [c for c in cases if c.expect in ("good", "refused")]
    env = {**os.environ, **QUIET}
    cli = [sys.executable, "-m", "pipeline", "--config", str(tiny_config_file), "--root", str(tmp_path / "cli-root")]
    try:
        # teaprint index FOLDER: one line per refused file, every good file registered.
        run = subprocess.run(cli + ["index", str(corpus)], capture_output=True, env=env, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        assert b"Traceback" not in run.stderr
        skipped = [line for line in run.stderr.splitlines() if line.startswith(b"skipped ")]
        assert len(skipped) == sum(c.expect == "refused" for c in cases), b"\n".join(skipped)
        entries = {e.path for e in CatalogIndex(tmp_path / "cli-root/index").entries()}
        assert {str(corpus / c.text) for c in cases if c.expect == "good"} <= entries
        # teaprint match --json: one result per input, named exactly, files given as raw bytes.
        args = [os.path.join(os.fsencode(corpus), c.name) for c in present]
        run = subprocess.run(cli + ["match", "--json", *args], capture_output=True, env=env, timeout=300)
        assert run.returncode == 1 and b"Traceback" not in run.stderr  # 1: some were rejected
        lines = [json.loads(line) for line in run.stdout.splitlines()]
        assert [r["query"] for r in lines] == [c.text for c in present]
        for case, r in zip(present, lines):
            jsonschema.validate(r, SCHEMA)
            # A file named on the command line may be a link out (the user chose it), if it leads to a photo.
            good = case.expect == "good" or case.name == b"link-outjpeg.jpg"
            assert (r["status"] != "rejected") == good, (case.why, r["error"])
    finally:
        for sock in sockets:
            sock.close()

    # The HTTP API: every readable file as an upload; one answer each, never a 500.
    server = ServerProcess(tmp_path / "http-root", tiny_config_file).start()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        uploads = [c for c in cases if c.kind in ("file", "slow")]
        for case in uploads:
            name = case.text.encode("utf-8", "backslashreplace").decode("utf-8")
            r = requests.post(server.url + "/match", files={"file": (name, case.content)}, headers=headers, timeout=60)
            assert r.status_code < 500, (case.why, r.status_code, r.text[:300])
            if case.expect == "good":
                assert r.status_code == 200 and r.json()["status"] != "rejected", (case.why, r.text[:300])
            else:
                assert 400 <= r.status_code < 500 and r.json()["result"]["status"] == "rejected", (case.why, r.text[:300])
        registered = 0
        for case in uploads:
            name = case.text.encode("utf-8", "backslashreplace").decode("utf-8")
            r = requests.post(server.url + "/catalog", files={"files": (name, case.content)}, data={"label": "fuzz"},
                              headers=headers, timeout=60)
            assert r.status_code < 500, (case.why, r.status_code, r.text[:300])
            body = r.json()
            if case.expect == "good":
                assert r.status_code in (200, 201) and not body.get("failed"), (case.why, r.text[:300])
                registered += r.status_code == 201
            else:
                assert body.get("failed") or body.get("error"), (case.why, r.text[:300])
        total = requests.get(server.url + "/catalog?limit=500", headers=headers, timeout=30).json()
        assert registered == sum(c.expect == "good" for c in uploads)
        assert total["total"] >= registered
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log_path.read_text(errors="replace")
