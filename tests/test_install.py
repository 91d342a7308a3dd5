"""`pip install .` (not editable) gives a `teaprint` that runs anywhere with its shipped model and settings.

What this proves is that the package and its data files (settings, schema,
the encoder) install and run from outside the source tree: the tree is
copied as a clone would have it (tracked files), built into a wheel by pip
and installed into a fresh virtual environment. To stay fast and offline,
that environment sees the test environment's installed dependencies through
a `.pth` line (a path, so none of that folder's own `.pth` files run: the
source checkout's editable install stays invisible), and pip installs with
`--no-deps --no-build-isolation`. Every command then runs from another
directory with no PYTHONPATH, on the shipped model and `default.yaml`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import site
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, rotated_view, source_photos, write_rgb


def _clone(dest: Path) -> Path:
    """The source tree as a clean clone has it: the files git tracks (and new ones it does not ignore)."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, listed):
        source = REPO / os.fsdecode(name)
        if source.is_file():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / os.fsdecode(name))
    return dest


def _venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    (purelib,) = (path / "lib").glob("python3*/site-packages")
    (purelib / "test-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return path


def test_pip_install_runs_index_match_status_and_run_from_anywhere(tmp_path: Path) -> None:
    venv = _venv(tmp_path / "V")
    source = _clone(tmp_path / "clone")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--no-index", "--disable-pip-version-check", str(source)],
                             capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    shutil.rmtree(source)  # nothing may be read from the source tree any more
    teaprint = str(venv / "bin" / "teaprint")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "R"
    photos = list(source_photos().items())[:4]
    for name, rgb in photos:
        write_rgb(tmp_path / "photos" / f"{name}-1.jpg", rgb)

    def teaprint_run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([teaprint, "--root", str(root), *args], capture_output=True, text=True, env=env,
                              cwd=str(elsewhere), timeout=300)
        assert proc.returncode == 0, f"teaprint {' '.join(args)}: {proc.stderr[-3000:]}"
        return proc

    assert "indexed 4 new" in teaprint_run("index", str(tmp_path / "photos")).stdout
    name, rgb = photos[1]
    query = write_rgb(tmp_path / "q" / "query.jpg", rotated_view(rgb, 30))
    result = json.loads(teaprint_run("match", "--json", str(query)).stdout)
    assert result["status"] == "matched" and result["label"] == name
    status = json.loads(teaprint_run("status", "--json").stdout)
    installed = venv.resolve()
    assert Path(status["model"]["path"]).resolve().is_relative_to(installed), status["model"]
    assert status["entries"] == 4 and status["model_matches_index"] and status["model"]["runtime"] == "litert"

    daemon = subprocess.Popen([teaprint, "--root", str(root), "run"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=str(elsewhere))
    try:
        answer = root / "outbox" / "dropped.json"
        (root / "inbox" / "query").mkdir(parents=True, exist_ok=True)
        shutil.copy(query, root / "inbox" / "query" / "dropped.jpg")
        deadline = time.monotonic() + 180
        while not answer.exists() and daemon.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert answer.exists(), daemon.stderr.read()[-3000:] if daemon.poll() is not None else "no answer in 180 s"
        assert json.loads(answer.read_text())["label"] == name
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
