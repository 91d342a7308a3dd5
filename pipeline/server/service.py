"""What the HTTP server does, without HTTP: register, match, list, delete.

Storage of uploads (no path is ever built from a client-supplied name):

* A registered photo is stored under the catalog folder, which IS the catalog
  (the daemon reconciles the index with it), as
  ``inbox/catalog/<label>/<sha256[:16]><ext>``: the label is validated
  (`check_label`), the name is the content hash and the extension comes from
  the detected format, not from the upload. The file is placed first (a hard
  link from the private upload file, so it appears complete at once), then the
  entry is committed under the catalog's writer lock, so the API answers
  synchronously and a running daemon's reconcile finds the path already
  indexed (placing it after the commit would let a reconcile in between remove
  the entry again).
* DELETE moves the photo to ``<state>/deleted/`` (with a JSON note beside it),
  then commits the removal: nothing is ever deleted, and the order means a
  daemon cannot re-register the file in between.
* A query photo is spooled to a private temp file (`mkstemp`, mode 0600) under
  ``<state>/uploads/``, matched, and removed.

Thread-safety: requests run in parallel, up to uvicorn's thread pool, and
the service holds no catalog object or lock of its own. Everything goes
through `Engine`: reads (match, list, get, status) take one immutable catalog
snapshot, and writes (register, delete) go through the catalog's one writer,
whose commits never stall a reader. Decoding and LBP (`Engine.prepare`) need
no shared state and the encoder is thread-safe (one LiteRT interpreter per
thread). At most one match per core runs at once (`match_slots`): more would
only share the cores and hold more decoded photos in memory; the rest wait
their turn.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import tempfile
import threading
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, BinaryIO

import cv2
import numpy as np
from PIL import Image

from pipeline.catalog import CatalogEntry, NewEntry, label_from_path
from pipeline.config import Config
from pipeline.engine import Engine
from pipeline.fsutil import fsync_path, is_inside, open_regular
from pipeline.intake import BYTES_PER_MB, IntakeError, file_sha256, read_photo
from pipeline.prepare import Prepared
from pipeline.history import Filters, HistoryError, HistoryPage
from pipeline.records import MAX_LABEL_CHARS, RecordError, label_problem
from pipeline.results import MatchResult, rejected

MAX_NAME_CHARS = 120
_EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
_ID = re.compile(r"^[0-9a-f]{16}$")
_COPY_CHUNK = 1 << 20


class ServiceError(Exception):
    """A refusal with an HTTP status, a short code and a one-line message."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = " ".join(str(message).splitlines())
        self.extra = extra


# Intake refusal code -> HTTP status. Every bad file is a 4xx, never a 500.
INTAKE_STATUS = {
    "too_large_file": 413,
    "too_many_pixels": 413,
    "not_an_image": 415,
    "unsupported_type": 415,
    "empty": 422,
    "truncated": 422,
    "unreadable": 422,
    "missing": 422,
    "outside_root": 422,
    "not_a_file": 422,
}


def display_name(filename: str | None, fallback: str = "upload") -> str:
    """A client file name fit to show and log, never used as a path.

    The last component under either separator convention, control characters
    removed, NFC, at most `MAX_NAME_CHARS`.
    """
    name = PureWindowsPath(PurePosixPath(filename or "").name).name
    name = "".join(ch for ch in unicodedata.normalize("NFC", name) if unicodedata.category(ch)[0] != "C").strip()
    if name in ("", ".", ".."):
        return fallback
    return name[:MAX_NAME_CHARS]


def check_label(label: str) -> str:
    """The label, NFC-normalised and stripped, or `ServiceError` 400 saying why.

    A label becomes a folder name under the catalog folder (and names its
    record), so it must be one plain path component (`label_problem`): no
    separators, no leading dot (the daemon ignores dotfiles), no control
    characters, at most 64 characters.
    """
    value = unicodedata.normalize("NFC", str(label)).strip()
    problem = label_problem(value)
    if problem:
        raise ServiceError(400, "bad_label", f"label {value[:MAX_LABEL_CHARS]!r} {problem}")
    return value


@dataclass
class Upload:
    """One received file: a readable binary stream and the client's name for it."""

    stream: BinaryIO
    filename: str | None


@dataclass
class RegisterReport:
    added: list[CatalogEntry] = field(default_factory=list)
    duplicates: list[CatalogEntry] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    catalog_size: int = 0


