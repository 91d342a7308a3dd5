"""BLAS on one thread in serving processes (`pipeline.threads`): real engine, real spawned worker, real OpenBLAS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

# Runs in a fresh interpreter: this test process has loaded an engine already.
PROBE = """
import json, multiprocessing, os, sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from threadpoolctl import threadpool_info
from pipeline.config import load_config
from pipeline.daemon.pool import _worker_init
from pipeline.engine import Engine

def blas():
    return sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})

if __name__ == "__main__":
    before = blas()
    # A catalog worker started before the engine loads: its own start-up must limit it.
    early = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                                initargs=(os.getpid(), os.getpriority(os.PRIO_PROCESS, 0)))
    worker = early.submit(blas).result()
    early.shutdown()
    Engine.load(load_config(Path(sys.argv[1])), Path(sys.argv[2]))
    after = blas()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as late:
        spawned = late.submit(blas).result()
    print(json.dumps({"before": before, "worker": worker, "after": after, "spawned": spawned,
                      "env": os.environ.get("OPENBLAS_NUM_THREADS")}))
"""


def probe(tmp_path: Path, config: Path, **env: str) -> dict:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    clean = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"} | env
    clean["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, str(script), str(config), str(tmp_path / "root")], env=clean,
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_an_engine_and_its_catalog_workers_run_blas_on_one_thread(tmp_path: Path, tiny_config_file: Path) -> None:
    seen = probe(tmp_path, tiny_config_file)
    assert seen["worker"] == [1], "a catalog worker started before the engine loaded"
    assert seen["after"] == [1], "the process that loaded the engine"
    assert seen["spawned"] == [1], "a process started after the engine loaded"
    assert seen["env"] == "1"


def test_a_users_own_blas_thread_count_is_kept(tmp_path: Path, tiny_config_file: Path) -> None:
    seen = probe(tmp_path, tiny_config_file, OPENBLAS_NUM_THREADS="2")
    assert seen["env"] == "2"
    assert seen["after"] == seen["before"]
