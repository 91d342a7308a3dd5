"""Geometric verification: local features, ratio test, RANSAC homography, fusion."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from conftest import source_photos, write_rgb
from pipeline.cli import main
from pipeline.features.local import LocalFeatures, extract_local, verify_pair
from pipeline.results import load_schema


def disc(image: np.ndarray, cx: int, cy: int, r: int) -> np.ndarray:
    """A square crop around a disc, outside the disc filled with a table colour."""
    crop = image[cy - r : cy + r, cx - r : cx + r].copy()
    yy, xx = np.mgrid[: 2 * r, : 2 * r]
    crop[(yy - r) ** 2 + (xx - r) ** 2 > r * r] = (90, 70, 50)
    return crop


def rephotograph(image: np.ndarray, angle: float, tilt: float, gain: float = 1.0) -> np.ndarray:
    """Rotate about the centre, then tilt (perspective squeeze of the top edge)."""
    h, w = image.shape[:2]
    rot = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), [0, 0, 1]])
    d = tilt * w
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[d, d * 0.5], [w - d, d * 0.5], [w, h], [0, h]])
    persp = cv2.getPerspectiveTransform(src, dst)
    out = cv2.warpPerspective(image, persp @ rot, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=(120, 110, 100))
    return np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return source_photos()["astronaut"]


def test_rotated_tilted_copy_is_verified_with_its_rotation(astronaut: np.ndarray) -> None:
    cake = disc(astronaut, 256, 200, 150)
    shot = rephotograph(cake, angle=40, tilt=0.12, gain=1.15)
    q = extract_local(shot, "sift", 400, 400)
    c = extract_local(cake, "sift", 400, 400)
    result = verify_pair(q, c)
    assert result.inliers >= 25
    assert result.rotation_deg is not None and abs(abs(result.rotation_deg) - 40) < 8
    assert result.scale is not None and 0.75 < result.scale < 1.3
    assert result.inlier_pairs.shape == (result.inliers, 4)


def test_different_cake_cut_from_the_same_photo_finds_no_geometry() -> None:
    coffee = source_photos()["chelsea"]
    left, right = disc(coffee, 110, 150, 100), disc(coffee, 340, 150, 100)
    q = extract_local(rephotograph(right, angle=25, tilt=0.05), "sift", 400, 400)
    wrong = verify_pair(q, extract_local(left, "sift", 400, 400))
    right_one = verify_pair(q, extract_local(right, "sift", 400, 400))
    assert wrong.inliers < 8 <= right_one.inliers


def test_keypoints_piled_on_one_catalog_keypoint_cannot_outvote_the_true_homography(astronaut: np.ndarray) -> None:
    """A repeated grain or a glare spot: many query keypoints whose best match is ONE catalog keypoint.
    Taken as they come, they fit a homography collapsing the photo onto that point."""
    cake = disc(astronaut, 256, 200, 150)
    q = extract_local(rephotograph(cake, angle=40, tilt=0.12), "sift", 400, 400)
    c = extract_local(cake, "sift", 400, 400)
    honest = verify_pair(q, c).inliers
    rng = np.random.default_rng(0)
    piled = 3 * honest
    points = np.vstack([q.points, rng.uniform(20, 280, size=(piled, 2)).astype(np.float32)])
    descriptors = np.vstack([q.descriptors, np.repeat(c.descriptors[:1], piled, axis=0)])
    result = verify_pair(LocalFeatures(points, descriptors, q.side), c)
    assert result.inliers >= honest - 2 and result.homography is not None
    assert result.rotation_deg is not None and abs(abs(result.rotation_deg) - 40) < 8


def test_guided_matching_adds_inliers_to_a_blurred_reshot_and_none_to_another_cake() -> None:
    coffee = source_photos()["chelsea"]
    left, right = disc(coffee, 110, 150, 100), disc(coffee, 340, 150, 100)
    shot = cv2.GaussianBlur(rephotograph(right, angle=25, tilt=0.1), (0, 0), 1.6)
    q = extract_local(shot, "sift", 400, 400, contrast_threshold=0.01)
    same, other = extract_local(right, "sift", 400, 400, contrast_threshold=0.01), extract_local(left, "sift", 400, 400, contrast_threshold=0.01)
    plain, guided = verify_pair(q, same), verify_pair(q, same, guided_ratio=0.9)
    assert guided.inliers > plain.inliers >= 8
    assert verify_pair(q, other, guided_ratio=0.9).inliers < 8


def test_orb_also_verifies(astronaut: np.ndarray) -> None:
    cake = disc(astronaut, 256, 200, 150)
    result = verify_pair(extract_local(rephotograph(cake, 30, 0.08), "orb", 500, 400), extract_local(cake, "orb", 500, 400))
    assert result.inliers >= 15


def test_flat_image_has_no_keypoints_and_verifies_nothing() -> None:
    flat = np.full((200, 200, 3), 128, np.uint8)
    features = extract_local(flat, "sift", 100, 200)
    assert len(features) == 0
    assert verify_pair(features, features).inliers == 0


def test_engine_reports_inliers_rotation_and_explains(tmp_path: Path, astronaut: np.ndarray, tiny_config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photos = source_photos()
    catalog = tmp_path / "catalog"
    write_rgb(catalog / "astro-1.jpg", disc(astronaut, 256, 200, 150))
    for name in ("coffee", "chelsea", "rocket"):
        h, w = photos[name].shape[:2]
        write_rgb(catalog / f"{name}-1.jpg", disc(photos[name], w // 2, h // 2, min(h, w) // 2 - 2))
    query = write_rgb(tmp_path / "shot.jpg", rephotograph(disc(astronaut, 256, 200, 150), 40, 0.1, 1.1))
    base = ["--config", str(tiny_config_file), "--root", str(tmp_path / "root")]
    assert main([*base, "index", str(catalog)]) == 0
    capsys.readouterr()
    out_png = tmp_path / "explain.png"
    assert main([*base, "match", "--json", "--explain", str(out_png), str(query)]) == 0
    result = json.loads(capsys.readouterr().out)
    jsonschema.validate(result, load_schema())
    best = result["matches"][0]
    assert result["label"] == "astro" and best["label"] == "astro"
    assert best["inliers"] >= 15 and abs(abs(best["rotation_deg"]) - 40) < 10
    assert "verify" in result["timings_ms"] and "verify" in result["stages"]["decide"]["agreed"]
    picture = cv2.imread(str(out_png))
    assert picture is not None and picture.shape[0] >= 300 and picture.shape[1] > picture.shape[0]


def relief(seed: int, sigma: float, size: int = 384) -> np.ndarray:
    """A random height field: a bare pressed-leaf surface, statistically isotropic."""
    z = cv2.GaussianBlur(np.random.default_rng(seed).normal(size=(size, size)).astype(np.float32), (0, 0), sigma)
    return z / z.std()


def lit(height: np.ndarray, azimuth: float, elevation: float) -> np.ndarray:
    """Lambertian shading of the height field from a light at (azimuth, elevation) degrees.

    Moving the light moves every shadow, so local gradients (and keypoint
    descriptors) change, while the texture statistics do not: KTH-TIPS's case.
    """
    gy, gx = np.gradient(height * 3)
    normals = np.dstack([-gx, -gy, np.ones_like(height)])
    normals /= np.linalg.norm(normals, axis=2, keepdims=True)
    a, e = np.radians(azimuth), np.radians(elevation)
    light = np.array([np.cos(a) * np.cos(e), np.sin(a) * np.cos(e), np.sin(e)])
    grey = (np.clip(normals @ light, 0, 1) * 220 + 20).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def test_texture_only_no_inliers_lbp_decides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bare textures under another light: verification finds no geometry, and with
    the shipped model and calibrated decision the texture (LBP) expert decides:
    the embedding finds every relit texture alike, the LBP match tells them apart."""
    surfaces = {"fine": relief(1, 1.2), "medium": relief(2, 2.5), "coarse": relief(3, 5.0)}
    catalog = tmp_path / "catalog"
    for name, height in surfaces.items():
        write_rgb(catalog / f"{name}-1.png", lit(height, azimuth=0, elevation=45))
    base = ["--root", str(tmp_path / "root")]
    assert main([*base, "index", str(catalog)]) == 0
    capsys.readouterr()
    for name, height in surfaces.items():
        query = write_rgb(tmp_path / f"{name}_q.png", lit(height, azimuth=120, elevation=35))
        assert main([*base, "match", "--json", str(query)]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["stages"]["verify"]["max_inliers"] == 0, "precondition: no geometry to verify"
        assert result["matches"][0]["label"] == name
        assert result["status"] == "matched" and result["label"] == name
        decide = result["stages"]["decide"]
        assert decide["texture"] >= decide["accept_confidence"] > decide["geometric"]


def test_shipped_pipeline_confirms_the_cake_and_refuses_its_sibling(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With the shipped model and calibrated decision: the same cake re-photographed
    is matched, a different cake cut from the same photo (same tea) is refused."""
    photo = source_photos()["astronaut"]
    catalog = tmp_path / "catalog"
    write_rgb(catalog / "left-1.jpg", disc(photo, 128, 260, 120))
    for name in ("coffee", "rocket", "chelsea"):
        h, w = source_photos()[name].shape[:2]
        write_rgb(catalog / f"{name}-1.jpg", disc(source_photos()[name], w // 2, h // 2, min(h, w) // 2 - 2))
    same = write_rgb(tmp_path / "same.jpg", rephotograph(disc(photo, 128, 260, 120), 70, 0.1, 1.1))
    sibling = write_rgb(tmp_path / "sibling.jpg", rephotograph(disc(photo, 384, 260, 120), 70, 0.1, 1.1))
    base = ["--root", str(tmp_path / "root")]
    assert main([*base, "index", str(catalog)]) == 0
    capsys.readouterr()
    main([*base, "match", "--json", str(same), str(sibling)])
    same_result, sibling_result = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert same_result["status"] == "matched" and same_result["label"] == "left"
    assert same_result["matches"][0]["inliers"] >= 15
    assert sibling_result["status"] == "no_match" and sibling_result["label"] is None
    assert sibling_result["confidence"] < same_result["confidence"]


def test_keypoint_votes_find_the_entry_the_embedding_would_need(astronaut: np.ndarray, tmp_path: Path) -> None:
    """The third shortlist source: catalog-wide keypoint votes over a real catalog rank the right entry first."""
    import hashlib

    from pipeline.catalog import CatalogIndex, NewEntry
    from pipeline.search.vocabulary import Vocabulary
    from pipeline.search.votes import VoteStore

    photos = source_photos()
    cakes = [disc(photos[n], photos[n].shape[1] // 2, photos[n].shape[0] // 2, min(photos[n].shape[:2]) // 2 - 2)
             for n in ("coffee", "chelsea", "rocket", "camera")]
    cakes.insert(2, disc(astronaut, 256, 200, 150))
    feats = [*(extract_local(c, "sift", 300, 400) for c in cakes), None]
    unit = np.ones(4, np.float32) / 2
    record = CatalogIndex(tmp_path / "idx", model_id="m1")
    record.commit([NewEntry(hashlib.sha256(bytes([i])).hexdigest(), f"/c/{i}.jpg", f"cake{i}", unit, np.ones(3, np.float32), f)
                   for i, f in enumerate(feats)])
    snap = record.snapshot()
    store = VoteStore(tmp_path / "idx", Vocabulary.load(), per_entry=150)
    store.follow(snap)
    query = extract_local(rephotograph(cakes[2], 55, 0.1, 0.9), "sift", 300, 400)
    rows = store.vote(query, snap, top_k=3)
    assert [snap.labels[r] for r in rows[:1]] == ["cake2"] and len(rows) <= 3
    assert store.vote(query, snap, 0).size == 0 and store.vote(None, snap, 3).size == 0


