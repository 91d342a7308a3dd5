"""Tests of `pipeline.intake`: real files on disk, no mocks."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import signal
import time
import tracemalloc
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image, ImageOps

from imagefiles import (
    exif_bytes,
    grey_photo,
    resized,
    rgb_photo,
    set_jpeg_size,
    truncate_file,
    write_image,
    write_jpeg,
    write_png16,
    write_png_claiming,
    write_tiff16,
)
from pipeline.config import IntakeConfig, default_config
from pipeline.intake import (
    CODES,
    IntakeError,
    Photo,
    choose_reduction,
    file_sha256,
    is_candidate,
    read_photo,
)

CONFIG = default_config().intake
JPEG_TOLERANCE = 3.0  # mean absolute difference, grey levels, for lossy round trips


def refused(path: Path, code: str, config: IntakeConfig = CONFIG, root: Path | None = None) -> IntakeError:
    """Assert that `read_photo` refuses `path` with `code` and a one-line message."""
    with pytest.raises(IntakeError) as info:
        read_photo(path, config, root=root)
    err = info.value
    assert err.code == code, f"expected {code}, got {err.code}: {err}"
    text = str(err)
    assert text == err.reason
    assert text.strip() and len(text.splitlines()) == 1
    return err


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def assert_rgb8(photo: Photo) -> None:
    assert photo.pixels.dtype == np.uint8
    assert photo.pixels.ndim == 3 and photo.pixels.shape[2] == 3
    assert photo.pixels.flags.c_contiguous


def pil_upright(path: Path) -> np.ndarray:
    """An independent decode: Pillow, with Pillow's own EXIF transpose."""
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging (Unix main thread only)."""

    def fail(signum: int, frame: object) -> None:
        raise TimeoutError(f"took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def peak_python_memory() -> Iterator[list[int]]:
    """Peak bytes allocated through Python and NumPy inside the block, in out[0]."""
    out = [0]
    tracemalloc.start()
    try:
        yield out
    finally:
        out[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


# --- formats -------------------------------------------------------------------


def test_reads_jpeg(tmp_path: Path) -> None:
    rgb = rgb_photo("coffee")  # 600 x 400
    path = write_jpeg(tmp_path / "cake.jpg", rgb, quality=95)
    photo = read_photo(path, CONFIG)
    assert_rgb8(photo)
    assert photo.pixels.shape == (400, 600, 3)
    assert photo.original_size == (600, 400)
    assert photo.reduction == 1
    assert photo.path == path
    assert mean_abs_diff(photo.pixels, rgb) < JPEG_TOLERANCE


@pytest.mark.parametrize(
    ("name", "fmt", "options"),
    [
        ("cake.png", "PNG", {}),
        ("cake.webp", "WEBP", {"lossless": True}),
        ("cake.bmp", "BMP", {}),
        ("cake.tif", "TIFF", {}),
        ("cake.tiff", "TIFF", {"compression": "tiff_lzw"}),
    ],
)
def test_reads_lossless_formats_exactly(tmp_path: Path, name: str, fmt: str, options: dict) -> None:
    rgb = rgb_photo("chelsea")  # 451 x 300, colour order visible in exact compare
    photo = read_photo(write_image(tmp_path / name, rgb, fmt, **options), CONFIG)
    assert_rgb8(photo)
    assert photo.original_size == (451, 300)
    np.testing.assert_array_equal(photo.pixels, rgb)


def test_reads_lossy_webp(tmp_path: Path) -> None:
    rgb = rgb_photo("coffee")
    photo = read_photo(write_image(tmp_path / "cake.webp", rgb, "WEBP", quality=90), CONFIG)
    assert_rgb8(photo)
    assert mean_abs_diff(photo.pixels, rgb) < JPEG_TOLERANCE


def test_content_not_extension_decides_the_decoder(tmp_path: Path) -> None:
    rgb = rgb_photo("chelsea")
    photo = read_photo(write_image(tmp_path / "really_a_png.jpg", rgb, "PNG"), CONFIG)
    np.testing.assert_array_equal(photo.pixels, rgb)


def test_non_ascii_file_name(tmp_path: Path) -> None:
    rgb = rgb_photo("coffee")
    path = write_jpeg(tmp_path / "普洱 茶饼 — é ß.jpg", rgb)
    photo = read_photo(path, CONFIG)
    assert photo.path == path
    assert mean_abs_diff(photo.pixels, rgb) < JPEG_TOLERANCE


def test_hash_is_of_the_bytes_on_disk(tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "cake.jpg", rgb_photo("coffee"))
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert read_photo(path, CONFIG).sha256 == expected
    assert file_sha256(path) == expected


# --- odd modes -------------------------------------------------------------------


def test_grey_png_gives_three_equal_channels(tmp_path: Path) -> None:
    grey = grey_photo("camera")
    photo = read_photo(write_image(tmp_path / "grey.png", grey, "PNG"), CONFIG)
    assert_rgb8(photo)
    for channel in range(3):
        np.testing.assert_array_equal(photo.pixels[..., channel], grey)


def test_grey_jpeg_gives_rgb(tmp_path: Path) -> None:
    grey = grey_photo("camera")
    photo = read_photo(write_jpeg(tmp_path / "grey.jpg", grey), CONFIG)
    assert_rgb8(photo)
    assert mean_abs_diff(photo.pixels, np.repeat(grey[..., None], 3, axis=2)) < JPEG_TOLERANCE


def test_palette_png(tmp_path: Path) -> None:
    palette = Image.fromarray(rgb_photo("chelsea")).quantize(64)
    path = tmp_path / "palette.png"
    palette.save(path)
    photo = read_photo(path, CONFIG)
    np.testing.assert_array_equal(photo.pixels, np.asarray(palette.convert("RGB")))


def expected_over_grey(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Independent float version of compositing over grey 128."""
    a = alpha.astype(np.float64) / 255.0
    if colour.ndim == 3:
        a = a[..., None]
    return np.rint(colour * a + 128.0 * (1.0 - a)).astype(np.uint8)


