"""Geometric verification: local features, ratio test, RANSAC homography, fusion."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from conftest import source_photos, write_rgb
from reference_stages import reference_verify
from pipeline.catalog import CatalogIndex, NewEntry
from pipeline.cli import main
from pipeline.features.local import LocalFeatures, extract_local, light_inverted, verify_pair
from pipeline.matcher import Query
from pipeline.matcher.verify import verify
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
    """Bare textures under another light, the relief correlation off (`local.surface`): verification finds no
    geometry, and with the shipped model and calibrated decision the texture (LBP) expert decides:
    the embedding finds every relit texture alike, the LBP match tells them apart.
    In a catalog of three the calibration asks a decisive LBP match (stop 37: among
    few relit surfaces a stranger's nearest one stands out too): the finest and the
    coarsest grain are accepted, the medium one, between the two, is ranked first
    but not accepted."""
    surfaces = {"fine": relief(1, 1.2), "medium": relief(2, 2.5), "coarse": relief(3, 5.0)}
    catalog = tmp_path / "catalog"
    for name, height in surfaces.items():
        write_rgb(catalog / f"{name}-1.png", lit(height, azimuth=0, elevation=45))
    no_relief = tmp_path / "no_relief.yaml"
    no_relief.write_text("local:\n  surface: false\n")
    base = ["--config", str(no_relief), "--root", str(tmp_path / "root")]
    assert main([*base, "index", str(catalog)]) == 0
    capsys.readouterr()
    for name, height in surfaces.items():
        query = write_rgb(tmp_path / f"{name}_q.png", lit(height, azimuth=120, elevation=35))
        assert main([*base, "match", "--json", str(query)]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["stages"]["verify"]["max_inliers"] == 0, "precondition: no geometry to verify"
        assert result["stages"]["verify"]["surfaces"] == 0 and result["matches"][0]["surface_peak"] is None
        assert result["matches"][0]["label"] == name
        decide = result["stages"]["decide"]
        assert result["confidence"] == pytest.approx(max(decide["texture"], decide["appearance"]), abs=1e-6)
        assert result["confidence"] > decide["geometric"]
        if name == "medium":
            assert result["status"] == "no_match"
        else:
            assert result["status"] == "matched" and result["label"] == name
            assert decide["texture"] >= decide["accept_confidence"] > decide["geometric"]


def test_shipped_pipeline_matches_relit_bare_surfaces_by_their_relief(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same relit surfaces with the shipped config: no keypoint survives the light, but each photo's relief
    correlates with its own registration's once aligned (turned a quarter and zoomed here), so all three are
    matched, the medium grain that the LBP match alone could not accept too; a stranger of the same grain as a
    registered surface (its LBP near twin) correlates with none and is refused."""
    surfaces = {"fine": relief(1, 1.2), "medium": relief(2, 2.5), "coarse": relief(3, 5.0)}
    catalog = tmp_path / "catalog"
    for name, height in surfaces.items():
        write_rgb(catalog / f"{name}-1.png", lit(height, azimuth=0, elevation=45))
    base = ["--root", str(tmp_path / "root")]
    assert main([*base, "index", str(catalog)]) == 0
    capsys.readouterr()
    schema = load_schema()
    for name, height in {**surfaces, "stranger": relief(9, 2.5)}.items():
        shot = np.ascontiguousarray(np.rot90(lit(height, azimuth=120, elevation=35)))
        zoomed = cv2.resize(shot, None, fx=1.2, fy=1.2, interpolation=cv2.INTER_LINEAR)[38:422, 38:422]
        query = write_rgb(tmp_path / f"{name}_q.png", zoomed)
        assert main([*base, "match", "--json", str(query)]) == 0
        result = json.loads(capsys.readouterr().out)
        jsonschema.validate(result, schema)
        assert result["stages"]["verify"]["max_inliers"] == 0, "precondition: no geometry to verify"
        assert result["stages"]["verify"]["surfaces"] == 3
        peaks = {m["label"]: m["surface_peak"] for m in result["matches"]}
        if name == "stranger":
            assert result["status"] == "no_match" and max(peaks.values()) < 9, peaks
            continue
        assert (result["status"], result["label"]) == ("matched", name), peaks
        assert peaks[name] > 12 and all(p < 9 for label, p in peaks.items() if label != name), peaks
        assert result["stages"]["decide"]["geometric"] == pytest.approx(result["confidence"], abs=1e-6)


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


# --- the distance table gives OpenCV BFMatcher's matches, hence the same inliers ---------------

def assert_same_verification(new, old, what: str) -> None:
    assert (new.inliers, new.matches) == (old.inliers, old.matches), what
    np.testing.assert_array_equal(new.inlier_pairs, old.inlier_pairs, err_msg=what)
    assert (new.homography is None) == (old.homography is None), what
    if old.homography is not None:
        np.testing.assert_array_equal(new.homography, old.homography, err_msg=what)
        assert (new.rotation_deg, new.scale) == (old.rotation_deg, old.scale), what


def views(photo: np.ndarray, seed: int) -> list[np.ndarray]:
    """Re-shots of a photo: rotated and tilted, scaled, blurred, darker."""
    rng = np.random.default_rng(seed)
    h, w = photo.shape[:2]
    out = []
    for k in range(3):
        shot = rephotograph(photo, angle=float(rng.uniform(-60, 60)), tilt=float(rng.uniform(0, 0.12)), gain=float(rng.uniform(0.8, 1.2)))
        scale = float(rng.uniform(0.6, 1.3))
        shot = cv2.resize(shot, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA)
        if k == 2:
            shot = cv2.GaussianBlur(shot, (0, 0), float(rng.uniform(1.0, 2.0)))
        out.append(shot)
    return out


@pytest.fixture(scope="module")
def real_pairs() -> tuple[list[tuple[str, LocalFeatures]], list[tuple[str, LocalFeatures]]]:
    """Keypoints (shipped settings: 400 at 640 px, contrast 0.01) of re-shots and of the photos they came from."""
    photos = source_photos()
    catalog = [(name, extract_local(rgb, "sift", 400, 640, 0.01)) for name, rgb in photos.items()]
    queries = [(f"{name}-{k}", extract_local(shot, "sift", 400, 640, 0.01))
               for seed, (name, rgb) in enumerate(photos.items()) for k, shot in enumerate(views(rgb, seed))]
    return queries, catalog


def test_verify_pair_matches_bfmatcher_on_real_pairs(real_pairs) -> None:
    """Every re-shot against every photo (its own and the others), plain and guided: the same
    matches, hence the same homography and inliers, as matching with BFMatcher."""
    queries, catalog = real_pairs
    verified = 0
    for qname, q in queries:
        for cname, c in catalog:
            for guided in (0.0, 0.9):
                what = f"{qname} vs {cname}, guided {guided}"
                new, old = verify_pair(q, c, guided_ratio=guided), reference_verify(q, c, guided_ratio=guided)
                assert_same_verification(new, old, what)
                verified += old.inliers >= 8
    assert verified >= len(queries), "the pairs include true matches"


def test_verify_pair_matches_bfmatcher_at_other_settings(real_pairs) -> None:
    queries, catalog = real_pairs
    names = dict(catalog)
    for qname, q in queries[::2]:
        c = names[qname.rsplit("-", 1)[0]]
        for ratio, guided, px, estimator in ((0.7, 0.8, 5.0, "ransac"), (0.9, 0.95, 8.0, "magsac"), (0.75, 1.0, 12.0, "ransac")):
            new = verify_pair(q, c, ratio=ratio, ransac_px=px, estimator=estimator, guided_ratio=guided)  # type: ignore[arg-type]
            assert_same_verification(new, reference_verify(q, c, ratio, px, 8, estimator, guided), f"{qname} {ratio} {guided} {px} {estimator}")


def test_ties_are_broken_as_bfmatcher_breaks_them(real_pairs) -> None:
    """Exactly tied distances: candidate keypoints duplicated 1 px apart (both near the
    projection: the lower index wins), query keypoints piled on copies of one descriptor (one
    candidate keypoint, the first query keypoint wins; the guided order, by query index)."""
    queries, catalog = real_pairs
    names = dict(catalog)
    for qname, q in queries[:9]:
        c = names[qname.rsplit("-", 1)[0]]
        twin = LocalFeatures(np.vstack([c.points, c.points + 1.0]).astype(np.float32), np.vstack([c.descriptors, c.descriptors]), c.side)
        shuffled = np.random.default_rng(0).permutation(2 * len(c))
        mixed = LocalFeatures(twin.points[shuffled], twin.descriptors[shuffled], c.side)
        piled = LocalFeatures(np.vstack([q.points, q.points[:40] + 0.5]).astype(np.float32), np.vstack([q.descriptors, q.descriptors[:40]]), q.side)
        for query, cand in ((q, twin), (q, mixed), (piled, c), (piled, mixed)):
            for guided in (0.0, 0.9):
                assert_same_verification(verify_pair(query, cand, guided_ratio=guided), reference_verify(query, cand, guided_ratio=guided), qname)


def test_every_decision_taken_by_bfmatcher_gives_the_same(real_pairs, monkeypatch: pytest.MonkeyPatch) -> None:
    """With bounds so wide that no decision is left to the matrix product, every match comes
    from BFMatcher's own rows: the same results (checks that fallback path on every row)."""
    from pipeline.features import local

    monkeypatch.setattr(local, "_SQUARE_ABSOLUTE", 10.0)
    queries, catalog = real_pairs
    names = dict(catalog)
    for qname, q in queries[::3]:
        for c in (names[qname.rsplit("-", 1)[0]], catalog[0][1]):
            for guided in (0.0, 0.9):
                assert_same_verification(verify_pair(q, c, guided_ratio=guided), reference_verify(q, c, guided_ratio=guided), qname)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_photo_against_itself_matches_as_bfmatcher(real_pairs) -> None:
    """Distances of 0 (identical descriptors), whose squares the matrix product may put slightly below 0."""
    _, catalog = real_pairs
    for name, features in catalog:
        for guided in (0.0, 0.9):
            assert_same_verification(verify_pair(features, features, guided_ratio=guided),
                                     reference_verify(features, features, guided_ratio=guided), name)


def test_deepened_verification_finds_the_cake_the_embedding_ranked_past_the_shortlist(astronaut: np.ndarray, tmp_path: Path) -> None:
    """`matcher.verify.deepen`: when the first verified candidates give no `matched`, the next ones are verified too."""
    import dataclasses
    import hashlib

    from pipeline.catalog import CatalogIndex, NewEntry
    from pipeline.config import default_config
    from pipeline.matcher import Query, run

    photos = source_photos()
    cakes = [disc(photos[n], photos[n].shape[1] // 2, photos[n].shape[0] // 2, min(photos[n].shape[:2]) // 2 - 2)
             for n in ("coffee", "chelsea", "rocket", "camera")]
    cakes.insert(3, disc(astronaut, 256, 200, 150))  # the right cake, fourth by the embedding
    cosines = [0.95, 0.9, 0.8, 0.6, 0.5]
    embeddings = [np.array([c, np.sqrt(1 - c * c), 0, 0], np.float32) for c in cosines]
    record = CatalogIndex(tmp_path / "idx", model_id="m1")
    record.commit([NewEntry(hashlib.sha256(bytes([i])).hexdigest(), f"/c/{i}.jpg", f"cake{i}", e, np.full(3, 1 / 3, np.float32),
                            extract_local(c, "sift", 400, 400)) for i, (e, c) in enumerate(zip(embeddings, cakes))])
    snap = record.snapshot()
    query = Query(np.array([1, 0, 0, 0], np.float32), np.full(3, 1 / 3, np.float32),
                  extract_local(rephotograph(cakes[3], 35, 0.1, 0.9), "sift", 400, 400))
    base = default_config().matcher
    shallow = dataclasses.replace(base, shortlist=dataclasses.replace(base.shortlist, top_k=2, min_candidates=2, lbp_top_k=0, vote_top_k=0),
                                  verify=dataclasses.replace(base.verify, max_candidates=2, deepen=0))
    first = run(query, snap, shallow, threshold=0.99)
    assert first.decision.status == "no_match" and first.stages()["verify"]["deepened"] == 0

    laps: list[str] = []
    deep = run(query, snap, dataclasses.replace(shallow, verify=dataclasses.replace(shallow.verify, deepen=2)), threshold=0.99, lap=laps.append)
    assert laps == ["shortlist", "refine", "verify", "deepen", "decide"]
    assert (deep.decision.status, deep.decision.label) == ("matched", "cake3")
    assert deep.stages()["verify"]["deepened"] == 2 and deep.stages()["verify"]["verified"] == 4  # rows 2 and 3; row 4 left alone
    assert deep.ranked[0].source == "deepened" and deep.ranked[0].inliers >= 25

    # An accepted query never pays the second pass.
    easy = run(Query(np.array([1, 0, 0, 0], np.float32), query.lbp, extract_local(rephotograph(cakes[0], 20, 0.05), "sift", 400, 400)),
               snap, dataclasses.replace(shallow, verify=dataclasses.replace(shallow.verify, deepen=2)), threshold=0.99)
    assert (easy.decision.status, easy.decision.label, easy.stages()["verify"]["deepened"]) == ("matched", "cake0", 0)


def relit_surfaces(tmp_path: Path) -> tuple[CatalogIndex, Query]:
    """A catalog of five bare relief surfaces lit from azimuth 0 (embedding cosines 0.95, 0.9, 0.8, 0.6, 0.5 to the
    query: the right one, row 3, fourth), and the query: row 3's surface relit from 120 degrees and turned."""
    import dataclasses
    import hashlib

    from pipeline.features.surface import surface_patch

    heights = [relief(20 + i, s) for i, s in enumerate((1.2, 2.5, 5.0, 2.0, 3.5))]

    def bare(image: np.ndarray) -> LocalFeatures:
        return dataclasses.replace(extract_local(image, max_keypoints=400, side=384, contrast_threshold=0.01),
                                   surface=surface_patch(image))

    record = CatalogIndex(tmp_path / "idx", model_id="m1")
    record.commit([NewEntry(hashlib.sha256(bytes([i])).hexdigest(), f"/c/{i}.png", f"surface{i}",
                            np.array([c, np.sqrt(1 - c * c), 0, 0], np.float32), np.full(3, 1 / 3, np.float32),
                            bare(lit(h, azimuth=0, elevation=45)))
                   for i, (c, h) in enumerate(zip([0.95, 0.9, 0.8, 0.6, 0.5], heights))])
    shot = np.ascontiguousarray(np.rot90(lit(heights[3], azimuth=120, elevation=35)))
    return record, Query(np.array([1, 0, 0, 0], np.float32), np.full(3, 1 / 3, np.float32), bare(shot), cake_found=False)


def test_the_second_pass_correlates_the_reliefs_of_the_candidates_it_verifies(tmp_path: Path) -> None:
    """A relit bare surface keeps no keypoint the light did not move; when the embedding ranks its registration
    past the first pass's candidates, the second pass's relief correlation is what finds it (no inliers anywhere)."""
    import dataclasses

    from pipeline.config import default_config
    from pipeline.matcher import run

    record, query = relit_surfaces(tmp_path)
    base = default_config().matcher
    shallow = dataclasses.replace(base, shortlist=dataclasses.replace(base.shortlist, top_k=2, min_candidates=2, lbp_top_k=0, vote_top_k=0),
                                  verify=dataclasses.replace(base.verify, max_candidates=2, deepen=0))
    first = run(query, record.snapshot(), shallow, threshold=0.99)
    assert first.decision.status == "no_match" and first.stages()["verify"]["surfaces"] == 2

    deep = run(query, record.snapshot(), dataclasses.replace(shallow, verify=dataclasses.replace(shallow.verify, deepen=2)), threshold=0.99)
    stages = deep.stages()["verify"]
    assert (stages["max_inliers"], stages["deepened"], stages["surfaces"]) == (0, 2, 4)
    assert (deep.decision.status, deep.decision.label) == ("matched", "surface3")
    assert deep.ranked[0].source == "deepened" and deep.ranked[0].surface_peak > 12
    assert all(r.surface_peak < 9 for r in deep.ranked[1:] if r.surface_peak is not None)


def test_a_third_pass_correlates_the_reliefs_of_offered_candidates_no_pass_verified(tmp_path: Path) -> None:
    """`verify.correlate_rest`: offered past every verified position, a relit bare surface is found by its relief
    alone; the geometric odds are not divided by those candidates, and a photo of a found cake never pays it."""
    import dataclasses

    from pipeline.config import default_config
    from pipeline.matcher import run

    record, query = relit_surfaces(tmp_path)  # the right surface, row 3, offered fourth
    base = default_config().matcher
    offered = dataclasses.replace(base, shortlist=dataclasses.replace(base.shortlist, top_k=5, min_candidates=5, lbp_top_k=0, vote_top_k=0),
                                  verify=dataclasses.replace(base.verify, max_candidates=2, deepen=0, correlate_rest=0))
    alone = run(query, record.snapshot(), offered, threshold=0.99)
    assert alone.decision.status == "no_match" and alone.stages()["verify"]["surfaces"] == 2
    assert all(r.surface_peak is None for r in alone.ranked if r.position >= 2)

    laps: list[str] = []
    third = run(query, record.snapshot(), dataclasses.replace(offered, verify=dataclasses.replace(offered.verify, correlate_rest=2)),
                threshold=0.99, lap=laps.append)
    assert laps == ["shortlist", "refine", "verify", "correlate", "decide"]
    stages = third.stages()
    assert (stages["verify"]["verified"], stages["verify"]["surfaces"], stages["verify"]["correlated_only"]) == (2, 4, 2)
    assert stages["decide"]["tested"] == alone.stages()["decide"]["tested"]
    assert (third.decision.status, third.decision.label) == ("matched", "surface3")
    assert third.ranked[0].position == 3 and third.ranked[0].inliers is None and third.ranked[0].surface_peak > 12
    assert [r.surface_peak is None for r in sorted(third.ranked, key=lambda r: r.position)] == [False] * 4 + [True]  # row 4: past the cap

    laps.clear()
    cake = dataclasses.replace(query, cake_found=True)
    run(cake, record.snapshot(), dataclasses.replace(offered, verify=dataclasses.replace(offered.verify, correlate_rest=2)),
        threshold=0.99, lap=laps.append)
    assert "correlate" not in laps


def test_light_inverted_keypoints_are_those_of_the_negative_photo() -> None:
    """SIFT on the photo's negative finds the same keypoints turned 180 degrees: their descriptors are the
    original's with the spatial cells turned (`light_inverted`), not recomputed."""
    grey = lit(relief(4, 2.0), azimuth=30, elevation=45)
    found = extract_local(grey, max_keypoints=400, side=384, contrast_threshold=0.01)
    negative = extract_local(255 - grey, max_keypoints=400, side=384, contrast_threshold=0.01)
    inverted = light_inverted(found)
    assert inverted is not None and np.array_equal(inverted.points, found.points) and inverted.side == found.side
    near = np.linalg.norm(negative.points[:, None] - found.points[None], axis=2)
    same = 0
    for i, j in zip(*np.nonzero(near < 1e-3)):
        same += int(np.array_equal(negative.descriptors[i], inverted.descriptors[j]))
    assert same >= 0.6 * len(found), f"{same} of {len(found)} keypoints have the negative photo's descriptor"
    assert not np.array_equal(inverted.descriptors, found.descriptors)
    assert light_inverted(extract_local(grey, method="orb")) is None


def test_a_bare_relief_lit_from_the_other_side_is_verified_through_its_negative() -> None:
    """Grazing light (35 degrees up) from the opposite side, the photo turned: no descriptor survives as it is,
    the negative's do; another surface under the same light gains nothing from it."""
    height = relief(5, 4.0)
    registered = extract_local(lit(height, azimuth=0, elevation=35), side=384, contrast_threshold=0.01)
    reshot = extract_local(rephotograph(lit(height, azimuth=180, elevation=35), angle=35, tilt=0.0),
                           side=384, contrast_threshold=0.01)
    stranger = extract_local(lit(relief(6, 4.0), azimuth=180, elevation=35), side=384, contrast_threshold=0.01)
    assert verify_pair(reshot, registered).inliers < 10, "precondition: the light moved every shadow"
    both = verify(reshot, [registered, stranger], max_candidates=2, inverted=light_inverted(reshot))
    assert both.results[0].inliers >= 50 and both.inverted == 1
    assert both.results[1].inliers < 10
    assert both.report()["light_inverted"] == both.inverted


def test_shipped_pipeline_matches_a_bare_relief_relit_from_the_other_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole pipeline, shipped config: a bare surface registered under grazing light and photographed again
    with the light opposite is matched through the negative's keypoints (stages.verify says so, with two fits a
    candidate); another surface under that light is refused."""
    catalog = tmp_path / "catalog"
    for k in range(3):
        write_rgb(catalog / f"surface{k}-1.png", lit(relief(20 + k, 4.0), azimuth=0, elevation=35))
    base = ["--root", str(tmp_path / "root")]
    assert main([*base, "index", str(catalog)]) == 0
    capsys.readouterr()
    answers = {}
    for name, height in (("surface1", relief(21, 4.0)), ("stranger", relief(30, 4.0))):
        # Turned a quarter (no border: a rotated frame with corners filled in reads as a located cake).
        query = write_rgb(tmp_path / f"{name}_q.jpg", np.ascontiguousarray(np.rot90(lit(height, azimuth=180, elevation=35))))
        assert main([*base, "match", "--json", str(query)]) == 0
        answers[name] = json.loads(capsys.readouterr().out)
    relit, stranger = answers["surface1"], answers["stranger"]
    assert (relit["status"], relit["label"]) == ("matched", "surface1")
    assert relit["stages"]["verify"]["light_inverted"] >= 1 and relit["stages"]["verify"]["tries_per_candidate"] == 2
    assert relit["matches"][0]["inliers"] >= 50
    assert stranger["status"] == "no_match"
