"""Run the real daemon as a subprocess on a temp root, and make drop-folder photos."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import cv2
import pytest
import numpy as np

from conftest import REPO, source_photos

QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}


class DaemonProcess:
    """`teaprint --config CFG --root ROOT run` in a subprocess, log to a file."""

    def __init__(self, root: Path, config: Path) -> None:
        self.root = root
        self.config = config
        self.log_path = root / f"daemon-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, wait_ready: bool = True, timeout: float = 90.0) -> "DaemonProcess":
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "--config", str(self.config), "--root", str(self.root), "run"],
            stdout=self.log_file, stderr=subprocess.STDOUT, env={**os.environ, **QUIET}, cwd=str(self.root),
        )
        if wait_ready:
            self.wait_for_event("ready", timeout)
        return self

    def events(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def wait_for_event(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e.get("event") == name for e in self.events()):
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"no {name!r} event in {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def published_generation(self) -> int:
        """The newest catalog generation the daemon made visible to queries (-1 before any)."""
        return max((e["generation"] for e in self.events() if e.get("event") == "published"), default=-1)

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        self.log_file.close()
        return code

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGTERM)


def children(pid: int) -> dict[int, tuple[int, str]]:
    """Live child processes of `pid` (read from /proc): pid -> (nice, command line)."""
    out = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        # After the command name: state, ppid, ...; nice is field 19 of proc(5)'s stat, index 16 here.
        if int(fields[1]) == pid and fields[0] != "Z":
            out[int(proc.name)] = (int(fields[16]), cmdline)
    return out


def alive(pid: int) -> bool:
    """`pid` exists and is not a zombie."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def distinct_photos(count: int, side: int = 160, seed: int = 0) -> list[np.ndarray]:
    """`count` different RGB crops (different objects) cut from the bundled photos."""
    rng = np.random.default_rng(seed)
    sources = list(source_photos().values())
    out = []
    for i in range(count):
        src = sources[i % len(sources)]
        h, w = src.shape[:2]
        crop = min(h, w) // 2
        y, x = int(rng.integers(0, h - crop)), int(rng.integers(0, w - crop))
        patch = cv2.resize(src[y : y + crop, x : x + crop], (side, side), interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(patch))
    return out


def jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def write_slowly(path: Path, data: bytes, seconds: float = 2.0, chunks: int = 10) -> threading.Thread:
    """Write `data` to `path` in chunks spread over `seconds`, holding it open."""

    def run() -> None:
        step = max(1, len(data) // chunks)
        with open(path, "wb") as fh:
            for i in range(0, len(data), step):
                fh.write(data[i : i + step])
                fh.flush()
                time.sleep(seconds / chunks)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def results(outbox: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(outbox.glob("*.json"))]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A daemon root with empty drop folders (import this fixture into a test module to use it)."""
    r = tmp_path / "root"
    (r / "inbox" / "catalog").mkdir(parents=True)
    (r / "inbox" / "query").mkdir(parents=True)
    return r
