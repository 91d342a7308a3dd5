"""`teaprint doctor` on real setups: a good one (exit 0) and a deliberately broken one (exit 1, the right messages)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from conftest import source_photos, write_rgb
from pipeline.ops.doctor import Diagnosis, Finding, diagnose, filesystem_type, token_bits

STRONG = "kV3r-7yQ_pL9mZ2x-Ht5wN8bC4dF6gJ1s"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def config_file(tmp_path: Path, tiny_config_file: Path, extra: str = "") -> Path:
    path = tmp_path / "teaprint.yaml"
    path.write_text(tiny_config_file.read_text() + extra)
    return path


def by_check(diagnosis: Diagnosis) -> dict[str, list]:
    out: dict[str, list] = {}
    for finding in diagnosis.findings:
        out.setdefault(finding.check, []).append(finding)
    return out


def teaprint_doctor(capsys: pytest.CaptureFixture[str], root: Path, config: Path, *options: str) -> tuple[int, Diagnosis, str]:
    """`teaprint doctor` twice, as a user runs it: the findings (--json) and the screen, with the exit codes."""
    from pipeline.cli import main

    base = ["--config", str(config), "--root", str(root), "doctor", *options]
    code = main([*base, "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["exit_code"] == code
    screen_code = main(base)
    screen = capsys.readouterr().out.rstrip("\n")
    assert screen_code == code
    return code, Diagnosis(Path(data["root"]), tuple(Finding(**f) for f in data["findings"])), screen


def test_a_good_setup_exits_0(tmp_path: Path, tiny_config_file: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.config import load_config
    from pipeline.engine import Engine

    root = tmp_path / "root"
    photos = source_photos()
    for name in ("astronaut", "coffee"):
        write_rgb(root / "inbox" / "catalog" / name / "1.jpg", photos[name])
    (root / "inbox" / "catalog" / "coffee" / "coffee.json").write_text('{"名称": "咖啡色饼", "年份": 2019}', encoding="utf-8")
    config = config_file(tmp_path, tiny_config_file, f"http:\n  port: {free_port()}\n")
    engine = Engine.load(load_config(config), root)
    engine.index_files(sorted((root / "inbox" / "catalog").rglob("*.jpg")), catalog_root=root / "inbox" / "catalog")
    monkeypatch.setenv("TEAPRINT_TOKEN", STRONG)

    code, diagnosis, text = teaprint_doctor(capsys, root, config)

    found = by_check(diagnosis)
    assert code == 0, text
    assert [f.level for f in found["daemon"]] == ["warn"]  # not running here: said, but not a failure
    assert all(f.level == "ok" for check, fs in found.items() if check != "daemon" for f in fs), diagnosis.text()
    assert "agrees with" in found["index"][0].message and "2 photos, 2 cakes" in found["index"][0].message
    assert found["records"][0].message == "1 cake records, no problems"
    assert "strong" in found["token"][0].message and "is free" in found["port"][0].message
    assert text == diagnosis.text() and len(text.splitlines()) < 25 and text.splitlines()[-1] == "0 problems, 1 warning; exit 0"


def test_a_broken_setup_exits_1_with_the_fixes(tmp_path: Path, tiny_config_file: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    for i in range(6):
        (root / "inbox" / "catalog" / f"cake-{i}").mkdir(parents=True)
    (root / "outbox").mkdir()
    os.chown(root, 65534, 65534)  # the service runs as the owner of the root (nobody here) ...
    os.chmod(root / "outbox", 0o755)  # ... who cannot write the outbox root owns
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    config = tmp_path / "broken.yaml"
    config.write_text(f"model:\n  path: {tmp_path / 'no-such-model.keras'}\n"
                      f"doctor:\n  inotify_max_user_watches: 5\n"
                      f"http:\n  port: {port}\n  host: 0.0.0.0\n")
    monkeypatch.setenv("TEAPRINT_TOKEN", "aaaaaaaaaaaaaaaaaaaa")
    try:
        code, diagnosis, text = teaprint_doctor(capsys, root, config)
    finally:
        busy.close()

    found = by_check(diagnosis)
    assert code == 1, text
    assert found["model"][0].level == "fail" and "model file missing" in found["model"][0].message
    (outbox,) = [f for f in found["folders"] if f.message.startswith("outbox ")]
    assert outbox.level == "fail" and "no write permission for nobody" in outbox.message
    assert outbox.fix == f"sudo chown -R nobody: {root / 'outbox'}"
    (inotify,) = found["inotify"]
    assert inotify.level == "fail" and "8 folders to watch, inotify watch limit 5 (doctor.inotify_max_user_watches)" in inotify.message
    assert inotify.fix is not None and "sudo sysctl fs.inotify.max_user_watches=524288" in inotify.fix
    assert "/etc/sysctl.d/" in inotify.fix
    assert found["port"][0].level == "fail" and f"port {port} on 0.0.0.0 is used by another program" in found["port"][0].message
    assert found["token"][0].level == "warn" and "weak" in found["token"][0].message
    assert "secrets.token_urlsafe" in (found["token"][0].fix or "")
    assert "FAIL  inotify" in text and "fix: sudo sysctl fs.inotify.max_user_watches=524288" in text
    assert len(text.splitlines()) < 30


def test_bad_config_history_and_records_are_reported(tmp_path: Path, tiny_config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("daemon:\n  wachers: 3\n")
    code, diagnosis, text = teaprint_doctor(capsys, tmp_path, bad)  # a config error is a finding, not a usage error (exit 2)
    assert code == 1 and "unknown config key 'daemon.wachers'" in diagnosis.findings[0].message and "FAIL  config" in text

    root = tmp_path / "root"
    (root / ".teaprint").mkdir(parents=True)
    (root / ".teaprint" / "history.sqlite").write_bytes(b"garbage, not sqlite" * 64)
    (root / "inbox" / "catalog").mkdir(parents=True)
    (root / "inbox" / "catalog" / "cakes.csv").write_text("名称\n无标签\n", encoding="utf-8")
    code, diagnosis, _ = teaprint_doctor(capsys, root, config_file(tmp_path, tiny_config_file), "--no-serve")
    found = by_check(diagnosis)
    assert code == 1 and found["history"][0].level == "fail" and "mv " in (found["history"][0].fix or "")
    assert found["records"][0].level == "warn" and "no label column" in found["records"][0].message
    assert "port" not in found and "token" not in found


def test_a_drop_folder_on_a_network_share_advises_polling(tmp_path: Path, tiny_config_file: Path) -> None:
    root = tmp_path / "root"
    (root / "inbox" / "query").mkdir(parents=True)
    mountinfo = (
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
        f"98 22 0:53 / {root / 'inbox'} rw,relatime shared:40 - nfs4 nas.local:/tea rw,vers=4.2,addr=10.0.0.5\n"
    )
    assert filesystem_type(root / "inbox" / "query", mountinfo) == "nfs4"
    assert filesystem_type(root / "outbox", mountinfo) == "ext4"
    found = by_check(diagnose(root, config_file(tmp_path, tiny_config_file), serve=False, mountinfo=mountinfo))
    assert [f.level for f in found["share"]] == ["warn", "warn"]
    assert "network share (nfs4)" in found["share"][0].message and found["share"][0].fix == "set daemon.watch.mode: polling"
    polling = config_file(tmp_path, tiny_config_file, "daemon:\n  watch:\n    mode: polling\n")
    found = by_check(diagnose(root, polling, serve=False, mountinfo=mountinfo))
    assert [f.level for f in found["share"]] == ["ok"] and found["inotify"][0].message.startswith("daemon.watch.mode is polling")


def test_token_bits_ranks_tokens() -> None:
    assert token_bits("aaaaaaaaaaaaaaaaaaaa") < 100 < token_bits(STRONG)
    assert token_bits("abcdefgh12345678") < 100 and token_bits("0123456789012345") < 100
    assert token_bits("Xq7#mP2v!Lr9sK4z") > 100  # 16 random characters of four classes
