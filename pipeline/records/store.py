"""The record store: a cake's record by label, read from the catalog folder and kept current.

Where a record comes from, lowest precedence first (later ones win field by
field, `extra` key by key):

1. a row of `<catalog>/cakes.csv` (the office's sheet of every cake);
2. `<catalog>/<label>.json` (a sidecar beside photos named `<label>-*.jpg`);
3. `<catalog>/<label>/<label>.json` (beside the photos in the label's folder;
   `set` writes here, so a record set through the API wins).

Each file is parsed once per change: a lookup stats the (at most three) files
and reuses the parse while (inode, size, mtime) hold, so records follow edits
without watcher events and the query path pays three `stat` calls.

A bad file is never fatal: its problems are logged once per version of the
file, listed by `scan` (status, doctor) and written as a note
`<failed>/<name>.error.json` that disappears when the file is fixed. Photos
never depend on records, so a bad sidecar cannot block a cake's photos.

Thread-safe: one lock around the parse cache.
"""

from __future__ import annotations

import os
import threading
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import structlog

from pipeline.fsutil import atomic_write_bytes, fit_name, sha256_regular
from pipeline.records.fields import CakeRecord, RecordProblem, merge, parse_fields
from pipeline.records.sources import CSV_NAME, MAX_CSV_BYTES, SheetRead, SidecarRead, read_sheet, read_sidecar, relative
from pipeline.results import dumps

log = structlog.get_logger("teaprint.records")

MAX_LABEL_CHARS = 64
NOTE_SUFFIX = ".error.json"