def alpha_ramp(height: int, width: int) -> np.ndarray:
    """Alpha rising 0..255 left to right, so every level occurs."""
    return np.tile(np.linspace(0, 255, width).round().astype(np.uint8), (height, 1))


def test_rgba_png_is_composited_over_grey(tmp_path: Path) -> None:
    rgb = rgb_photo("chelsea")
    alpha = alpha_ramp(*rgb.shape[:2])
    photo = read_photo(write_image(tmp_path / "cut.png", np.dstack([rgb, alpha]), "PNG"), CONFIG)
    assert_rgb8(photo)
    np.testing.assert_array_equal(photo.pixels, expected_over_grey(rgb, alpha))
    assert (photo.pixels[:, 0] == 128).all()  # fully transparent column


def test_grey_alpha_png_is_composited_over_grey(tmp_path: Path) -> None:
    grey = grey_photo("camera")
    alpha = alpha_ramp(*grey.shape)
    photo = read_photo(write_image(tmp_path / "grey_alpha.png", np.dstack([grey, alpha]), "PNG"), CONFIG)
    assert_rgb8(photo)
    expected = expected_over_grey(grey, alpha)
    for channel in range(3):
        np.testing.assert_array_equal(photo.pixels[..., channel], expected)


def photo16(rgb: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 16-bit version of `rgb` with busy low bytes, as a 16-bit camera gives.

    Truncating (low byte), shifting (high byte) and rounding all give
    different 8-bit results for most pixels.
    """
    noise = np.random.default_rng(seed).integers(0, 256, size=rgb.shape, dtype=np.uint16)
    return rgb.astype(np.uint16) * 256 + noise


def scaled_to_8bit(values: np.ndarray) -> np.ndarray:
    return np.rint(values.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)


def test_16bit_rgb_png_is_scaled_with_rounding(tmp_path: Path) -> None:
    rgb16 = photo16(rgb_photo("chelsea"))
    photo = read_photo(write_png16(tmp_path / "deep.png", rgb16), CONFIG)
    assert_rgb8(photo)
    np.testing.assert_array_equal(photo.pixels, scaled_to_8bit(rgb16))


def test_16bit_grey_png(tmp_path: Path) -> None:
    grey16 = photo16(grey_photo("camera"))
    photo = read_photo(write_png16(tmp_path / "deep_grey.png", grey16), CONFIG)
    assert_rgb8(photo)
    np.testing.assert_array_equal(photo.pixels[..., 1], scaled_to_8bit(grey16))


def test_16bit_rgba_png(tmp_path: Path) -> None:
    rgb16 = photo16(rgb_photo("chelsea"))
    alpha16 = alpha_ramp(*rgb16.shape[:2]).astype(np.uint16) * 257
    photo = read_photo(write_png16(tmp_path / "deep_cut.png", np.dstack([rgb16, alpha16])), CONFIG)
    np.testing.assert_array_equal(photo.pixels, expected_over_grey(scaled_to_8bit(rgb16), scaled_to_8bit(alpha16)))


def test_16bit_rgb_tiff(tmp_path: Path) -> None:
    rgb16 = photo16(rgb_photo("coffee"), seed=1)
    photo = read_photo(write_tiff16(tmp_path / "scan.tif", rgb16), CONFIG)
    assert_rgb8(photo)
    np.testing.assert_array_equal(photo.pixels, scaled_to_8bit(rgb16))


# --- orientation -------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    sensor = rgb_photo("coffee")  # 600 wide x 400 high as stored
    path = write_jpeg(tmp_path / f"o{orientation}.jpg", sensor, quality=95, exif_orientation=orientation)
    photo = read_photo(path, CONFIG)
    assert_rgb8(photo)
    upright = pil_upright(path)
    assert photo.pixels.shape == upright.shape
    assert photo.original_size == (upright.shape[1], upright.shape[0])
    assert mean_abs_diff(photo.pixels, upright) < 1.0  # same file, two libjpeg builds


def test_png_exif_orientation_is_applied(tmp_path: Path) -> None:
    rgb = rgb_photo("chelsea")
    path = write_image(tmp_path / "o8.png", rgb, "PNG", exif=exif_bytes(8))
    photo = read_photo(path, CONFIG)
    np.testing.assert_array_equal(photo.pixels, np.rot90(rgb, k=1))  # 8: turn 90 counter-clockwise
    assert photo.original_size == (300, 451)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_tag_is_applied_once(tmp_path: Path, orientation: int) -> None:
    # OpenCV orients TIFF itself; applying the tag again would turn 6 into 180 degrees.
    rgb = rgb_photo("chelsea")
    path = write_image(tmp_path / f"o{orientation}.tif", rgb, "TIFF", tiffinfo={274: orientation})
    photo = read_photo(path, CONFIG)
    np.testing.assert_array_equal(photo.pixels, pil_upright(path))
    assert photo.original_size == (photo.pixels.shape[1], photo.pixels.shape[0])


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_16bit_tiff_orientation_tag_is_applied_once(tmp_path: Path, orientation: int) -> None:
    rgb16 = photo16(rgb_photo("chelsea"), seed=2)
    path = write_tiff16(tmp_path / f"o{orientation}.tif", rgb16, orientation=orientation)
    photo = read_photo(path, CONFIG)
    expected = {3: np.rot90(rgb16, 2), 6: np.rot90(rgb16, k=-1), 8: np.rot90(rgb16, k=1)}[orientation]
    np.testing.assert_array_equal(photo.pixels, scaled_to_8bit(expected))


# --- reduced decoding of large JPEGs --------------------------------------------------


@pytest.fixture(scope="module")
def big_scene() -> np.ndarray:
    return resized(rgb_photo("coffee"), 4000, 3000)


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory, big_scene: np.ndarray) -> Path:
    return write_jpeg(tmp_path_factory.mktemp("big") / "big.jpg", big_scene, quality=85)


@pytest.mark.parametrize(
    ("work_side", "reduction"),
    [(1024, 2), (1500, 2), (1501, 1), (750, 4), (751, 2), (300, 8), (375, 8), (5000, 1)],
)
def test_big_jpeg_is_decoded_reduced(big_jpeg: Path, big_scene: np.ndarray, work_side: int, reduction: int) -> None:
    photo = read_photo(big_jpeg, replace(CONFIG, work_side=work_side))
    assert photo.reduction == reduction
    assert photo.original_size == (4000, 3000)
    assert photo.pixels.shape == (3000 // reduction, 4000 // reduction, 3)
    assert min(photo.pixels.shape[:2]) >= min(work_side, 3000)
    expected = resized(big_scene, 4000 // reduction, 3000 // reduction)
    assert mean_abs_diff(photo.pixels, expected) < JPEG_TOLERANCE


def test_reduced_decode_keeps_exif_orientation(tmp_path: Path, big_scene: np.ndarray) -> None:
    path = write_jpeg(tmp_path / "big_o6.jpg", big_scene, quality=85, exif_orientation=6)
    photo = read_photo(path, replace(CONFIG, work_side=1024))
    assert photo.reduction == 2
    assert photo.original_size == (3000, 4000)
    assert photo.pixels.shape == (2000, 1500, 3)
    expected = np.rot90(resized(big_scene, 2000, 1500), k=-1)
    assert mean_abs_diff(photo.pixels, expected) < JPEG_TOLERANCE


def test_only_jpeg_is_reduced(tmp_path: Path) -> None:
    photo = read_photo(write_image(tmp_path / "cake.png", rgb_photo("coffee"), "PNG"), replace(CONFIG, work_side=50))
    assert photo.reduction == 1
    assert photo.pixels.shape == (400, 600, 3)


@pytest.mark.parametrize(
    ("size", "work_side", "reduction"),
    [((4000, 3001), 751, 4), ((4000, 3001), 752, 2), ((3000, 4000), 1024, 2), ((512, 512), 1024, 1), ((8000, 8000), 1000, 8)],
)
def test_choose_reduction_rounds_up_like_libjpeg(size: tuple[int, int], work_side: int, reduction: int) -> None:
    assert choose_reduction(size, work_side) == reduction


# --- refusals -------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    err = refused(tmp_path / "nothing.jpg", "missing")
    assert "nothing.jpg" in str(err)


def test_missing_file_with_line_break_in_name_gives_one_line(tmp_path: Path) -> None:
    refused(tmp_path / "two\nlines.jpg", "missing")


def test_dangling_symlink_is_missing(tmp_path: Path) -> None:
    link = tmp_path / "link.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    refused(link, "missing")


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    refused(path, "empty")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("shopping list: tea, more tea\n", encoding="utf-8")
    refused(path, "not_an_image")


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    refused(path, "not_an_image")


def test_gif_is_unsupported(tmp_path: Path) -> None:
    path = write_image(tmp_path / "anim.jpg", rgb_photo("chelsea"), "GIF")
    err = refused(path, "unsupported_type")
    assert "GIF" in str(err)


def test_heic_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "IMG_0001.jpg"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(1000))
    err = refused(path, "unsupported_type")
    assert "HEIC" in str(err)


@pytest.mark.parametrize(
    ("name", "fmt", "options"),
    [
        ("half.jpg", "JPEG", {"quality": 90}),
        ("half_progressive.jpg", "JPEG", {"quality": 90, "progressive": True}),
        ("half.png", "PNG", {}),
        ("half.webp", "WEBP", {"quality": 80}),
        ("half.bmp", "BMP", {}),
        ("half.tif", "TIFF", {}),
    ],
)
def test_file_cut_in_half_is_truncated(tmp_path: Path, name: str, fmt: str, options: dict) -> None:
    path = truncate_file(write_image(tmp_path / name, rgb_photo("astronaut"), fmt, **options), 0.5)
    err = refused(path, "truncated")
    assert name in str(err)


def test_jpeg_missing_only_its_end_marker_is_truncated(tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "no_eoi.jpg", rgb_photo("coffee"))
    data = path.read_bytes()
    assert data.endswith(b"\xff\xd9")
    path.write_bytes(data[:-2])
    refused(path, "truncated")


def test_jpeg_cut_inside_its_header_is_truncated(tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "stub.jpg", rgb_photo("coffee"), exif_orientation=6)
    path.write_bytes(path.read_bytes()[:100])
    refused(path, "truncated")


def test_data_after_jpeg_end_is_accepted(tmp_path: Path) -> None:
    # Motion photos append an MP4 after the JPEG's EOI; the file does not end in FFD9.
    rgb = rgb_photo("coffee")
    path = write_jpeg(tmp_path / "motion.jpg", rgb)
    path.write_bytes(path.read_bytes() + b"\x00\x00\x00\x18ftypmp42" + bytes(5000))
    photo = read_photo(path, CONFIG)
    assert mean_abs_diff(photo.pixels, rgb) < JPEG_TOLERANCE


def test_png_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    path = write_png_claiming(tmp_path / "bomb.png", 30000, 30000)
    with peak_python_memory() as peak:
        refused(path, "too_many_pixels")
    assert peak[0] < 20_000_000  # decoding would need 2.7 GB


def test_png_above_our_limit_but_below_pillows_is_refused_quietly(tmp_path: Path) -> None:
    path = write_png_claiming(tmp_path / "big.png", 12000, 10000)  # 120 MP, Pillow only warns
    with warnings.catch_warnings(record=True) as caught, peak_python_memory() as peak:
        warnings.simplefilter("always")
        err = refused(path, "too_many_pixels")
    assert "12000x10000" in str(err)
    assert not caught
    assert peak[0] < 20_000_000


def test_jpeg_claiming_many_pixels_is_refused(tmp_path: Path) -> None:
    path = set_jpeg_size(write_jpeg(tmp_path / "liar.jpg", rgb_photo("coffee")), 12000, 9000)
    with peak_python_memory() as peak:
        refused(path, "too_many_pixels")
    assert peak[0] < 20_000_000


def test_megapixel_limit_is_the_configured_one(tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "cake.jpg", rgb_photo("astronaut"))  # 512 x 512 = 0.262 MP
    refused(path, "too_many_pixels", replace(CONFIG, max_megapixels=0.26))
    assert read_photo(path, replace(CONFIG, max_megapixels=0.27)).pixels.shape == (512, 512, 3)


def test_file_size_limit_is_the_configured_one(tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "cake.jpg", rgb_photo("astronaut"))
    size_mb = path.stat().st_size / 1_000_000
    refused(path, "too_large_file", replace(CONFIG, max_file_mb=size_mb * 0.999))
    assert read_photo(path, replace(CONFIG, max_file_mb=size_mb)).reduction == 1


def test_huge_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as fh:
        fh.truncate(1 << 30)  # sparse: 1 GiB claimed, nothing on disk
    with peak_python_memory() as peak:
        refused(path, "too_large_file")
    assert peak[0] < 10_000_000


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_read_error_is_unreadable(tmp_path: Path) -> None:
    # A regular file whose read fails with EIO (address 0 is never mapped);
    # unlike a permission bit, this also fails for root.
    link = tmp_path / "bad_sector.jpg"
    link.symlink_to("/proc/self/mem")
    err = refused(link, "unreadable")
    assert "bad_sector.jpg" in str(err)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "album.jpg").mkdir()
    refused(tmp_path / "album.jpg", "not_a_file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with deadline(5):
        refused(fifo, "not_a_file")


def test_path_under_a_file_is_missing(tmp_path: Path) -> None:
    parent = write_jpeg(tmp_path / "a.jpg", rgb_photo("coffee"))
    refused(parent / "b.jpg", "missing")


# --- root containment -------------------------------------------------------------


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    (tmp_path / "inbox").mkdir()
    write_jpeg(tmp_path / "outside.jpg", rgb_photo("coffee"))
    write_jpeg(tmp_path / "inbox" / "inside.jpg", rgb_photo("coffee"))
    return tmp_path / "inbox"


def test_symlink_out_of_root_is_refused(inbox: Path) -> None:
    link = inbox / "link.jpg"
    link.symlink_to(inbox.parent / "outside.jpg")
    err = refused(link, "outside_root", root=inbox)
    assert "link.jpg" in str(err)
    assert read_photo(link, CONFIG).pixels.shape == (400, 600, 3)  # no root, no restriction


def test_dot_dot_out_of_root_is_refused(inbox: Path) -> None:
    refused(inbox / ".." / "outside.jpg", "outside_root", root=inbox)


def test_symlink_within_root_is_accepted(inbox: Path) -> None:
    link = inbox / "alias.jpg"
    link.symlink_to(inbox / "inside.jpg")
    photo = read_photo(link, CONFIG, root=inbox)
    assert photo.path == link
    assert photo.sha256 == file_sha256(inbox / "inside.jpg")


def test_root_given_through_a_symlink(inbox: Path) -> None:
    alias = inbox.parent / "inbox_alias"
    alias.symlink_to(inbox, target_is_directory=True)
    assert read_photo(alias / "inside.jpg", CONFIG, root=alias).reduction == 1


# --- API details -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cake.jpg", True),
        ("CAKE.JPG", True),
        ("cake.Jpeg", True),
        ("scan.TIFF", True),
        ("shot.webp", True),
        ("anim.gif", False),
        ("cake.jpg.part", False),
        ("jpg", False),
        ("notes.txt", False),
    ],
)
def test_is_candidate(name: str, expected: bool) -> None:
    assert is_candidate(Path("/nowhere") / name, CONFIG) is expected


def test_is_candidate_normalises_configured_extensions() -> None:
    config = replace(CONFIG, extensions=("JPG", ".PNG"))
    assert is_candidate(Path("a.jpg"), config)
    assert is_candidate(Path("a.png"), config)
    assert not is_candidate(Path("a.webp"), config)


def test_photo_is_frozen_and_compares_by_identity_not_pixels(tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "cake.jpg", rgb_photo("coffee"))
    first, second = read_photo(path, CONFIG), read_photo(path, CONFIG)
    assert first == second
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.reduction = 2  # type: ignore[misc]


def test_intake_error_pickles_and_keeps_one_line() -> None:
    err = IntakeError("truncated", "a\nb.jpg: truncated JPEG")
    assert str(err) == "a b.jpg: truncated JPEG"
    back = pickle.loads(pickle.dumps(err))
    assert (back.code, back.reason) == (err.code, err.reason)
    with pytest.raises(ValueError):
        IntakeError("bogus", "no such code")
    assert "outside_root" in CODES


def test_reading_stays_fast(tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "cake.jpg", rgb_photo("astronaut"))
    start = time.perf_counter()
    for _ in range(20):
        read_photo(path, CONFIG)
    assert time.perf_counter() - start < 2.0


def test_photo_files_lists_what_a_walk_of_the_drop_folder_should() -> None:
    """Every name with a photo extension, sorted by path components, neither it nor a folder above it ignored; a
    directory named like a photo is entered, never listed; a link to a directory is listed (and refused later), never
    followed; FIFOs are listed (the safe open refuses them)."""
    import tempfile

    from pipeline.photos import photo_files

    config = default_config()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("a/b.jpg", "a-c.jpg", "A.JPG", ".hidden.jpg", "x.jpg.part", ".dir/y.jpg", "sub/.z/w.jpg", "sub/v.png",
                     "dirlike.jpg/inner.jpg", "n.txt", "deep/er/q.webp"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(b"x")
        os.symlink(root / "sub", root / "linkdir.jpg")
        os.symlink(root / "sub", root / "linkdir")
        os.mkfifo(root / "fifo.jpg")
        walked = [p.relative_to(root).as_posix() for p in photo_files(root, config)]
        top = [p.relative_to(root).as_posix() for p in photo_files(root, config, recursive=False)]
    # "a/b.jpg" before "a-c.jpg": components compare, as `Path` objects sort (a string sort would swap them)
    assert walked == ["A.JPG", "a/b.jpg", "a-c.jpg", "deep/er/q.webp", "dirlike.jpg/inner.jpg", "fifo.jpg", "linkdir.jpg",
                      "sub/v.png"]
    assert top == ["A.JPG", "a-c.jpg", "fifo.jpg", "linkdir.jpg"]
    assert list(photo_files(root / "gone", config)) == []
