"""A corpus of bad and odd drop-folder files (issue 11): contents, names, links, specials.

`build_corpus(staging)` writes the regular-file contents once into `staging`;
`drop(case, folder)` then places one case into a drop folder the way it is
meant to arrive (a link, a FIFO, a slow writer, a file deleted right after).
Every case says what the daemon must do with it (`expect`):

- "good": a photo that is taken (registered / answered);
- "refused": moved to `inbox/failed/` with an error file (a query also gets a
  `rejected` result);
- "left": not a candidate (a directory, a `.gif`): left where it is;
- "gone": deleted right after the drop: nothing to answer, nothing to keep.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from imagefiles import rgb_photo, resized, write_image, write_png16, write_png_claiming

GOOD_LABEL = "goodcake"


@dataclass(frozen=True)
class Case:
    """One kind of file. `name` is bytes: names are data, any bytes the filesystem allows."""

    name: bytes
    kind: str  # how it arrives: file, symlink, fifo, dir, socket, slow, deleted
    expect: str  # good, refused, left, gone
    content: bytes = b""
    target: str = ""  # for symlinks: where the link points (may contain {outside}, {self})
    why: str = field(default="", compare=False)

    @property
    def text(self) -> str:
        return os.fsdecode(self.name)


def _jpeg(pixels: np.ndarray, quality: int = 90, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality, **options)
    return buf.getvalue()


def _encode(pixels: np.ndarray, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **options)
    return buf.getvalue()


def _png_chunks(ihdr: bytes, idat: bytes) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def photo(seed: int = 0, side: int = 200) -> np.ndarray:
    """A distinct real photo crop (scikit-image samples), RGB uint8."""
    names = ["astronaut", "coffee", "chelsea", "rocket"]
    src = rgb_photo(names[seed % len(names)])
    h, w = src.shape[:2]
    y, x = (seed * 37) % (h - side), (seed * 53) % (w - side)
    return np.ascontiguousarray(src[y : y + side, x : x + side])


def build_cases(tmp: Path) -> list[Case]:
    """Every case of issue 11 (and then some): at least 60 kinds."""
    tmp.mkdir(parents=True, exist_ok=True)
    good = _jpeg(photo(0))
    png = _encode(photo(1), "PNG")
    webp = _encode(photo(2), "WEBP", quality=80)
    cases: list[Case] = []

    def add(name: str | bytes, expect: str, content: bytes = b"", kind: str = "file", target: str = "", why: str = "") -> None:
        raw = name if isinstance(name, bytes) else os.fsencode(name)
        cases.append(Case(raw, kind, expect, content, target, why))

    # --- odd but valid photos
    add(f"{GOOD_LABEL}-front.jpg", "good", good, why="plain JPEG")
    add("png8-ok.png", "good", png, why="8-bit PNG")
    add("webp-ok.webp", "good", webp, why="WebP")
    add("bmp-ok.bmp", "good", _encode(photo(3), "BMP"), why="BMP")
    add("tiff-ok.tif", "good", _encode(photo(4), "TIFF"), why="TIFF")
    cmyk = Image.fromarray(photo(5)).convert("CMYK")
    buf = io.BytesIO(); cmyk.save(buf, "JPEG"); add("cmyk-jpeg.jpg", "good", buf.getvalue(), why="CMYK JPEG")
    write_png16(tmp / "p16.png", (photo(6).astype(np.uint16) * 257))
    add("png16-bit.png", "good", (tmp / "p16.png").read_bytes(), why="16-bit PNG")
    la = np.dstack([photo(7)[..., 0], np.full((200, 200), 200, np.uint8)])
    add("grey-alpha.png", "good", _encode(la, "PNG"), why="grey+alpha PNG")
    add("tiny-1x1.png", "good", _encode(np.zeros((1, 1, 3), np.uint8), "PNG"), why="1x1 image")
    add("wide-20000x20.png", "good", _encode(resized(photo(8), 20000, 20), "PNG"), why="20000x20 image")
    add("progressive.jpg", "good", _jpeg(photo(9), progressive=True), why="progressive JPEG")
    add("grey-jpeg.jpg", "good", _jpeg(photo(10)[..., 0]), why="grey JPEG")
    exif_broken = good[:2] + b"\xff\xe1" + struct.pack(">H", 40) + b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + b"\x00" * 20 + good[2:]
    add("broken-exif.jpg", "good", exif_broken, why="broken EXIF block")
    add("garbage-10mb.jpg", "good", _jpeg(photo(11)) + os.urandom(10_000_000), why="10 MB appended after EOI")
    add("jpeg-named.png", "good", _jpeg(photo(12)), why="JPEG content, .png name")
    add("UPPER-CASE.JPG", "good", _jpeg(photo(13)), why="upper-case extension")
    # --- odd names (a good photo each)
    add("普洱茶饼-老班章.jpg", "good", _jpeg(photo(14)), why="Chinese name")
    add("with  spaces .jpg", "good", _jpeg(photo(15)), why="spaces")
    add("new\nline.jpg", "good", _jpeg(photo(16)), why="newline in name")
    add("-leading-dash.jpg", "good", _jpeg(photo(17)), why="leading dash")
    add("--rf.jpg", "good", _jpeg(photo(18)), why="option-like name")
    add("ctl\x01\x1b[31m.jpg", "good", _jpeg(photo(19)), why="control characters")
    add("tab\there.jpg", "good", _jpeg(photo(20)), why="tab")
    add("quote'\"%$;`.jpg", "good", _jpeg(photo(21)), why="shell metacharacters")
    add("back\\slash.jpg", "good", _jpeg(photo(22)), why="backslash")
    add("a" * 211 + ".jpg", "good", _jpeg(photo(23)), why="215-byte name")
    add("b" * 251 + ".jpg", "good", _jpeg(photo(24)), why="255-byte name")
    add("茶" * 83 + ".jpg", "good", _jpeg(photo(25)), why="253-byte multibyte name")
    add(b"bad-\xff\xfe-name.jpg", "good", _jpeg(photo(26)), why="non-UTF-8 name")
    add(b"\xc3(\x80" * 60 + b".jpg", "good", _jpeg(photo(27)), why="184 bytes of invalid UTF-8")
    add("e\u0301-nfd.jpg", "good", _jpeg(photo(28)), why="NFD name")
    add("emoji-🍵.jpg", "good", _jpeg(photo(29)), why="emoji (4-byte UTF-8)")
    # --- bad contents
    add("zero-byte.jpg", "refused", b"", why="empty")
    add("text.jpg", "refused", b"just some text, not an image\n" * 10, why="text with .jpg")
    add("page.png", "refused", b"<!DOCTYPE html><html><body>not found</body></html>", why="HTML with .png")
    add("random.jpg", "refused", os.urandom(5000), why="random bytes")
    for cut in (3, 20, 200, len(good) // 2, len(good) - 2):
        add(f"trunc-jpeg-{cut}.jpg", "refused", good[:cut], why=f"JPEG cut at {cut}")
    for cut in (8, 30, len(png) // 2, len(png) - 12):
        add(f"trunc-png-{cut}.png", "refused", png[:cut], why=f"PNG cut at {cut}")
    for cut in (12, 30, len(webp) // 2):
        add(f"trunc-webp-{cut}.webp", "refused", webp[:cut], why=f"WebP cut at {cut}")
    write_png_claiming(tmp / "bomb.png", 60000, 60000)
    add("bomb-60000.png", "refused", (tmp / "bomb.png").read_bytes(), why="60000x60000 PNG header")
    add("png-garbage.png", "refused", b"\x89PNG\r\n\x1a\n" + os.urandom(400), why="PNG signature + garbage")
    add("soi-only.jpg", "refused", b"\xff\xd8\xff", why="JPEG SOI only")
    add("heic.jpg", "refused", b"\x00\x00\x00\x18ftypheic" + b"\x00" * 100, why="HEIF container")
    add("gzip.png", "refused", zlib.compress(b"x" * 1000), why="zlib data")
    add("elf.bmp", "refused", b"\x7fELF\x02\x01\x01" + b"\x00" * 200, why="an executable")
    frames = [Image.fromarray(photo(30 + i)) for i in range(3)]
    buf = io.BytesIO(); frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    add("animated-gif.png", "refused", buf.getvalue(), why="animated GIF named .png")
    add("animated.gif", "left", buf.getvalue(), why="GIF: not a taken extension")
    add("zero-dims.png", "refused", _png_chunks(struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0), zlib.compress(b"")), why="0x0 PNG")
    add("bad-idat.png", "refused", _png_chunks(struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0), b"notzlib" * 10), why="PNG with corrupt IDAT")
    # --- links and special files
    add("link-passwd.jpg", "refused", kind="symlink", target="/etc/passwd", why="link outside the root")
    add("link-devzero.jpg", "refused", kind="symlink", target="/dev/zero", why="link to /dev/zero")
    add("link-urandom.jpg", "refused", kind="symlink", target="/dev/urandom", why="link to /dev/urandom")
    add("link-devnull.jpg", "refused", kind="symlink", target="/dev/null", why="link to /dev/null")
    add("link-outfifo.jpg", "refused", kind="symlink", target="{outside}/fifo", why="link to a FIFO outside the root")
    add("link-outjpeg.jpg", "refused", kind="symlink", target="{outside}/photo.jpg", why="link to a photo outside the root")
    add("link-outdir.jpg", "refused", kind="symlink", target="{outside}", why="link to a directory outside")
    add("link-loop.jpg", "refused", kind="symlink", target="{self}", why="link to itself")
    add("dangling.jpg", "refused", kind="symlink", target="/nonexistent/teaprint/none.jpg", why="dangling link, same name in both folders")
    add("link-inside.jpg", "good", kind="symlink", target="{inside}", why="link to a photo inside the folder")
    add("fifo.jpg", "refused", kind="fifo", why="a FIFO")
    add("socket.jpg", "refused", kind="socket", why="a unix socket")
    add("folder.jpg", "left", kind="dir", why="a directory named like a photo")
    add("slow-writer.jpg", "good", _jpeg(photo(33)), kind="slow", why="still being written slowly")
    add("deleted-at-once.jpg", "gone", _jpeg(photo(34)), kind="deleted", why="deleted right after the drop")
    return cases


def prepare_outside(outside: Path) -> None:
    """What the outside links point at: a FIFO and a photo outside the root."""
    outside.mkdir(parents=True, exist_ok=True)
    if not (outside / "fifo").exists():
        os.mkfifo(outside / "fifo")
    (outside / "photo.jpg").write_bytes(_jpeg(photo(40)))


def drop(case: Case, folder: Path, outside: Path, inside_target: Path, sockets: list[socket.socket]) -> threading.Thread | None:
    """Place `case` into `folder`; returns a writer thread for "slow"."""
    dest = Path(os.fsdecode(os.path.join(os.fsencode(folder), case.name)))
    if case.kind == "file":
        tmp = dest.with_name(f".drop-{hashlib.sha256(case.name).hexdigest()[:16]}.part")
        tmp.write_bytes(case.content)
        os.rename(tmp, dest)  # complete at once (moved_to)
    elif case.kind == "symlink":
        target = case.target.replace("{outside}", str(outside)).replace("{self}", str(dest)).replace("{inside}", str(inside_target))
        os.symlink(target, dest)
    elif case.kind == "fifo":
        os.mkfifo(dest)
    elif case.kind == "socket":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(dest))
        sockets.append(sock)
    elif case.kind == "dir":
        dest.mkdir()
    elif case.kind == "slow":
        fh = open(dest, "wb")  # created now, so the caller can see it at once

        def run() -> None:
            data = case.content
            with fh:
                for i in range(0, len(data), max(1, len(data) // 8)):
                    fh.write(data[i : i + max(1, len(data) // 8)])
                    fh.flush()
                    time.sleep(0.3)

        thread = threading.Thread(target=run)
        thread.start()
        return thread
    elif case.kind == "deleted":
        dest.write_bytes(case.content)
        dest.unlink()
    return None


CaseFilter = Callable[[Case], bool]
