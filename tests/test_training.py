"""Training: views are pure and seeded; a tiny run trains, saves, loads, resumes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.training import data as tdata
from pipeline.training import views


def _photo(seed: int, size: int = 128, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = tdata.procedural_texture(rng, size)
    return img if channels == 3 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


# ------------------------------------------------------------------ views


@pytest.mark.parametrize("channels", [1, 3])
def test_view_transforms_keep_shape_and_dtype(channels: int) -> None:
    img = _photo(1, 96, channels)
    rng = np.random.default_rng(0)
    outs = [
        views.rotate(img, 37.0),
        views.tilt(img, 25.0, 60.0),
        views.scale_shift(img, 1.3, (0.05, -0.05)),
        views.scale_shift(img, 0.7),
        views.lighting_gradient(img, 0.5, 30.0),
        views.colour_cast(img, (1.2, 0.9, 1.1)),
        views.gamma(img, 0.8, 1.1),
        views.blur(img, 1.2),
        views.sensor_noise(img, rng, 4.0),
        views.jpeg(img, 60),
        views.photometric(img, views.sample_view_params(rng), rng),
    ]
    for out in outs:
        assert out.shape == img.shape and out.dtype == np.uint8
    # each transform does something
    assert all(not np.array_equal(out, img) for out in outs)
    shot = views.rephotograph(img, rng, out_size=64)
    assert shot.shape == (64, 64) + img.shape[2:] and shot.dtype == np.uint8


def test_rotation_by_90_is_exact_and_views_are_seed_deterministic() -> None:
    img = _photo(2, 65)
    assert np.array_equal(views.rotate(img, 90.0), np.rot90(img, 1))
    a = views.rephotograph(img, np.random.default_rng(5), out_size=48)
    b = views.rephotograph(img, np.random.default_rng(5), out_size=48)
    c = views.rephotograph(img, np.random.default_rng(6), out_size=48)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    d1 = views.disc_photo(img, np.random.default_rng(3), (32.0, 32.0), 30.0, out_size=80)
    d2 = views.disc_photo(img, np.random.default_rng(3), (32.0, 32.0), 30.0, out_size=80)
    assert d1.shape == (80, 80, 3) and d1.dtype == np.uint8 and np.array_equal(d1, d2)


def test_tilt_keeps_object_centred() -> None:
    # a bright dot at the centre stays near the centre under a 30 degree tilt
    img = np.zeros((101, 101), np.uint8)
    cv2.circle(img, (50, 50), 4, 255, -1)
    out = views.rephotograph(img, np.random.default_rng(0), out_size=101,
                             params=views.ViewParams(tilt=30.0, tilt_axis=40.0, angle=70.0), border=cv2.BORDER_CONSTANT)
    ys, xs = np.nonzero(out > 128)
    assert abs(xs.mean() - 50) < 3 and abs(ys.mean() - 50) < 3


def test_pair_bank_is_deterministic_and_groups_distinct_in_a_round() -> None:
    sources = tdata.procedural_sources((9, 0), 6, size=96)
    a1, b1, g1 = tdata.make_pair_bank(sources, np.random.default_rng(1), 6, 32)
    a2, b2, g2 = tdata.make_pair_bank(sources, np.random.default_rng(1), 6, 32)
    assert a1.shape == (6, 32, 32, 3) and a1.dtype == np.uint8
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2) and np.array_equal(g1, g2)
    assert sorted(g1.tolist()) == list(range(6))


def test_held_out_split_is_stable_and_keeps_near_duplicates_together() -> None:
    assert tdata.family("data:aloeL.jpg") == tdata.family("data:aloeR.jpg")
    assert tdata.family("data:graf1.png") == tdata.family("data:graf3.png")
    assert tdata.is_held_out("skimage:grass.png") is True
    assert tdata.is_held_out("skimage:brick.png") is False


# -------------------------------------------------------------- training


def _images(folder: Path) -> Path:
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"tex{i}.png"), _photo(10 + i, 128))
    group = folder / "cakeA"  # two photos of one object
    group.mkdir()
    for i in range(2):
        cv2.imwrite(str(group / f"shot{i}.png"), _photo(20, 128))
    return folder


def _train(out: Path, images: Path, *extra: str) -> int:
    from pipeline.training.train import main

    return main([
        "--images", str(images), "procedural:4", "--epochs", "2", "--steps", "2", "--batch-size", "6",
        "--input-size", "32", "--width", "4", "--embedding-dim", "16", "--calib-objects", "16",
        "--calib-procedural", "8", "--out", str(out), "--quiet", *extra,
    ])


def _weights(path: Path) -> list[np.ndarray]:
    import keras

    return [np.asarray(w) for w in keras.models.load_model(path, safe_mode=True, compile=False).get_weights()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("train")
    images = _images(base / "images")
    out = base / "full" / "enc.keras"
    assert _train(out, images) == 0
    return out, images


def test_tiny_training_run_gives_a_loadable_unit_norm_encoder(trained: tuple[Path, Path]) -> None:
    from pipeline.features.embedding import Encoder

    out, _ = trained
    enc = Encoder.load(out)
    assert enc.info.input_size == 32 and enc.info.channels == 1 and enc.info.embedding_dim == 16
    assert enc.info.rotation_pool == 4
    vecs = enc.embed([_photo(40, 100), _photo(41, 70, channels=1)])
    assert vecs.shape == (2, 16) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert isinstance(meta["threshold"], float) and -1.0 <= meta["threshold"] <= 1.0001
    assert meta["calibration"]["far"] <= meta["calibration"]["target_far"]
    assert meta["training"]["command"].startswith("teaprint train ")
    assert "--seed 0" in meta["training"]["command"]
    assert meta["training"]["epochs"] == 2 and len(meta["training"]["history"]) == 2
    assert any("cakeA/shot0.png" in name for name in meta["training"]["data"]["photos"] + meta["calibration"]["sources"])


def test_rotation_pool_makes_embedding_invariant_to_quarter_turns(trained: tuple[Path, Path]) -> None:
    from pipeline.features.embedding import Encoder

    enc = Encoder.load(trained[0])
    img = _photo(42, 96)
    v = enc.embed([img, np.ascontiguousarray(np.rot90(img))])
    assert float(v[0] @ v[1]) > 0.9999


def test_resume_continues_from_checkpoint_and_matches_uninterrupted_run(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from pipeline.training.train import checkpoint_dir

    full, images = trained
    out = tmp_path / "split" / "enc.keras"
    assert _train(out, images, "--stop-after", "1") == 0
    state = json.loads((checkpoint_dir(out) / "state.json").read_text())
    assert state["epoch"] == 1 and not out.exists()
    assert _train(out, images, "--resume") == 0
    state = json.loads((checkpoint_dir(out) / "state.json").read_text())
    assert state["epoch"] == 2
    # same seed, interrupted + resumed == uninterrupted, weight for weight
    for w1, w2 in zip(_weights(full), _weights(out)):
        np.testing.assert_array_equal(w1, w2)
    meta_full = json.loads(full.with_suffix(".json").read_text())
    meta_split = json.loads(out.with_suffix(".json").read_text())
    assert [h["loss"] for h in meta_full["training"]["history"]] == [h["loss"] for h in meta_split["training"]["history"]]


def test_resume_refuses_a_checkpoint_made_with_other_settings(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, images = trained
    out = tmp_path / "enc.keras"
    assert _train(out, images, "--stop-after", "1") == 0
    assert _train(out, images, "--resume", "--seed", "3") == 2


# ------------------------------------------------- more real data, hard shots


def _write_gimp_pattern(path: Path, pixels: np.ndarray) -> None:
    """A GIMP .pat file: big-endian header (size, version, w, h, depth, 'GPAT', name) + raw pixels."""
    name = b"test\0"
    h, w, depth = pixels.shape
    header = (24 + len(name)).to_bytes(4, "big") + (1).to_bytes(4, "big") + w.to_bytes(4, "big") + h.to_bytes(4, "big")
    path.write_bytes(header + depth.to_bytes(4, "big") + b"GPAT" + name + pixels.tobytes())


def test_gimp_patterns_are_read_tiled_and_never_give_sibling_negatives(tmp_path: Path) -> None:
    tile = _photo(30, 64)
    folder = tmp_path / "patterns"
    (folder / "Stone").mkdir(parents=True)
    _write_gimp_pattern(folder / "Stone" / "rock.pat", tile)
    _write_gimp_pattern(folder / "grey.pat", cv2.cvtColor(tile, cv2.COLOR_RGB2GRAY)[..., None])
    (folder / "broken.pat").write_bytes(b"not a pattern")
    sources = tdata.resolve_sources([f"each:{folder}"], split="all").photos
    assert [s.name for s in sources] == ["patterns:Stone/rock.pat", "patterns:grey.pat"]
    rock = sources[0]
    assert rock.image.shape == (tdata.PATTERN_SIDE, tdata.PATTERN_SIDE, 3) and rock.tiled
    assert np.array_equal(rock.image[:64, :64], tile) and np.array_equal(rock.image[64:128, :64], tile)
    assert rock.group == rock.name  # each: a subfolder is not one object
    assert sources[1].image.shape[2] == 3
    # a plain folder keeps its old meaning: a subfolder is one object
    assert tdata.resolve_sources([str(folder)], split="all").photos[0].group == "patterns:Stone"
    # tiled sources never give siblings, even when every draw asks for them
    _, _, groups = tdata.make_pair_bank(sources, np.random.default_rng(0), 8, 32, sibling_prob=1.0)
    assert (groups >= 0).all()


def test_hard_pairs_and_sibling_discs_are_seeded_and_siblings_are_each_others_negatives() -> None:
    sources = tdata.procedural_sources((9, 1), 5, size=256)
    bank = [tdata.make_pair_bank(sources, np.random.default_rng(4), 8, 48, hard_prob=0.5, sibling_prob=1.0) for _ in range(2)]
    (a, b, groups), (a2, b2, groups2) = bank
    assert np.array_equal(a, a2) and np.array_equal(b, b2) and np.array_equal(groups, groups2)
    assert a.shape == (8, 48, 48, 3) and a.dtype == np.uint8
    siblings = np.flatnonzero(groups < 0)
    assert siblings.size >= 3  # every single-photo source gives two discs when asked
    for k in siblings:  # a sibling follows its twin, which has the source's group: two labels, one photo
        assert groups[k] == -1 - k and groups[k - 1] >= 0
    assert len(set(groups.tolist())) == 8  # one round: all distinct, the loss takes every other object as a negative
    rng = np.random.default_rng(2)
    objs = tdata.sample_siblings(rng, sources[0].image, 0, hard_prob=0.0)
    assert objs is not None and len(objs) == 2
    (x0, y0), (x1, y1) = objs[0].centre, objs[1].centre
    gap = max(abs(x1 - x0), abs(y1 - y0))
    assert gap >= (objs[0].side + objs[1].side) / 2  # disjoint squares
    assert tdata.sample_siblings(rng, np.full((256, 256, 3), 128, np.uint8), 0, 0.0) is None  # blank: no siblings


def test_hard_view_shows_the_disc_smaller_tilted_and_occluded_than_its_registration_shot() -> None:
    img = np.zeros((200, 200, 3), np.uint8)
    img[:, :] = (200, 200, 200)
    obj = tdata.ObjectSpec(0, (100.0, 100.0), 200.0, disc=True, hard=True)
    reg, hard = tdata.render_pair(img, obj, np.random.default_rng(3), 96)
    assert reg.shape == hard.shape == (96, 96, 3)
    assert not np.array_equal(reg, hard)
    again = tdata.render_pair(img, obj, np.random.default_rng(3), 96)
    assert np.array_equal(again[0], reg) and np.array_equal(again[1], hard)


def test_epoch_views_do_not_depend_on_the_number_of_worker_processes() -> None:
    import argparse

    from pipeline.training import train

    args = argparse.Namespace(seed=3, steps=2, batch_size=4, input_size=32, channels=1, disc_mask=False, disc_prob=0.3,
                              hard_prob=0.5, sibling_prob=0.5, _procedural=3, workers=2)
    photos = tdata.procedural_sources((9, 2), 3, size=128)
    x1, g1 = train.epoch_bank(args, photos, 1)
    pool = train._pool(args, photos)
    try:
        x2, g2 = train.collect_epoch(train.submit_epoch(pool, args, photos, 1))
    finally:
        pool.shutdown()
    assert x1.shape == (2 * 2 * 4, 32, 32, 1) and x1.dtype == np.float32
    assert np.array_equal(x1, x2) and np.array_equal(g1, g2)
    # batch i is view a of its objects, then their view b: the same groups twice
    assert np.array_equal(g1[:4], g1[4:8])


def test_ntxent_loss_masks_same_group_rows_and_prefers_matching_views() -> None:
    from keras import ops

    from pipeline.training.train import make_loss

    loss = make_loss("ntxent", temperature=0.1, margin=0.3)
    z = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1, 2, 3]]  # view b == view a
    groups = np.array([0, 1, 2, 3] * 2, np.float32)
    good = float(ops.convert_to_numpy(loss(groups, z)))
    swapped = float(ops.convert_to_numpy(loss(groups, z[[0, 1, 2, 3, 1, 0, 3, 2]])))
    assert good < 0.01 < swapped
    # objects 0 and 1 in one group: their identical rows are masked, not counted as negatives
    same = np.eye(4, dtype=np.float32)[[0, 0, 2, 3, 0, 0, 2, 3]]
    assert float(ops.convert_to_numpy(loss(np.array([0, 0, 2, 3] * 2, np.float32), same))) < 0.01
    assert float(ops.convert_to_numpy(loss(groups, same))) > 0.5


def test_benchmark_sources_leave_out_the_encoders_training_photos_and_their_near_duplicates(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    for i, name in enumerate(("graf1.png", "graf3.png", "baboon.png", "fruits.png")):
        cv2.imwrite(str(folder / name), _photo(40 + i, 128))
    record = tmp_path / "encoder.json"
    record.write_text(json.dumps({"training": {"data": {"photos": ["data:graf1.png", "data:fruits.png"]}}}))
    trained = tdata.trained_photos(record)
    sources = tdata.resolve_sources([str(folder)], split="all").photos
    # graf3 shows graf1's scene: a benchmark cake cut from it would be a trained-on object under another name
    assert [s.name for s in tdata.without_trained(sources, trained)] == ["data:baboon.png"]
    # the shipped record names real photos, and the benchmark's evaluation photos are not among them
    shipped = tdata.trained_photos()
    assert "bare:shape-100g.jpg" in shipped
    held_out = tdata.resolve_sources(["skimage"], split="held_out").photos
    assert held_out and tdata.without_trained(held_out, shipped) == held_out
    record.write_text(json.dumps({"training": {"command": "teaprint train"}}))
    with pytest.raises(ValueError, match="training.data.photos"):
        tdata.trained_photos(record)