class TeaprintService:
    """One engine and one catalog root, safe to call from many threads."""

    def __init__(self, config: Config, root: Path, engine: Engine) -> None:
        self.config = config
        self.root = Path(root).resolve()
        self.engine = engine
        self.catalog_dir = self.root / config.paths.inbox_catalog
        self.state = self.root / config.paths.state
        self.uploads = self.state / "uploads"
        self.deleted = self.state / "deleted"
        for folder in (self.catalog_dir, self.uploads, self.deleted):
            folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.uploads, 0o700)
        self.match_slots = threading.BoundedSemaphore(os.cpu_count() or 1)
        self._thumbnail = functools.lru_cache(maxsize=256)(self._render_thumbnail)
        umask = os.umask(0)
        os.umask(umask)
        self.file_mode = 0o644 & ~umask
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.counts = {"matches": 0, "registered": 0, "duplicates": 0, "deleted": 0, "refused": 0}
        self._counts_lock = threading.Lock()  # guards the request counters above, nothing else

    @classmethod
    def load(cls, config: Config, root: Path) -> "TeaprintService":
        return cls(config, root, Engine.load(config, Path(root), component="server"))

    def warm_up(self) -> None:
        """Run the model once now, and load the matcher's classifier library in the background, not on the first request.

        The library (scikit-learn, ~0.8-1.5 s to import) loads on a thread,
        as the daemon does after `ready`: the server starts serving at once,
        and a request that comes first waits for the same import.
        """
        self.engine.warm_up()
        threading.Thread(target=self.engine.warm_up_matcher, name="warm-up", daemon=True).start()

    def count(self, key: str, n: int = 1) -> None:
        with self._counts_lock:
            self.counts[key] += n

    # ------------------------------------------------------------ uploads
    def spool(self, upload: Upload) -> Path:
        """Copy an upload to a private temp file with a server-chosen name.

        Refuses (413) beyond `intake.max_file_mb` while copying.
        """
        limit = int(self.config.intake.max_file_mb * BYTES_PER_MB)
        fd, name = tempfile.mkstemp(prefix="up-", suffix=".bin", dir=self.uploads)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                total = 0
                while chunk := upload.stream.read(_COPY_CHUNK):
                    total += len(chunk)
                    if total > limit:
                        raise ServiceError(
                            413, "too_large_file",
                            f"{display_name(upload.filename)}: file is above the limit of "
                            f"{self.config.intake.max_file_mb:g} MB (intake.max_file_mb)",
                        )
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    def _prepare(self, tmp: Path, name: str, for_catalog: bool = False) -> Prepared:
        """`Engine.prepare` on a spooled file; errors name the client's file, not ours."""
        try:
            return self.engine.prepare(tmp, for_catalog=for_catalog)
        except IntakeError as err:
            raise IntakeError(err.code, str(err).replace(str(tmp), name)) from None

    # ------------------------------------------------------------ matching
    def match(self, upload: Upload) -> MatchResult:
        """Identify one uploaded photo; a bad file gives a `rejected` result."""
        name = display_name(upload.filename, "query")
        tmp = self.spool(upload)
        try:
            with self.match_slots:
                try:
                    prepared = self._prepare(tmp, name)
                except IntakeError as err:
                    self.count("refused")
                    result = rejected(name, str(err), err.code, sha256=_sha_or_none(tmp), model=self.engine.model_info)
                else:
                    result = self.engine.match_prepared(prepared, name)
                    self.count("matches")
            self.engine.answered(result, "http")
            return result
        finally:
            tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------ registering
    def register(self, uploads: list[Upload], label: str | None) -> RegisterReport:
        """Register photos: store each under the catalog folder, commit once.

        `label` applies to every photo; without it each photo's label comes
        from its file name (`menghai2019-front.jpg` -> `menghai2019`).
        """
        fixed = check_label(label) if label is not None and label.strip() else None
        report = RegisterReport()
        spooled: list[Path] = []
        ready: list[tuple[Prepared, str, str, Path]] = []  # (prepared, label, ext, tmp)
        try:
            for upload in uploads:
                name = display_name(upload.filename)
                try:
                    tmp = self.spool(upload)
                except ServiceError as err:
                    report.failed.append({"file": name, "error": err.code, "message": err.message})
                    continue
                spooled.append(tmp)
                try:
                    prepared = self._prepare(tmp, name, for_catalog=True)
                    entry_label = fixed or check_label(label_from_path(Path(name)))
                except IntakeError as err:
                    report.failed.append({"file": name, "error": err.code, "message": str(err)})
                    continue
                except ServiceError as err:
                    report.failed.append({"file": name, "error": err.code, "message": f"{name}: {err.message}"})
                    continue
                ready.append((prepared, entry_label, _extension(tmp), tmp))
            if ready:
                self._store(ready, report)
        finally:
            for tmp in spooled:
                tmp.unlink(missing_ok=True)
        self.count("refused", len(report.failed))
        self.count("registered", len(report.added))
        self.count("duplicates", len(report.duplicates))
        return report

    def _store(self, ready: list[tuple[Prepared, str, str, Path]], report: RegisterReport) -> None:
        """Register through the engine; each new photo's file is placed under the writer lock.

        The files are in place before the commit: a daemon's reconcile in
        between sees a file not yet indexed (and indexes it: a duplicate),
        never an entry without its file. Photos already registered are never placed.
        """
        entries = self.engine.describe([p for p, _, _, _ in ready], labels=[label for _, label, _, _ in ready])
        spooled = {p.sha256: (tmp, label, ext) for p, label, ext, tmp in ready}
        placed: list[Path] = []

        def place(entry: NewEntry) -> NewEntry:
            tmp, label, ext = spooled[entry.sha256]
            dest, new = self._place(tmp, label, entry.sha256, ext)
            if new:
                placed.append(dest)
            return replace(entry, path=str(dest))

        try:
            result = self.engine.register(entries, place=place)
        except BaseException:
            for dest in placed:  # our own copies; the client still has the photo
                dest.unlink(missing_ok=True)
            raise
        report.added.extend(result.added)
        report.duplicates.extend(result.duplicates)
        report.catalog_size = len(self.engine.snapshot())

    def _place(self, tmp: Path, label: str, sha: str, ext: str) -> tuple[Path, bool]:
        """Put the spooled file at `catalog/<label>/<sha16><ext>`; (path, newly created)."""
        folder = self.catalog_dir / label
        folder.mkdir(parents=True, exist_ok=True)
        if folder.resolve().parent != self.catalog_dir.resolve():  # defence in depth; check_label forbids this
            raise ServiceError(400, "bad_label", f"label {label!r} does not name a folder inside the catalog")
        os.chmod(tmp, self.file_mode)
        for n in range(100):
            dest = folder / (f"{sha[:16]}{ext}" if n == 0 else f"{sha[:16]}_{n}{ext}")
            try:
                os.link(tmp, dest)
            except FileExistsError:
                if _sha_or_none(dest) == sha:
                    return dest, False
                continue
            except OSError:  # no hard links here (another file system): copy, then rename in
                part = folder / f".{sha[:16]}.{os.getpid()}.{threading.get_ident()}.tmp"
                shutil.copyfile(tmp, part)
                if dest.exists():
                    part.unlink(missing_ok=True)
                    continue
                os.rename(part, dest)
            fsync_path(folder)
            return dest, True
        raise ServiceError(409, "name_clash", f"too many files named {sha[:16]}* under label {label!r}")

    # ------------------------------------------------------------ reading
    def list_entries(self, offset: int, limit: int, label: str | None = None) -> tuple[int, list[CatalogEntry]]:
        entries = self.engine.snapshot().entries
        if label is not None:
            wanted = unicodedata.normalize("NFC", label)
            entries = tuple(e for e in entries if e.label == wanted)
        return len(entries), list(entries[offset : offset + limit])

    def get(self, entry_id: str) -> CatalogEntry:
        found = self.engine.snapshot().find(_checked_id(entry_id))
        if not found:
            raise ServiceError(404, "not_found", f"no catalog entry {entry_id}")
        return found[0]

    def thumbnail(self, entry_id: str) -> bytes:
        """A JPEG of the entry's photo, longest side `http.thumbnail_px`.

        Served only while the file still holds the registered bytes (its
        sha256 is checked), so the index cannot be used to read other files.
        """
        entry = self.get(entry_id)
        return self._thumbnail(entry.path, entry.sha256, entry.id, self.config.http.thumbnail_px)

    def _render_thumbnail(self, path: str, sha256: str, entry_id: str, side: int) -> bytes:
        try:
            photo = read_photo(Path(path), self.config.intake)
        except IntakeError:
            photo = None
        if photo is None or photo.sha256 != sha256:
            raise ServiceError(404, "image_gone", f"the photo of entry {entry_id} is no longer at its registered path")
        return _jpeg_thumbnail(photo.pixels, side)

    # ------------------------------------------------------------ deleting
    def delete(self, entry_id: str) -> tuple[CatalogEntry, str | None]:
        """Remove an entry; its photo (if under the catalog folder) moves to `deleted/`.

        Returns the removed entry and the name it was moved to (None when the
        photo lay outside the catalog folder and was left where it was).
        """
        entry = self.get(entry_id)
        moved_to = None
        path = Path(entry.path)
        if is_inside(Path(os.path.realpath(path)), Path(os.path.realpath(self.catalog_dir))) and path.is_file():
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            target = self.deleted / f"{stamp}-{entry.id}{path.suffix.lower()}"
            # File first, then the index: a daemon reconcile in between sees an
            # entry whose file is gone and removes it too (idempotent).
            try:
                shutil.move(str(path), str(target))
            except FileNotFoundError:  # a concurrent DELETE of the same entry moved it first
                target = None
            if target is not None:
                note = {"id": entry.id, "sha256": entry.sha256, "label": entry.label, "path": entry.path,
                        "added_at": entry.added_at, "deleted_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
                target.with_name(target.name + ".json").write_text(json.dumps(note, ensure_ascii=False, indent=1), encoding="utf-8")
                moved_to = target.name
        self.engine.remove([entry])
        self.count("deleted")
        return entry, moved_to

    # ------------------------------------------------------------ records, history, metrics
    def record(self, label: str) -> dict[str, Any]:
        """The cake record of `label` (the `record` object of a result), or 404."""
        value = check_label(label)
        found = self.engine.record(value)
        if found is None:
            raise ServiceError(404, "no_record", f"no record for cake {value!r}: set one with PUT /records/{{label}} "
                                                 "or a sidecar beside its photos")
        return found

    def set_record(self, label: str, values: dict[str, Any]) -> dict[str, Any]:
        """Replace the record of `label` (its sidecar beside its photos), or 400 naming each refused field."""
        value = check_label(label)
        try:
            return self.engine.set_record(value, values)
        except RecordError as err:
            raise ServiceError(400, "bad_record", str(err), problems=[p.to_dict() for p in err.problems]) from None

    def history(self, filters: Filters, offset: int, limit: int) -> HistoryPage:
        """A page of the history of checks, or 503 when the database cannot be read now."""
        try:
            return self.engine.history_page(filters, offset, limit)
        except HistoryError as err:
            raise ServiceError(503, "history_unavailable", str(err)) from None

    def metrics(self) -> str:
        """The Prometheus exposition: this server's metrics and the daemon's on the same root."""
        return self.engine.metrics_text()

    # ------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """`Engine.status` with this server's own section."""
        with self._counts_lock:
            counts = dict(self.counts)
        return self.engine.status(server={"pid": os.getpid(), "started_at": self.started_at, "counts": counts})


def _checked_id(entry_id: str) -> str:
    """`entry_id` when it is an entry id (16 lowercase hex digits), else `ServiceError` 400."""
    if not _ID.match(entry_id or ""):
        raise ServiceError(400, "bad_id", "an entry id is 16 lowercase hex digits (the start of its sha256)")
    return entry_id


def _extension(path: Path) -> str:
    """The extension of the detected format (the upload's name plays no part)."""
    try:
        with open_regular(path) as fh, Image.open(fh) as image:  # the one safe open, as for every read
            return _EXTENSIONS.get(image.format or "", ".img")
    except Exception:
        return ".img"


def _jpeg_thumbnail(rgb: np.ndarray, side: int) -> bytes:
    h, w = rgb.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 82])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB
        raise ServiceError(500, "thumbnail_failed", "could not encode the thumbnail")
    return buf.tobytes()


def _sha_or_none(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


def iso_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


__all__ = ["TeaprintService", "ServiceError", "Upload", "RegisterReport", "check_label", "display_name", "INTAKE_STATUS", "iso_time"]
