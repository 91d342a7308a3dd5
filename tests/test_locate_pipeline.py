"""The cake locator in the pipeline: one prepare path for registration and query, the result's `cake`, refusals.

Real files, the real tiny model, the `teaprint` command in process. Photos
are rendered cakes on cluttered tables whose true outline is known
(`pipeline.training.scenes`), with procedural leaf surfaces.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
import skimage.data

from conftest import rendered_cakes as scene
from conftest import rotated_view, write_rgb
from pipeline.cli import main
from pipeline.results import load_schema

SCHEMA = load_schema()
SIZE = 512


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def iou(a: np.ndarray, b: np.ndarray, shape: tuple[int, int]) -> float:
    ma, mb = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    cv2.fillPoly(ma, [np.round(a).astype(np.int32)], 1)
    cv2.fillPoly(mb, [np.round(b).astype(np.int32)], 1)
    return float((ma & mb).sum() / max(1, (ma | mb).sum()))


def apply(h: list, points: np.ndarray) -> np.ndarray:
    q = np.c_[points, np.ones(len(points))] @ np.asarray(h, np.float64).T
    return q[:, :2] / q[:, 2:3]


CATALOG_SEEDS = (20, 21, 22)


@pytest.fixture
def indexed(tmp_path: Path, locate_config_file: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """A root whose catalog holds three rendered cakes and refused one photo of two cakes."""
    catalog = tmp_path / "catalog"
    for i, seed in enumerate(CATALOG_SEEDS):
        write_rgb(catalog / f"cake{i}-1.jpg", scene(seed, tilt=5.0).image)
    write_rgb(catalog / "pair-1.jpg", scene(5, kind="two", tilt=15.0, tilt_axis=30.0, angle=0.0).image)
    base = ["--config", str(locate_config_file), "--root", str(tmp_path / "root")]
    code, out, err = run(capsys, *base, "index", str(catalog))
    assert code == 0 and "indexed 3 new, 0 already present, 1 refused" in out
    assert "pair-1.jpg" in err and "2 cakes in one photo" in err
    return base


def test_tilted_query_reports_its_cake_rectified_and_validates(tmp_path: Path, indexed: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    tilted = scene(3, tilt=30.0, tilt_axis=20.0, angle=40.0, shift=(0.06, -0.04))
    query = write_rgb(tmp_path / "tilted.jpg", tilted.image)
    code, out, _ = run(capsys, *indexed, "match", "--json", str(query), "--explain", str(tmp_path / "why.png"))
    assert code == 0
    result = json.loads(out)
    jsonschema.validate(result, SCHEMA)
    cake = result["cake"]
    assert cake["fallback"] is False and cake["shape"] == "disc" and cake["others"] == []
    assert cake["photo_size"] == [SIZE, SIZE] and cake["locator"]
    truth = tilted.outlines[0]
    assert iou(np.asarray(cake["outline"]["polygon"]), truth, (SIZE, SIZE)) >= 0.9
    rect = cake["rectification"]
    assert rect["size"] == 512
    # the TRUE rim, through the reported homography, is a centred circle within a few per cent
    (cx, cy), (w, h), _ = cv2.fitEllipse(apply(rect["homography"], truth).astype(np.float32))
    assert min(w, h) / max(w, h) > 0.96
    assert np.hypot(cx - 255.5, cy - 255.5) < 0.03 * 512
    assert result["timings_ms"]["locate"] > 0
    # the explanation draws the outline (green) on the query, the rectified cake beside it
    why = cv2.imread(str(tmp_path / "why.png"))
    assert why is not None and why.shape[1] > 2 * 360
    green = (why[..., 1] > 180) & (why[..., 0] < 100) & (why[..., 2] < 100)
    assert green[:, :360].sum() > 200  # the outline on the photo panel


def test_photo_of_two_cakes_answers_for_the_largest_and_lists_the_other(tmp_path: Path, indexed: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    pair = scene(5, kind="two", tilt=15.0, tilt_axis=30.0, angle=0.0)
    query = write_rgb(tmp_path / "pair.jpg", pair.image)
    code, out, _ = run(capsys, *indexed, "match", "--json", str(query))
    result = json.loads(out)
    jsonschema.validate(result, SCHEMA)
    cake = result["cake"]
    assert cake["fallback"] is False and len(cake["others"]) == 1
    largest, other = np.asarray(cake["outline"]["polygon"]), np.asarray(cake["others"][0]["polygon"])
    assert iou(largest, pair.outlines[0], (SIZE, SIZE)) >= 0.85 and iou(other, pair.outlines[1], (SIZE, SIZE)) >= 0.85


def test_texture_close_up_falls_back_to_the_whole_photo(tmp_path: Path, indexed: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    query = write_rgb(tmp_path / "gravel.png", np.ascontiguousarray(cv2.cvtColor(skimage.data.gravel(), cv2.COLOR_GRAY2RGB)))
    code, out, _ = run(capsys, *indexed, "match", "--json", str(query))
    result = json.loads(out)
    jsonschema.validate(result, SCHEMA)
    cake = result["cake"]
    assert cake["fallback"] is True and cake["shape"] == "none" and cake["outline"] is None and cake["rectification"] is None


def test_with_the_locator_off_a_query_is_still_looked_at_for_a_cake_so_texture_alone_is_no_confidence_on_a_cake(
        tmp_path: Path, tiny_config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog = tmp_path / "catalog"
    for i, seed in enumerate(CATALOG_SEEDS):
        write_rgb(catalog / f"cake{i}-1.jpg", scene(seed, tilt=5.0).image)
    off = tmp_path / "locator-off.yaml"
    off.write_text(tiny_config_file.read_text() + "locate:\n  enabled: false\n")  # on in the shipped defaults
    base = ["--config", str(off), "--root", str(tmp_path / "root")]
    assert run(capsys, *base, "index", str(catalog))[0] == 0
    stranger = write_rgb(tmp_path / "stranger.jpg", scene(99, tilt=20.0).image)
    gravel = write_rgb(tmp_path / "gravel.png", np.ascontiguousarray(cv2.cvtColor(skimage.data.gravel(), cv2.COLOR_GRAY2RGB)))
    results = {}
    for query in (stranger, gravel):
        code, out, _ = run(capsys, *base, "match", "--json", str(query))
        results[query.stem] = json.loads(out)
        jsonschema.validate(results[query.stem], SCHEMA)
        assert results[query.stem]["cake"] is None  # nothing was rectified: the whole photo was described
    on_cake, on_texture = results["stranger"]["stages"]["decide"], results["gravel"]["stages"]["decide"]
    assert on_cake["cake_found"] is True and on_cake["texture_counts"] is False
    assert results["stranger"]["confidence"] == pytest.approx(max(on_cake["geometric"], on_cake["embedding"]), abs=1e-5)
    assert on_texture["cake_found"] is False and on_texture["texture_counts"] is True
    assert results["gravel"]["confidence"] == pytest.approx(max(on_texture[k] for k in ("geometric", "appearance", "texture")), abs=1e-5)
    assert "locate" in results["stranger"]["timings_ms"]


def test_changing_the_canonical_size_needs_reembed(tmp_path: Path, indexed: list[str], locate_config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "size384.yaml"
    other.write_text(locate_config_file.read_text() + "  size: 384\n")  # under its locate: section
    base = ["--config", str(other), *indexed[2:]]
    query = write_rgb(tmp_path / "q.jpg", scene(21, tilt=20.0).image)
    code, out, err = run(capsys, *base, "match", "--json", str(query))
    assert code != 0 and "other feature settings (locate)" in err and "teaprint reembed" in err
    code, out, _ = run(capsys, *base, "status", "--json")
    assert json.loads(out)["features_match_index"] is False
    code, out, _ = run(capsys, *base, "reembed")
    assert code == 0 and "re-embedded 3 entries" in out
    code, out, _ = run(capsys, *base, "match", "--json", str(query))
    assert code == 0 and json.loads(out)["cake"]["rectification"]["size"] == 384
    manifest = json.loads((Path(indexed[3]) / "index" / "MANIFEST.json").read_text())
    assert manifest["features"]["locate"]["size"] == 384 and manifest["model_id"]


def test_rotated_shots_of_registered_cakes_find_their_own(tmp_path: Path, indexed: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Registration and query take one path: a rotated copy is located, rectified and matched to its own cake."""
    queries = []
    for i, seed in enumerate(CATALOG_SEEDS):
        photo = scene(seed, tilt=5.0).image
        queries.append(write_rgb(tmp_path / "q" / f"cake{i}_r90.png", np.ascontiguousarray(np.rot90(photo))))
        queries.append(write_rgb(tmp_path / "q" / f"cake{i}_r37.jpg", rotated_view(photo, 37, gain=1.1)))
    code, out, _ = run(capsys, *indexed, "match", "--json", *map(str, queries))
    assert code == 0
    for result in map(json.loads, out.splitlines()):
        jsonschema.validate(result, SCHEMA)
        assert result["cake"]["fallback"] is False, result["query"]
        assert result["matches"][0]["label"] == result["query"].split("_r")[0], result["query"]


