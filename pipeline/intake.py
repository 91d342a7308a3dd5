"""Image intake: turn one photo file into checked, upright RGB pixels.

Every photo enters the pipeline through `read_photo`. It either returns a
`Photo` or raises `IntakeError`, whose `code` says what kind of refusal it is
and whose message is one line fit to show a user or write to an error file.

The file is read once, through the one safe open (`pipeline.fsutil.open_regular`:
no FIFO, device or link out of the root is ever opened), with its size
checked by `fstat` on the opened descriptor before reading; those
bytes are hashed and decoded, so `Photo.sha256` always names exactly the pixels
returned, even if the file is rewritten meanwhile. Before any pixel is decoded:

* The header is parsed with Pillow (lazily: header only, no pixels), and an
  image above `max_megapixels` is refused. This is the decompression-bomb
  guard: a small PNG can claim 30000 x 30000 pixels. Pillow's own process-wide
  `Image.MAX_IMAGE_PIXELS` guard is left untouched; its warning is silenced
  around our call (our limit decides) and its error, raised above twice that
  value (~179 MP), is reported as `too_many_pixels` too.
* The file structure is walked to where the image data should end (JPEG
  markers up to EOI, PNG chunks up to IEND, the RIFF size of WebP, pixel array
  size of BMP, strip extents of TIFF). A file that stops short is refused as
  `truncated`. Data after the end is allowed: phones append motion-photo videos
  and maker trailers after a JPEG's EOI, so "the file ends in FFD9" is wrong.

Pixels are decoded by OpenCV from the same buffer. JPEGs are decoded reduced
(DCT scaling, 1/2, 1/4 or 1/8) when the shorter side stays >= `work_side`,
which is several times faster than a full decode. EXIF orientation is read by
Pillow and applied here. OpenCV's own handling is uneven, so it is switched
off where it can be: measured with OpenCV 5.0, it orients JPEGs (reduced or
not) unless told `IMREAD_IGNORE_ORIENTATION`, never orients PNG or WebP under
`IMREAD_UNCHANGED` (needed to keep alpha and 16 bits), and always orients
TIFF from tag 274 whatever the flags (its TIFF decoder does it itself). So we
orient everything except TIFF; the tests pin each of these.

Alpha is composited over mid-grey (128), not dropped: the colour stored under
transparent pixels is arbitrary (often black or leftovers of an edit), and
mid-grey is the "no information" fill the encoder's disc mask uses. 16-bit
samples are scaled with rounding, v * 255 / 65535. No colour management: ICC
profiles are ignored.

What is not caught: a complete JPEG with corrupt entropy data decodes with
damaged pixels, and libjpeg prints one "Corrupt JPEG data" line on stderr
directly; silencing that would mean redirecting file descriptor 2 for the whole
process. OpenCV's own log lines during decoding are silenced.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import struct
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
from PIL import Image

from pipeline.config import IntakeConfig
from pipeline.fsutil import UnsafeFile, read_regular, sha256_regular

BYTES_PER_MB = 1_000_000  # `max_file_mb` is in decimal megabytes
ALPHA_BACKGROUND = 128  # grey level that transparent pixels are composited over
REDUCTIONS = (8, 4, 2)  # JPEG DCT-scaling factors OpenCV offers, largest first

_REDUCED_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
# Pillow format name -> our kind. MPO is a JPEG with extra images appended
# (several phone makers write it); OpenCV decodes its first image.
_KINDS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP", "TIFF": "TIFF"}
_ACCEPTED = "JPEG, PNG, WebP, BMP or TIFF"
_ORIENTATION_TAG = 0x0112

CODES = frozenset(
    {
        "missing",
        "empty",
        "too_large_file",
        "too_many_pixels",
        "not_an_image",
        "truncated",
        "unsupported_type",
        "unreadable",
        "outside_root",
        "not_a_file",
        "several_cakes",
    }
)


class IntakeError(Exception):
    """A file that cannot be taken; str(err) is ONE human-readable line.

    Attributes
    ----------
    code : str
        One of `CODES`: "missing", "empty", "too_large_file",
        "too_many_pixels", "not_an_image" (not recognised, or its pixel data
        cannot be decoded), "truncated", "unsupported_type" (an image, but not
        one of JPEG, PNG, WebP, BMP, TIFF, or samples we cannot convert),
        "unreadable" (the operating system refused or failed the read),
        "outside_root", "not_a_file", "several_cakes" (a catalog photo
        showing more than one cake: raised by `pipeline.prepare`, after the
        cake locator, since an entry must be one cake).
    sha256 : str or None
        Hex sha256 of the bytes read, when the refusal came after reading
        them (a damaged image); None when nothing was read (a FIFO, a link
        out of the root...), so a refusal never carries a hash of anything
        that intake would not read.
    reason : str
        The message, on one line (line breaks, e.g. from a file name, are
        replaced by spaces).
    """

    def __init__(self, code: str, reason: str, sha256: str | None = None) -> None:
        if code not in CODES:
            raise ValueError(f"unknown intake error code {code!r}")
        reason = " ".join(str(reason).splitlines())
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.sha256 = sha256

    def __reduce__(self) -> tuple[type, tuple[str, str, str | None]]:
        # Default pickling would call __init__(reason) only; worker processes
        # send these back to the parent.
        return (type(self), (self.code, self.reason, self.sha256))


@dataclass(frozen=True)
class Photo:
    """A decoded photo and the identity of the bytes it came from.

    Attributes
    ----------
    path : Path
        The path as given to `read_photo` (not resolved).
    sha256 : str
        Hex sha256 of the file bytes exactly as read, the same bytes decoded.
    pixels : ndarray, shape (H, W, 3), dtype uint8, RGB order, C-contiguous
        EXIF orientation applied; reduced by `reduction` for large JPEGs.
    original_size : tuple of int
        (width, height) of the full-resolution image after orientation, in px.
    reduction : int
        1, 2, 4 or 8: the JPEG reduced-decode factor used (1 for other formats).
    """

    path: Path
    sha256: str
    pixels: np.ndarray = field(compare=False, repr=False)
    original_size: tuple[int, int]
    reduction: int


@dataclass(frozen=True)
class _Header:
    kind: str  # a value of _KINDS
    size: tuple[int, int]  # (width, height) as stored, before orientation
    orientation: int  # EXIF orientation 1..8; 1 when absent or invalid


def file_sha256(path: Path, root: Path | None = None) -> str:
    """Hex sha256 of the regular file at `path` (the one safe open; no FIFO, device or link out of `root`).

    Raises
    ------
    OSError
        `pipeline.fsutil.UnsafeFile` (an OSError) if the file cannot be opened
        safely or read.
    """
    return sha256_regular(path, root=root)


def is_candidate(path: Path, config: IntakeConfig) -> bool:
    """Whether the name of `path` ends in one of `config.extensions`.

    Case-insensitive; looks at the name only (no I/O). The content, not the
    extension, decides how `read_photo` decodes the file.
    """
    suffix = Path(path).suffix.lower()
    return bool(suffix) and suffix in _normalised_extensions(tuple(config.extensions))


@functools.lru_cache(maxsize=8)
def _normalised_extensions(extensions: tuple[str, ...]) -> frozenset[str]:
    return frozenset("." + ext.lower().lstrip(".") for ext in extensions)


def choose_reduction(size: tuple[int, int], work_side: int) -> int:
    """The largest JPEG reduction that keeps the shorter side >= `work_side`.

    Parameters
    ----------
    size : (width, height) of the stored image, in px
    work_side : int
        Smallest acceptable shorter side after reduction, in px.

    Returns
    -------
    int
        8, 4, 2 or 1. libjpeg rounds reduced sizes up, hence the ceiling.
    """
    short = min(size)
    for factor in REDUCTIONS:
        if -(-short // factor) >= work_side:
            return factor
    return 1


def read_photo(path: Path, config: IntakeConfig, root: Path | None = None) -> Photo:
    """Read, check and decode one photo file.

    Parameters
    ----------
    path : Path
        The file. Relative paths are relative to the working directory.
    config : IntakeConfig
        Limits (`max_file_mb`, `max_megapixels`) and `work_side`.
    root : Path, optional
        If given, `path` must resolve (symlinks followed) to a file inside it.
        Without it links are still followed, but only to a regular file: a
        FIFO, a device or a directory is refused before it is opened.

    Returns
    -------
    Photo
        `pixels` is (H, W, 3) uint8 RGB, upright.

    Raises
    ------
    IntakeError
        For any file that cannot be taken; `code` says why. Nothing else is
        raised for a bad file.
    """
    path = Path(path)
    data = _read_bytes(path, config, root)
    digest = hashlib.sha256(data).hexdigest()
    try:
        header = _read_header(path, data, config)
        pixels, reduction = _decode(path, data, header, config.work_side)
    except IntakeError as err:
        raise IntakeError(err.code, err.reason, sha256=digest) from None
    width, height = header.size
    original = (height, width) if header.orientation >= 5 else (width, height)
    return Photo(path=path, sha256=digest, pixels=pixels, original_size=original, reduction=reduction)


# --- reading the bytes -------------------------------------------------------

_UNSAFE_CODES = {
    "missing": "missing",
    "not_a_file": "not_a_file",
    "outside_root": "outside_root",
    "too_large": "too_large_file",
    "unreadable": "unreadable",
}


def _read_bytes(path: Path, config: IntakeConfig, root: Path | None) -> bytes:
    """The whole file, through the one safe open (`pipeline.fsutil.open_regular`)."""
    limit = int(config.max_file_mb * BYTES_PER_MB)
    try:
        data = read_regular(path, limit, root)
    except UnsafeFile as err:
        if err.kind == "too_large":
            size = f"{err.size / BYTES_PER_MB:.1f} MB" if err.size is not None else "larger than that"
            raise IntakeError(
                "too_large_file",
                f"{path}: file is {size}, above the limit of {config.max_file_mb:g} MB (intake.max_file_mb)",
            ) from None
        raise IntakeError(_UNSAFE_CODES[err.kind], str(err)) from None
    # Decided on the bytes read, not on st_size: some files report 0 and are not.
    if not data:
        raise IntakeError("empty", f"{path}: file is empty (0 bytes)")
    return data


# --- header and structure ----------------------------------------------------


def _read_header(path: Path, data: bytes, config: IntakeConfig) -> _Header:
    """Format, stored size and orientation from the header; no pixels decoded.

    Also refuses images above the pixel limit and files whose image data is
    cut short.
    """
    try:
        # Our limit decides, whatever Pillow's global one is. (catch_warnings is
        # not thread-safe before Python 3.14; the worst a race can do is leave
        # this one warning ignored for good.)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        raise IntakeError(
            "too_many_pixels",
            f"{path}: image header claims more than {limit:.0f} megapixels; "
            f"the limit is {config.max_megapixels:g} MP (intake.max_megapixels)",
        ) from None
    except Exception:  # Pillow's plugins raise many types on a malformed header
        raise _unidentified(path, data) from None
    with image:
        kind = _KINDS.get(image.format or "")
        if kind is None:
            raise IntakeError("unsupported_type", f"{path}: {image.format} images are not supported (accepted: {_ACCEPTED})")
        width, height = _stored_size(kind, image)
        _check_pixels(path, width, height, config.max_megapixels)
        orientation = _orientation(image)
        end = _END_OF_IMAGE[kind](data, image)
    if end is None or end > len(data):
        raise IntakeError("truncated", f"{path}: truncated {kind}: the file ends before the image data does")
    return _Header(kind=kind, size=(width, height), orientation=orientation)


def _stored_size(kind: str, image: Image.Image) -> tuple[int, int]:
    """(width, height) as stored, before orientation.

    Pillow reports a TIFF's size already turned for orientations 5-8; the
    ImageWidth and ImageLength tags give it as stored.
    """
    if kind == "TIFF":
        tags = image.tag_v2  # type: ignore[attr-defined]
        if 256 in tags and 257 in tags:
            return int(tags[256]), int(tags[257])
    return image.size


def _unidentified(path: Path, data: bytes) -> IntakeError:
    """The error for bytes Pillow cannot open: cut short, HEIF, or not an image."""
    kind = _sniff(data)
    if kind is not None:
        end = _END_OF_IMAGE[kind](data, None)
        if end is None or end > len(data):
            return IntakeError("truncated", f"{path}: truncated {kind}: the file ends inside its header")
        return IntakeError("not_an_image", f"{path}: damaged {kind} header")
    if data[4:8] == b"ftyp":
        # HEIC is what iPhones shoot by default; say so rather than "not an image".
        brand = data[8:12].decode("ascii", "replace")
        return IntakeError(
            "unsupported_type", f"{path}: HEIF/HEIC or MP4 container (brand '{brand}') is not supported; export as JPEG"
        )
    return IntakeError("not_an_image", f"{path}: not a recognised image (accepted: {_ACCEPTED})")


def _sniff(data: bytes) -> str | None:
    """The kind announced by the file signature, for formats we can walk without Pillow."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def _check_pixels(path: Path, width: int, height: int, limit_mp: float) -> None:
    if width <= 0 or height <= 0:
        raise IntakeError("not_an_image", f"{path}: header gives an empty image ({width}x{height})")
    if width * height > limit_mp * 1e6:
        raise IntakeError(
            "too_many_pixels",
            f"{path}: image is {width}x{height} ({width * height / 1e6:.1f} megapixels), "
            f"above the limit of {limit_mp:g} MP (intake.max_megapixels)",
        )


