"""Make real image files for tests: photos, odd modes, damaged and hostile files.

Pixels come from scikit-image's bundled sample photos, so no test depends on
the network. Writers take RGB order (as the pipeline does) and return the path
written. JPEG, WebP, BMP, TIFF and 8-bit PNG are written by Pillow; 16-bit PNG
is written by hand with zlib, so a test of the OpenCV-based reader does not use
OpenCV to make its input; 16-bit TIFF is written by tifffile for the same
reason.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import skimage.data
from PIL import Image

ORIENTATION_TAG = 0x0112


def rgb_photo(name: str = "astronaut") -> np.ndarray:
    """A scikit-image sample photo as (H, W, 3) uint8 RGB.

    Grey samples (e.g. "camera") are repeated into three channels; an alpha
    channel, if any, is dropped. "coffee" (400 x 600) and "chelsea" (300 x 451)
    are not square, which makes rotations visible in the shape.
    """
    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


def grey_photo(name: str = "camera") -> np.ndarray:
    """A scikit-image sample photo as (H, W) uint8 grey (RGB ones are converted)."""
    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    return image.astype(np.uint8)


def resized(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """`pixels` resized to (height, width[, C]) by bilinear interpolation."""
    return cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)


def exif_bytes(orientation: int | None) -> bytes:
    """A minimal EXIF block carrying only `orientation` (1..8); b"" for None."""
    if orientation is None:
        return b""
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    return exif.tobytes()


def write_jpeg(
    path: Path,
    pixels: np.ndarray,
    quality: int = 90,
    exif_orientation: int | None = None,
    progressive: bool = False,
) -> Path:
    """Write (H, W) grey or (H, W, 3) RGB uint8 `pixels` as a JPEG via Pillow.

    `exif_orientation` (1..8) is stored in an EXIF APP1 segment, as phones do;
    the pixels are written as given (i.e. as the sensor saw them).
    """
    return write_image(path, pixels, "JPEG", quality=quality, progressive=progressive, exif=exif_bytes(exif_orientation))


def write_image(path: Path, pixels: np.ndarray, fmt: str, **options: Any) -> Path:
    """Write uint8 `pixels` with Pillow in format `fmt` ("PNG", "WEBP", "BMP", "TIFF", "GIF", ...).

    The mode follows the shape: (H, W) grey "L", (H, W, 2) "LA", (H, W, 3)
    "RGB", (H, W, 4) "RGBA". `options` go to `Image.save` (e.g.
    `lossless=True` for WebP, `exif=exif_bytes(6)`).
    """
    path = Path(path)
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(path, fmt, **options)
    return path


def write_png16(path: Path, pixels: np.ndarray) -> Path:
    """Write uint16 `pixels` as a 16-bit PNG, by hand (zlib, no image library).

    Parameters
    ----------
    pixels : ndarray, dtype uint16, shape (H, W) grey, (H, W, 2) grey+alpha,
        (H, W, 3) RGB or (H, W, 4) RGBA
    """
    pixels = np.asarray(pixels, dtype=np.uint16)
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    height, width = pixels.shape[:2]
    rows = np.zeros((height, 1 + width * channels * 2), dtype=np.uint8)  # filter byte 0 per row
    rows[:, 1:] = pixels.astype(">u2").reshape(height, -1).view(np.uint8)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return _write_png_chunks(path, ihdr, zlib.compress(rows.tobytes(), 1))


def write_png_claiming(path: Path, width: int, height: int) -> Path:
    """A structurally complete 8-bit RGB PNG whose header claims `width` x `height`.

    The IDAT holds only a few bytes, so the file is tiny whatever it claims:
    the shape of a decompression bomb, without the cost of making one.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return _write_png_chunks(path, ihdr, zlib.compress(bytes(64)))


def _write_png_chunks(path: Path, ihdr: bytes, idat: bytes) -> Path:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    path = Path(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def write_tiff16(path: Path, pixels: np.ndarray, orientation: int | None = None) -> Path:
    """Write uint16 (H, W) grey or (H, W, 3) RGB `pixels` as an uncompressed 16-bit TIFF (tifffile).

    `orientation` (1..8), if given, is stored as TIFF tag 274.
    """
    import tifffile  # a scikit-image dependency; imported here so other helpers work without it

    photometric = "minisblack" if pixels.ndim == 2 else "rgb"
    extratags = [] if orientation is None else [(274, "H", 1, orientation, True)]
    tifffile.imwrite(Path(path), np.asarray(pixels, dtype=np.uint16), photometric=photometric, extratags=extratags)
    return Path(path)


def set_jpeg_size(path: Path, width: int, height: int) -> Path:
    """Rewrite the frame size in the SOF header of the JPEG at `path`, in place.

    Only the header changes; the file then claims `width` x `height` (each at
    most 65535) while its compressed data still describes the old image.
    """
    data = bytearray(Path(path).read_bytes())
    pos = 2
    while True:
        marker, length = data[pos + 1], struct.unpack_from(">H", data, pos + 2)[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            struct.pack_into(">HH", data, pos + 5, height, width)
            Path(path).write_bytes(bytes(data))
            return Path(path)
        pos += 2 + length


def truncate_file(path: Path, fraction: float = 0.5) -> Path:
    """Cut the file at `path` to `fraction` of its length, in place (an interrupted copy)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * fraction)])
    return Path(path)
