"""Cake records from real sidecar files (JSON and CSV, Chinese text) in a real catalog folder."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import jsonschema
import pytest
from structlog.testing import capture_logs

from conftest import source_photos, write_rgb
from pipeline.records import CSV_NAME, RecordError, RecordStore, result_record
from pipeline.results import load_schema

SHEET = (
    "标签,名称,年份,批次,生产商,重量,备注,仓储\n"
    "menghai-7542,大益 7542 青饼,2019年,1901,勐海茶厂,357克,\"干仓, 昆明\",昆明干仓\n"
    "xiaguan,下关沱茶,2018,,下关茶厂,0.25kg,,\n"
)


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox" / "catalog"
    folder.mkdir(parents=True)
    return folder


def store_for(catalog: Path) -> RecordStore:
    return RecordStore(catalog, catalog.parent / "failed")


def test_sheet_and_sidecars_merge_field_by_field_in_the_documented_order(catalog: Path) -> None:
    (catalog / CSV_NAME).write_text(SHEET, encoding="utf-8")
    (catalog / "menghai-7542.json").write_text(json.dumps({"notes": "样品", "仓储": "广州湿仓"}, ensure_ascii=False), encoding="utf-8")
    (catalog / "menghai-7542").mkdir()
    (catalog / "menghai-7542" / "menghai-7542.json").write_text(
        '{"producer": "勐海茶厂（大益）", "extra": {"价格": 1200, "已售": false}}', encoding="utf-8")

    record = store_for(catalog).get("menghai-7542")

    assert record is not None
    assert (record.display_name, record.year, record.batch, record.weight_g) == ("大益 7542 青饼", 2019, "1901", 357.0)
    assert record.producer == "勐海茶厂（大益）"          # the label folder's sidecar wins over the sheet
    assert record.notes == "样品"                          # the catalog-folder sidecar wins over the sheet
    assert dict(record.extra) == {"仓储": "广州湿仓", "价格": 1200, "已售": False}
    assert record.sources == ("cakes.csv:2", "menghai-7542.json", "menghai-7542/menghai-7542.json")
    other = store_for(catalog).get("xiaguan")
    assert other is not None and other.weight_g == 250.0 and other.batch is None and other.sources == ("cakes.csv:3",)
    assert store_for(catalog).get("nobody") is None


def test_a_record_in_a_result_is_valid_against_the_result_schema(catalog: Path) -> None:
    (catalog / CSV_NAME).write_text(SHEET, encoding="utf-8")
    record = store_for(catalog).get("menghai-7542")
    result = {
        "schema": "teaprint-result/1", "query": "IMG_1.jpg", "status": "matched", "label": "menghai-7542", "confidence": 0.93,
        "matches": [], "timings_ms": {}, "model": None, "error": None, "created_at": "2024-05-01T08:00:00.000+00:00",
        "record": result_record(record, {"count": 2, "first_at": "2024-04-01T08:00:00.000+00:00", "last_at": "2024-04-02T08:00:00.000+00:00"}),
    }
    jsonschema.validate(result, load_schema())
    result["record"]["year"] = "2019"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(result, load_schema())


def test_a_malformed_sidecar_is_reported_once_noted_in_failed_and_cleared_when_fixed(catalog: Path) -> None:
    (catalog / "puer").mkdir()
    sidecar = catalog / "puer" / "puer.json"
    sidecar.write_text('{"年份": 2019,\n "名称": "易武" \n "批次": 3}', encoding="utf-8")
    store = store_for(catalog)

    with capture_logs() as logs:
        assert store.get("puer") is None
        assert store.get("puer") is None  # unchanged file: parsed and logged once
    problems = [e for e in logs if e["event"] == "record_problem"]
    assert len(problems) == 1 and problems[0]["code"] == "invalid_json" and problems[0]["line"] == 3
    assert problems[0]["source"] == "puer/puer.json" and "line 3" in problems[0]["message"]
    note = catalog.parent / "failed" / "puer__puer.json.error.json"
    body = json.loads(note.read_text(encoding="utf-8"))
    assert body["code"] == "bad_record" and body["folder"] == "catalog" and body["file"] == "puer/puer.json"
    assert body["problems"][0]["code"] == "invalid_json" and len(body["sha256"]) == 64
    assert [p.code for p in store.scan().problems] == ["invalid_json"]

    sidecar.write_text('{"年份": 2019, "名称": "易武", "批次": 3}', encoding="utf-8")
    record = store.get("puer")
    assert record is not None and record.display_name == "易武" and record.year == 2019 and record.batch == "3"
    assert not note.exists() and store.scan().problems == ()


def test_bad_fields_cost_only_themselves(catalog: Path) -> None:
    (catalog / "yiwu.json").write_text(json.dumps(
        {"label": "bulang", "year": "去年", "weight": "一饼", "producer": "易武", "notes": ["a"], "extra": "x"}, ensure_ascii=False), encoding="utf-8")
    store = store_for(catalog)
    record = store.get("yiwu")
    assert record is not None and record.producer == "易武" and record.year is None and record.weight_g is None
    problems = {(p.code, p.field) for p in store.scan().problems}
    assert problems == {("label_mismatch", "label"), ("bad_field", "year"), ("bad_field", "weight"), ("bad_field", "notes"), ("bad_field", "extra")}


def test_sheet_problems_name_their_line_and_other_rows_still_count(catalog: Path) -> None:
    (catalog / CSV_NAME).write_text(
        "\ufefflabel\tyear\tweight\n"          # a BOM and tabs, as Excel's "Unicode text" gives
        "a\t2019\t357\n"
        "\t2020\t\n"
        "a\t2021\t\n"
        "b\t1800\t100\tstray\n", encoding="utf-8")
    scan = store_for(catalog).scan()
    assert set(scan.records) == {"a", "b"} and scan.records["a"].year == 2019 and scan.records["b"].weight_g == 100.0
    assert [(p.code, p.line) for p in scan.problems] == [("missing_label", 3), ("duplicate_label", 4), ("bad_field", 5), ("bad_field", 5)]


def test_a_sheet_that_is_not_utf8_or_has_no_label_column_is_one_clear_problem(catalog: Path) -> None:
    (catalog / CSV_NAME).write_bytes(SHEET.encode("gb18030"))
    (problem,) = store_for(catalog).scan().problems
    assert problem.code == "not_utf8" and "GBK/GB18030" in problem.message and "save it as UTF-8" in problem.message
    (catalog / CSV_NAME).write_text("名称,年份\n大益,2019\n", encoding="utf-8")
    (problem,) = store_for(catalog).scan().problems
    assert problem.code == "no_label_column" and "标签" in problem.message


def test_a_fifo_or_a_link_out_of_the_catalog_is_a_problem_not_a_hang(catalog: Path, tmp_path: Path) -> None:
    os.mkfifo(catalog / CSV_NAME)
    outside = tmp_path / "secret.json"
    outside.write_text('{"notes": "secret"}', encoding="utf-8")
    (catalog / "leak.json").symlink_to(outside)
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append(store_for(catalog).scan()), daemon=True)
    worker.start()
    worker.join(20)
    assert done, "reading a FIFO sidecar blocked"
    scan = done[0]
    assert {(p.source, p.code) for p in scan.problems} == {("cakes.csv", "unreadable"), ("leak.json", "unreadable")}  # type: ignore[attr-defined]
    assert scan.records == {}  # type: ignore[attr-defined]


def test_set_writes_utf8_sidecar_beside_the_photos_and_wins(catalog: Path) -> None:
    (catalog / CSV_NAME).write_text(SHEET, encoding="utf-8")
    store = store_for(catalog)
    record = store.set("menghai-7542", {"名称": "七五四二", "weight": 400, "产区": "勐海"})
    assert record.display_name == "七五四二" and record.weight_g == 400.0 and record.year == 2019 and record.extra["产区"] == "勐海"
    text = (catalog / "menghai-7542" / "menghai-7542.json").read_text(encoding="utf-8")
    assert "七五四二" in text and "\\u" not in text
    assert json.loads(text) == {"display_name": "七五四二", "weight_g": 400.0, "extra": {"产区": "勐海"}}

    with pytest.raises(RecordError) as err:
        store.set("menghai-7542", {"year": "明年"})
    assert err.value.problems[0].field == "year"
    assert json.loads((catalog / "menghai-7542" / "menghai-7542.json").read_text(encoding="utf-8"))["display_name"] == "七五四二"
    for bad in ("../x", ".hidden", "", "a" * 65):
        with pytest.raises(RecordError):
            store.set(bad, {"notes": "x"})
    assert sorted(p.name for p in catalog.iterdir()) == ["cakes.csv", "menghai-7542"]


def test_a_malformed_sidecar_never_blocks_the_cakes_photos(catalog: Path, tiny_config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    photos = source_photos()
    for i, name in enumerate(("astronaut", "coffee")):
        write_rgb(catalog / "普洱-2019" / f"{i}.jpg", photos[name][:256, :256])
    (catalog / "普洱-2019" / "普洱-2019.json").write_text("{not json", encoding="utf-8")
    (catalog / CSV_NAME).write_bytes(b"\xff\xfe broken")
    root = catalog.parent.parent
    assert main(["--config", str(tiny_config_file), "--root", str(root), "index", str(catalog)]) == 0
    assert "indexed 2 new" in capsys.readouterr().out
    scan = store_for(catalog).scan()
    assert {p.code for p in scan.problems} == {"invalid_json", "not_utf8"}
