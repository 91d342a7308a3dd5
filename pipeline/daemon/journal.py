"""Exactly-once answers: an intent record brackets each query's side effects.

Answering a query has two side effects: the result JSON appears in the outbox,
then the photo leaves the inbox. A kill between them would, on restart, see
the photo again and answer it twice. So before writing the result we record
the intent (photo path, sha256, result file) durably; after moving the photo
we drop the record. On restart `recover` finishes or discards every record:

- result file present -> the answer was given; finish the move, drop the record;
- result file absent -> nothing was published; drop the record, and the photo,
  still in the inbox, is answered normally.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.results import write_json_atomic


@dataclass(frozen=True)
class Intent:
    photo: str
    sha256: str
    result: str
    destination: str
    error_file: str | None = None
    error_text: str | None = None


def unique_path(folder: Path, stem: str, suffix: str, taken: set[str] | None = None) -> Path:
    """`folder/stem+suffix`, or `stem-1`, `stem-2`... when taken, so nothing is overwritten."""
    taken = taken or set()
    candidate = folder / f"{stem}{suffix}"
    n = 0
    while candidate.exists() or candidate.name in taken:
        n += 1
        candidate = folder / f"{stem}-{n}{suffix}"
    return candidate


def move_aside(src: Path, dest: Path) -> Path:
    """Move `src` to `dest`, never overwriting; returns where it went.

    A hard link then unlinking the old name, where the filesystem allows:
    inotify then reports a plain delete in the watched folder. A rename out
    of a watched folder is an unpaired "moved from", which watchdog holds for
    0.5 s waiting for its pair, delaying every event behind it (measured:
    ~400 ms added to the next query). Falls back to rename, then to
    copy + fsync + unlink across filesystems.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and not _same_file(src, dest):
        dest = unique_path(dest.parent, dest.stem, dest.suffix)
    try:
        if not dest.exists():
            os.link(src, dest, follow_symlinks=False)
        os.unlink(src)
        return dest
    except OSError:
        pass
    try:
        os.rename(src, dest)
    except OSError:
        shutil.copy2(src, dest, follow_symlinks=False)
        with open(dest, "rb") as fh:
            os.fsync(fh.fileno())
        os.unlink(src)
    return dest


def _same_file(a: Path, b: Path) -> bool:
    """True when `a` and `b` are one file (a link made before a crash)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class Journal:
    """Intent records in `directory`, one small JSON file per query in flight."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def begin(self, intent: Intent) -> Path:
        record = self.directory / f"{intent.sha256[:16]}-{Path(intent.result).name}.intent"
        write_json_atomic(record, json.dumps(asdict(intent)))
        return record

    def finish(self, record: Path) -> None:
        record.unlink(missing_ok=True)

    def reserved(self) -> set[str]:
        """Result file names that in-flight records have claimed."""
        return {Path(i.result).name for _, i in self._records()}

    def recover(self) -> list[Intent]:
        """Complete or discard every record left by a crash; returns completed ones."""
        done = []
        for record, intent in self._records():
            if Path(intent.result).exists():
                _complete(intent)
                done.append(intent)
            record.unlink(missing_ok=True)
        return done

    def _records(self) -> list[tuple[Path, Intent]]:
        out = []
        for record in sorted(self.directory.glob("*.intent")):
            try:
                out.append((record, Intent(**json.loads(record.read_text(encoding="utf-8")))))
            except (OSError, ValueError, TypeError):
                record.unlink(missing_ok=True)  # a torn record predates any side effect
        return out


def _complete(intent: Intent) -> None:
    photo = Path(intent.photo)
    if intent.error_file and intent.error_text is not None and not Path(intent.error_file).exists():
        Path(intent.error_file).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(intent.error_file), intent.error_text)
    if photo.exists() or photo.is_symlink():
        move_aside(photo, Path(intent.destination))
