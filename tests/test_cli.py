"""The `teaprint` command end to end, in process, on real files and a real tiny model."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from conftest import REPO, rotated_view, source_photos, write_rgb
from pipeline.cli import main
from pipeline.results import load_schema

SCHEMA = load_schema()


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return source_photos()


@pytest.fixture
def catalog_dir(tmp_path: Path, photos: dict[str, np.ndarray]) -> Path:
    folder = tmp_path / "catalog"
    for name, rgb in photos.items():
        write_rgb(folder / f"{name}-000001.jpg", rgb)
    return folder


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_index_then_match_rotated_copies_returns_own_label(
    tmp_path: Path, catalog_dir: Path, photos: dict[str, np.ndarray], tiny_config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Arbitrary photos, not cakes: described whole (the cake locator's rotated cakes are in test_locate_pipeline.py;
    # on a coffee cup it may find the saucer in one copy and not in another).
    whole = tmp_path / "whole.yaml"
    whole.write_text(tiny_config_file.read_text() + "locate:\n  enabled: false\n")
    base = ["--config", str(whole), "--root", str(tmp_path / "root")]
    code, out, _ = run(capsys, *base, "index", str(catalog_dir))
    assert code == 0 and "indexed 8 new" in out
    queries = []
    for name, rgb in photos.items():
        queries.append(write_rgb(tmp_path / "q" / f"{name}_r90.png", np.ascontiguousarray(np.rot90(rgb))))
        queries.append(write_rgb(tmp_path / "q" / f"{name}_r37.jpg", rotated_view(rgb, 37, gain=1.1)))
    code, out, _ = run(capsys, *base, "match", "--json", *map(str, queries))
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == len(queries)
    for result in lines:
        jsonschema.validate(result, SCHEMA)
        expected = result["query"].split("_r")[0]
        assert result["matches"][0]["label"] == expected, result["query"]
        assert result["status"] == "matched" and result["label"] == expected
        assert set(result["timings_ms"]) >= {"decode", "lbp", "embed", "shortlist", "refine", "total"}
        assert result["cake"] is None  # the locator is off


def test_duplicates_non_ascii_status_and_remove(
    tmp_path: Path, catalog_dir: Path, photos: dict[str, np.ndarray], tiny_config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--config", str(tiny_config_file), "--root", str(tmp_path / "root")]
    special = write_rgb(tmp_path / "more" / "普洱茶饼-2019 春.jpg", photos["coffee"][::2, ::2].copy())
    sub = write_rgb(tmp_path / "more" / "老班章" / "photo 1.jpg", photos["rocket"][::2, ::2].copy())
    assert run(capsys, *base, "index", str(catalog_dir), str(tmp_path / "more"))[0] == 0
    code, out, _ = run(capsys, *base, "index", str(catalog_dir))
    assert code == 0 and "indexed 0 new, 8 already present" in out
    code, out, _ = run(capsys, *base, "status", "--json")
    status = json.loads(out)
    assert status["entries"] == 10 and status["labels"] == 10
    assert status["index"]["size_bytes"] > 0 and status["model"]["id"]
    code, out, _ = run(capsys, *base, "match", "--json", str(special))
    assert json.loads(out)["label"] == "普洱茶饼"
    code, out, _ = run(capsys, *base, "match", "--json", str(sub))
    assert json.loads(out)["label"] == "老班章"
    entry_id = json.loads(out)["matches"][0]["id"]
    assert run(capsys, *base, "remove", entry_id)[0] == 0
    code, out, _ = run(capsys, *base, "match", "--json", str(sub))
    assert all(m["id"] != entry_id for m in json.loads(out)["matches"])
    assert run(capsys, *base, "remove", "ffffffffffff")[0] == 2


def test_a_chinese_record_in_cli_results_and_the_history_round_trips(
    tmp_path: Path, photos: dict[str, np.ndarray], tiny_config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.history import History, read_csv

    root = tmp_path / "root"
    catalog = root / "inbox" / "catalog"
    front = write_rgb(catalog / "普洱-2019" / "正面.jpg", photos["coffee"])
    write_rgb(catalog / "易武" / "1.jpg", photos["chelsea"])
    (catalog / "普洱-2019" / "普洱-2019.json").write_text(
        '{"名称": "勐海 7542 青饼", "年份": 2019, "生产商": "勐海茶厂", "重量": "357克"}', encoding="utf-8")
    (tmp_path / "broken.jpg").write_bytes(b"not a photo")
    base = ["--config", str(tiny_config_file), "--root", str(root)]
    assert run(capsys, *base, "index", str(catalog))[0] == 0

    code, out, _ = run(capsys, *base, "match", "--json", str(front), str(write_rgb(tmp_path / "易武照.jpg", photos["chelsea"])),
                       str(tmp_path / "broken.jpg"))
    assert code == 1  # the broken photo
    first, other, broken = [json.loads(line) for line in out.splitlines()]
    for result in (first, other, broken):
        jsonschema.validate(result, SCHEMA)
    assert first["label"] == "普洱-2019" and first["record"]["display_name"] == "勐海 7542 青饼" and first["record"]["weight_g"] == 357.0
    assert "勐海 7542 青饼" in out and "\\u" not in out  # UTF-8 text, not escapes
    assert other["label"] == "易武" and "record" not in other and broken["status"] == "rejected"
    code, out, _ = run(capsys, *base, "match", str(front))
    assert "record: 勐海 7542 青饼, 2019, 勐海茶厂, 357 g, identified 1 times before, last " + first["created_at"] in out

    # The history as CSV, UTF-8 whatever the locale says, read back: the same checks, Chinese intact.
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONIOENCODING": "ascii", "LC_ALL": "C"}
    done = subprocess.run([sys.executable, "-m", "pipeline", *base, "history", "--csv"], capture_output=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("\ufeff".encode()) and "普洱-2019,".encode() in done.stdout  # UTF-8 with a BOM, for Excel
    stored = History(root / ".teaprint" / "history.sqlite").checks()
    assert read_csv(io.StringIO(done.stdout.decode("utf-8"))) == stored and len(stored) == 4
    assert [c.label for c in stored] == ["普洱-2019", "易武", None, "普洱-2019"] and {c.source for c in stored} == {"cli"}
    code, out, _ = run(capsys, *base, "history", "--json", "--label", "普洱-2019", "--since", "1h")
    assert [json.loads(line)["query"] for line in out.splitlines()] == ["正面.jpg", "正面.jpg"] and "普洱-2019" in out
    assert run(capsys, *base, "history", "--since", "yesterday-ish")[0] == 2


def test_model_mismatch_is_refused_then_reembedded(
    tmp_path: Path, catalog_dir: Path, tiny_config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.training.model import build_encoder, save_encoder

    root = tmp_path / "root"
    assert run(capsys, "--config", str(tiny_config_file), "--root", str(root), "index", str(catalog_dir))[0] == 0
    other = tmp_path / "other.keras"
    save_encoder(build_encoder(input_size=32, channels=3, embedding_dim=16, width=4, seed=2), other, {"threshold": 0.5})
    config = tmp_path / "other.yaml"
    config.write_text(f"model:\n  path: {other}\n")
    query = next(catalog_dir.iterdir())
    code, _, err = run(capsys, "--config", str(config), "--root", str(root), "match", str(query))
    assert code == 1 and "reembed" in err
    code, out, _ = run(capsys, "--config", str(config), "--root", str(root), "reembed")
    assert code == 0 and "re-embedded 8" in out
    code, out, _ = run(capsys, "--config", str(config), "--root", str(root), "match", "--json", str(query))
    assert code == 0 and json.loads(out)["matches"][0]["label"] == query.name.split("-")[0]


def test_bad_inputs_are_rejected_with_one_line_and_exit_1(tmp_path: Path, tiny_config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    base = ["--config", str(tiny_config_file), "--root", str(tmp_path / "root")]
    code, out, err = run(capsys, *base, "match", "--json", str(tmp_path / "empty.jpg"), str(tmp_path / "text.jpg"))
    assert code == 1 and "Traceback" not in err
    results = [json.loads(line) for line in out.splitlines()]
    for result in results:
        jsonschema.validate(result, SCHEMA)
        assert result["status"] == "rejected" and "\n" not in result["error"]
    assert [r["error_code"] for r in results] == ["empty", "not_an_image"]


def test_exit_codes_for_usage_and_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("matcher:\n  shortlist:\n    treshold: 0.8\n")
    code, _, err = run(capsys, "--config", str(bad), "status")
    assert code == 2 and "matcher.shortlist.treshold" in err and str(bad) in err
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    code, _, err = run(capsys, "--root", str(tmp_path), "index", str(tmp_path / "missing"))
    assert code == 2 and "no such file" in err


def test_python_dash_m_and_status_from_another_directory(tmp_path: Path) -> None:
    """The shipped model path resolves whatever the working directory."""
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "--root", str(tmp_path), "status", "--json"],
        capture_output=True, text=True, cwd=str(tmp_path), env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["model"]["path"].startswith(str(REPO))
    assert status["entries"] == 0 and status["daemon"]["running"] is False