def _orientation(image: Image.Image) -> int:
    """EXIF orientation 1..8 (TIFF tag 274 for TIFF); 1 if absent or unusable."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a malformed EXIF block should not cost the photo
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# Each returns the offset just past the image data, or None if the structure
# runs off the end of `data`. The Pillow image is None when called on bytes
# Pillow could not open (JPEG, PNG and WebP need only the bytes).
_U16BE = struct.Struct(">H")
# Inside JPEG entropy-coded data 0xFF is followed by 0x00 (stuffing), 0xD0-0xD7
# (restart) or more 0xFF (fill); anything else is the next marker.
_JPEG_MARKER_IN_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _jpeg_end(data: bytes, image: Image.Image | None = None) -> int | None:
    """Offset just past the first EOI marker reached by walking the segments."""
    pos, n = 2, len(data)  # after SOI
    while True:
        pos = data.find(b"\xff", pos)
        while 0 <= pos < n - 1 and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos < 0 or pos + 1 >= n:
            return None
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI
            return pos + 2
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if pos + 4 > n:
            return None
        length = _U16BE.unpack_from(data, pos + 2)[0]
        if length < 2:
            return None
        pos += 2 + length
        if marker == 0xDA:  # SOS: entropy-coded data follows the header
            found = _JPEG_MARKER_IN_SCAN.search(data, pos)
            if found is None:
                return None
            pos = found.start()


def _png_end(data: bytes, image: Image.Image | None = None) -> int | None:
    """Offset just past the IEND chunk, walking chunk lengths (CRCs unchecked)."""
    pos, n = 8, len(data)
    while pos + 8 <= n:
        length, chunk_type = struct.unpack_from(">I4s", data, pos)
        pos += 12 + length  # length, type, payload, CRC
        if chunk_type == b"IEND":
            return pos
    return None


def _webp_end(data: bytes, image: Image.Image | None = None) -> int | None:
    """Offset just past the RIFF container, from its declared size."""
    if len(data) < 12:
        return None
    return 8 + struct.unpack_from("<I", data, 4)[0]


def _bmp_end(data: bytes, image: Image.Image | None = None) -> int | None:
    """Offset just past the pixel array, from the BMP and DIB headers."""
    try:
        file_size, offset, dib_size = struct.unpack_from("<I4xII", data, 2)
        if dib_size == 12:  # OS/2 BITMAPCOREHEADER
            width, height, _, bits = struct.unpack_from("<HHHH", data, 18)
            compression = 0
        else:
            width, height, _, bits, compression = struct.unpack_from("<iiHHI", data, 18)
    except struct.error:
        return None
    if compression in (0, 3, 6):  # uncompressed: rows padded to 4 bytes
        return offset + (bits * abs(width) + 31) // 32 * 4 * abs(height)
    return file_size or len(data)  # RLE and embedded formats: trust the header if set


def _tiff_end(data: bytes, image: Image.Image | None = None) -> int | None:
    """Offset just past the last strip or tile of the first image."""
    if image is None:
        return None
    tags = image.tag_v2  # type: ignore[attr-defined]
    offsets = tags.get(273) or tags.get(324)  # StripOffsets / TileOffsets
    counts = tags.get(279) or tags.get(325)  # StripByteCounts / TileByteCounts
    if not offsets or not counts:
        return len(data)  # nothing to check against; the decoder will judge
    # A single strip may come back as a bare int rather than a tuple.
    offsets = offsets if isinstance(offsets, tuple) else (offsets,)
    counts = counts if isinstance(counts, tuple) else (counts,)
    return max(int(off) + int(cnt) for off, cnt in zip(offsets, counts))


_END_OF_IMAGE: dict[str, Callable[[bytes, Image.Image | None], int | None]] = {
    "JPEG": _jpeg_end,
    "PNG": _png_end,
    "WebP": _webp_end,
    "BMP": _bmp_end,
    "TIFF": _tiff_end,
}


# --- decoding ------------------------------------------------------------------


def _decode(path: Path, data: bytes, header: _Header, work_side: int) -> tuple[np.ndarray, int]:
    """(H, W, 3) uint8 RGB upright pixels, and the reduction used."""
    if header.kind == "JPEG":
        reduction = choose_reduction(header.size, work_side)
        flags = _REDUCED_FLAGS[reduction] | cv2.IMREAD_IGNORE_ORIENTATION
    else:
        # UNCHANGED keeps alpha and 16-bit samples; OpenCV orients nothing with it.
        reduction, flags = 1, cv2.IMREAD_UNCHANGED
    try:
        with _quiet_opencv():
            decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error:
        decoded = None
    if decoded is None or decoded.size == 0:
        raise IntakeError("not_an_image", f"{path}: {header.kind} pixel data could not be decoded (damaged file)")
    rgb = _to_rgb8(path, decoded)
    # OpenCV's TIFF decoder applies tag 274 itself, whatever the flags.
    orientation = 1 if header.kind == "TIFF" else header.orientation
    return np.ascontiguousarray(orient(rgb, orientation)), reduction


def _to_rgb8(path: Path, decoded: np.ndarray) -> np.ndarray:
    """OpenCV's decoded array (grey, BGR or BGRA; 8 or 16 bit) as uint8 RGB."""
    if decoded.dtype == np.uint16:
        # Rounds v * 255 / 65535 to nearest, so 65535 -> 255 and mid-range
        # values are not biased down as a shift by 8 would.
        decoded = cv2.convertScaleAbs(decoded, alpha=255.0 / 65535.0)
    elif decoded.dtype != np.uint8:
        raise IntakeError("unsupported_type", f"{path}: {decoded.dtype} samples are not supported (8 or 16 bit only)")
    if decoded.ndim == 3 and decoded.shape[2] == 1:
        decoded = decoded[..., 0]
    if decoded.ndim == 2:
        return cv2.cvtColor(decoded, cv2.COLOR_GRAY2RGB)
    channels = decoded.shape[2]
    if channels == 2:  # grey + alpha
        return cv2.cvtColor(composite_alpha(decoded[..., 0], decoded[..., 1]), cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(composite_alpha(decoded[..., :3], decoded[..., 3]), cv2.COLOR_BGR2RGB)
    raise IntakeError("unsupported_type", f"{path}: images with {channels} channels are not supported")


def composite_alpha(colour: np.ndarray, alpha: np.ndarray, background: int = ALPHA_BACKGROUND) -> np.ndarray:
    """`colour` composited over a flat grey `background`, weighted by `alpha`.

    Parameters
    ----------
    colour : ndarray, shape (H, W) or (H, W, C), dtype uint8
    alpha : ndarray, shape (H, W), dtype uint8; 255 is opaque
    background : int, grey level 0..255

    Returns
    -------
    ndarray, same shape as `colour`, dtype uint8, rounded to nearest
    """
    a = alpha.astype(np.uint16)
    if colour.ndim == 3:
        a = a[..., None]
    # Largest value is 255 * 255 + 127, so uint16 does not overflow.
    mixed = (colour.astype(np.uint16) * a + np.uint16(background) * (255 - a) + 127) // 255
    return mixed.astype(np.uint8)


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation `orientation` (1..8) to (H, W[, C]) pixels.

    Returns a view where possible (no copy). Orientation 6 is "rotate 90
    degrees clockwise to display", 8 is 90 counter-clockwise; 5 and 7 are the
    transposes. Values outside 1..8 leave the pixels as they are.
    """
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return np.swapaxes(pixels, 0, 1)
    if orientation == 6:
        return np.rot90(pixels, k=-1)
    if orientation == 7:
        return np.swapaxes(pixels, 0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(pixels, k=1)
    return pixels


class _QuietOpenCV:
    """OpenCV's log silenced while any thread decodes, restored after the last.

    The log level is process-wide, so a plain save/set/restore around each
    call could leave it silenced forever when two threads interleave.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved = 0

    @contextmanager
    def __call__(self) -> Iterator[None]:
        logging = cv2.utils.logging
        with self._lock:
            if self._users == 0:
                self._saved = logging.getLogLevel()
                logging.setLogLevel(logging.LOG_LEVEL_SILENT)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    logging.setLogLevel(self._saved)


_quiet_opencv = _QuietOpenCV()
