"""The systemd units: written by install_service for a real root and checked by the real `systemd-analyze verify`.

Not skipped when systemd-analyze is missing: `make test` installs Debian's systemd package (see Makefile).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.ops.install import default_command, exec_line, install_service, render_unit, unit_template

REPO = Path(__file__).resolve().parent.parent


def verify(unit: Path, user_mode: bool, tmp_path: Path) -> subprocess.CompletedProcess:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze not found; `make test` installs Debian's systemd package"
    env = dict(os.environ)
    if user_mode:  # the user manager wants a runtime folder even offline
        runtime = tmp_path / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime)
    scope = ["--user"] if user_mode else []
    return subprocess.run([tool, *scope, "verify", str(unit)], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("user_mode", [False, True], ids=["system", "user"])
def test_installed_units_pass_systemd_analyze_verify(tmp_path: Path, user_mode: bool) -> None:
    root = tmp_path / "tea root %1"  # a space and a % in the path: both must be escaped
    root.mkdir()
    config = tmp_path / "teaprint.yaml"
    config.write_text("logging:\n  format: json\n")
    report = install_service(root, user_mode=user_mode, serve=True, config=config, unit_dir=tmp_path / "units", enable=False)

    assert [u.name for u in report.units] == ["teaprint.service", "teaprint-serve.service"]
    scope = ["--user"] if user_mode else []
    assert report.commands[1] == ("systemctl", *scope, "enable", "--now", "teaprint.service", "teaprint-serve.service")
    for unit in report.units:
        done = verify(unit, user_mode, tmp_path)
        assert done.returncode == 0 and done.stderr.strip() == "", f"{unit.name}:\n{done.stderr}"
        text = unit.read_text()
        assert "Restart=on-failure" in text and "RestartPreventExitStatus=2" in text
        assert f"WorkingDirectory={tmp_path}/tea root %%1" in text
        assert ("User=" in text) is not user_mode and ("WantedBy=default.target" in text) is user_mode
    run_unit = report.units[0].read_text()
    assert f'--config {config} --root "{tmp_path}/tea root %%1" run' in run_unit
    assert report.units[0].read_text().count("ExecStart=") == 1


def test_a_broken_unit_fails_verify(tmp_path: Path) -> None:
    """The check can fail: a unit naming a missing program and a bad Restart= is refused."""
    text = render_unit(unit_template("teaprint.service"), ["/nonexistent/teaprint", "run"], tmp_path, user_mode=False)
    unit = tmp_path / "teaprint.service"
    unit.write_text(text.replace("Restart=on-failure", "Restart=sometimes"))
    done = verify(unit, False, tmp_path)
    assert done.returncode != 0 and "sometimes" in done.stderr and "/nonexistent/teaprint" in done.stderr


def test_the_contrib_units_are_the_shipped_ones_and_run_the_right_commands() -> None:
    for name, subcommand in (("teaprint.service", "run"), ("teaprint-serve.service", "serve")):
        assert (REPO / "contrib" / name).read_text() == unit_template(name)
        exec_start = [line for line in unit_template(name).splitlines() if line.startswith("ExecStart=")]
        assert exec_start == [f"ExecStart=/opt/teaprint/.venv/bin/teaprint --root /var/lib/teaprint {subcommand}"]


def test_exec_line_quotes_like_systemd_and_the_default_command_runs(tmp_path: Path) -> None:
    assert exec_line(["/opt/t p/teaprint", "--root", "/srv/50%", "run"]) == '"/opt/t p/teaprint" --root /srv/50%% run'
    done = subprocess.run([*default_command(), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "drop-folder daemon" in done.stdout


def test_enable_reports_systemctl_failure_instead_of_raising(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    fake_systemctl = tmp_path / "systemctl"  # a real program that fails the way systemctl does without systemd
    fake_systemctl.write_text("#!/bin/sh\necho 'System has not been booted with systemd as init system (PID 1).' >&2\nexit 1\n")
    fake_systemctl.chmod(0o755)
    report = install_service(root, user_mode=True, unit_dir=tmp_path / "units", systemctl=str(fake_systemctl))
    assert not report.ok and len(report.outcomes) == 1  # stops at the first failure
    lines = report.lines()
    assert lines[0] == f"wrote {tmp_path}/units/teaprint.service"
    assert any(line.startswith("FAILED") and "not been booted with systemd" in line for line in lines)
    with pytest.raises(ValueError, match="not a folder"):
        install_service(tmp_path / "missing", user_mode=True, unit_dir=tmp_path / "units", enable=False)


def test_teaprint_install_service_writes_units_that_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert main(["--root", str(root), "install-service", "--user", "--serve", "--no-enable"]) == 0
    out = capsys.readouterr().out
    units = tmp_path / "home" / ".config" / "systemd" / "user"
    assert f"wrote {units / 'teaprint.service'}" in out and f"wrote {units / 'teaprint-serve.service'}" in out
    assert "  systemctl --user enable --now teaprint.service teaprint-serve.service" in out
    for name in ("teaprint.service", "teaprint-serve.service"):
        done = verify(units / name, True, tmp_path)
        assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
    assert f"--root {root} serve" in (units / "teaprint-serve.service").read_text()
    assert main(["--root", str(tmp_path / "missing"), "install-service", "--user", "--no-enable"]) == 2
    assert "not a folder" in capsys.readouterr().err