@pytest.mark.parametrize("locator", ["on", "off"])
def test_the_thread_beside_the_keypoints_changes_no_descriptor(tmp_path: Path, locate_config_file: Path,
                                                                tiny_config_file: Path, locator: str) -> None:
    """A query's LBP histogram and encoder input computed beside its keypoints equal those computed in turn."""
    from pipeline.config import load_config
    from pipeline.engine import Engine
    from pipeline.prepare import prepare

    off = tmp_path / "off.yaml"  # the locator off: the look for a cake shares the thread (a texture-only guard)
    off.write_text(tiny_config_file.read_text() + "locate:\n  enabled: false\n")
    config = load_config(locate_config_file if locator == "on" else off)
    assert config.locate.enabled is (locator == "on")
    shape = Engine.load(config, tmp_path / "root").encoder_input
    photo = tmp_path / "query.jpg"
    write_rgb(photo, scene(31, tilt=20.0).image)
    alone, beside = prepare(photo, config, shape, beside=False), prepare(photo, config, shape, beside=True)
    assert alone.cake_found is True and beside.cake_found is True
    np.testing.assert_array_equal(alone.lbp, beside.lbp)
    np.testing.assert_array_equal(alone.encoder_input, beside.encoder_input)
    np.testing.assert_array_equal(alone.local.points, beside.local.points)
    np.testing.assert_array_equal(alone.local.descriptors, beside.local.descriptors)
    assert {"lbp", "prepare", "local"} <= set(beside.timings_ms)