class RecordError(ValueError):
    """A record that cannot be set; `problems` says which fields and why."""

    def __init__(self, problems: list[RecordProblem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = tuple(problems)


@dataclass(frozen=True)
class RecordScan:
    """Every label that has a record, and every problem of every record file."""

    records: dict[str, CakeRecord]
    problems: tuple[RecordProblem, ...]


def label_problem(label: str) -> str | None:
    """Why `label` cannot name a folder and a sidecar under the catalog folder, or None.

    The same rule as the HTTP API's labels: one plain path component, no
    leading dot, no control characters, at most 64 characters (NFC).
    """
    if not label:
        return "is empty"
    if len(label) > MAX_LABEL_CHARS:
        return f"is longer than {MAX_LABEL_CHARS} characters"
    if "/" in label or "\\" in label:
        return "contains a path separator"
    if label.startswith("."):
        return "starts with a dot"
    if any(unicodedata.category(ch)[0] == "C" for ch in label):
        return "contains control characters"
    return None


class RecordStore:
    """Records of the cakes in `catalog_dir`; notes about bad files go to `failed_dir`."""

    def __init__(self, catalog_dir: Path, failed_dir: Path | None = None) -> None:
        self.catalog_dir = Path(catalog_dir).absolute()
        self.failed_dir = Path(failed_dir).absolute() if failed_dir is not None else None
        self._cache: dict[Path, tuple[tuple[int, int, int], SidecarRead | SheetRead]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ reading
    def get(self, label: str) -> CakeRecord | None:
        """The merged record of `label`, or None when no source mentions it."""
        label = unicodedata.normalize("NFC", str(label))
        if label_problem(label) is not None:
            return None
        layers: list[tuple[str, dict[str, Any]]] = []
        sheet = self._read(self.catalog_dir / CSV_NAME)
        if isinstance(sheet, SheetRead) and label in sheet.rows:
            line, fields = sheet.rows[label]
            layers.append((f"{CSV_NAME}:{line}", fields))
        for path in self.sidecar_paths(label):
            read = self._read(path, label)
            if isinstance(read, SidecarRead) and read.fields is not None:
                layers.append((relative(path, self.catalog_dir), read.fields))
        return merge(label, layers) if layers else None

    def scan(self) -> RecordScan:
        """All records and all problems (for status and doctor); reads only what changed."""
        labels: set[str] = set()
        problems: list[RecordProblem] = []
        sheet = self._read(self.catalog_dir / CSV_NAME)
        if sheet is not None:
            labels.update(sheet.rows)
            problems.extend(sheet.problems)
        for path, label in self._sidecars_on_disk():
            read = self._read(path, label)
            if read is not None:
                labels.add(label)
                problems.extend(read.problems)
        records = {label: record for label in sorted(labels) if (record := self.get(label)) is not None}
        return RecordScan(records, tuple(problems))

    def sidecar_paths(self, label: str) -> tuple[Path, Path]:
        """Where `label`'s JSON sidecars live, lower precedence first."""
        return self.catalog_dir / f"{label}.json", self.catalog_dir / label / f"{label}.json"

    # ------------------------------------------------------------ writing
    def set(self, label: str, values: Mapping[str, Any]) -> CakeRecord:
        """Replace `label`'s own sidecar (`<label>/<label>.json`) with `values`; the merged record.

        Raises
        ------
        RecordError
            For a label that cannot name a folder, or any field that cannot
            be taken (nothing is written then).
        """
        label = unicodedata.normalize("NFC", str(label)).strip()
        why = label_problem(label)
        if why is not None:
            raise RecordError([RecordProblem("api", "bad_label", f"label {label[:MAX_LABEL_CHARS]!r} {why}", label)])
        fields, problems = parse_fields(dict(values), "api", label)
        if problems:
            raise RecordError(problems)
        path = self.sidecar_paths(label)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (dumps(CakeRecord(label, **fields).fields(), indent=2) + "\n").encode("utf-8"))
        record = self.get(label)
        assert record is not None  # just written
        return record

    # ------------------------------------------------------------ cache
    def _read(self, path: Path, label: str | None = None) -> SidecarRead | SheetRead | None:
        """The parse of `path` (None when it does not exist), from the cache while the file is unchanged."""
        try:
            info = os.stat(path)
        except OSError:
            with self._lock:
                dropped = self._cache.pop(path, None)
            if dropped is not None:
                self._clear_note(path)
            return None
        signature = (info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(path)
        if cached is not None and cached[0] == signature:
            return cached[1]
        read = read_sheet(path, self.catalog_dir) if label is None else read_sidecar(path, self.catalog_dir, label)
        with self._lock:
            self._cache[path] = (signature, read)
        self._report(path, read.problems)
        return read

    def _sidecars_on_disk(self) -> list[tuple[Path, str]]:
        """(path, label) of every `<label>.json` and `<label>/<label>.json` in the catalog folder."""
        found: list[tuple[Path, str]] = []
        try:
            children = sorted(os.scandir(self.catalog_dir), key=lambda e: e.name)
        except OSError:
            return found
        for child in children:
            if child.name.startswith("."):
                continue
            if child.name.endswith(".json") and child.is_file():
                found.append((Path(child.path), unicodedata.normalize("NFC", child.name[:-5])))
            elif child.is_dir(follow_symlinks=False):
                inner = Path(child.path) / f"{child.name}.json"
                if inner.is_file():
                    found.append((inner, unicodedata.normalize("NFC", child.name)))
        return found

    # ------------------------------------------------------------ problems
    def note_path(self, path: Path) -> Path | None:
        """The `failed/` note of a record file: its path under the catalog, '/' as '__', plus `.error.json`."""
        if self.failed_dir is None:
            return None
        return self.failed_dir / fit_name(relative(path, self.catalog_dir).replace("/", "__"), NOTE_SUFFIX)

    def _report(self, path: Path, problems: tuple[RecordProblem, ...]) -> None:
        """Log a new version's problems and write (or clear) its note; never raises."""
        if not problems:
            self._clear_note(path)
            return
        for problem in problems:
            log.warning("record_problem", **problem.to_dict())
        note = self.note_path(path)
        if note is None:
            return
        body = {"file": relative(path, self.catalog_dir), "folder": "catalog", "code": "bad_record",
                "reason": problems[0].message, "problems": [p.to_dict() for p in problems],
                "sha256": _sha256(path, self.catalog_dir), "at": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
        try:
            note.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(note, dumps(body, indent=1).encode("utf-8"))
        except OSError as exc:
            log.error("record_note_failed", note=str(note), error=f"{type(exc).__name__}: {exc}")

    def _clear_note(self, path: Path) -> None:
        note = self.note_path(path)
        if note is not None:
            try:
                note.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("record_note_failed", note=str(note), error=f"{type(exc).__name__}: {exc}")


def _sha256(path: Path, catalog_dir: Path) -> str | None:
    try:
        return sha256_regular(path, max_bytes=MAX_CSV_BYTES, root=catalog_dir)
    except OSError:  # UnsafeFile included: a FIFO or a link out is named in the note, not read
        return None
