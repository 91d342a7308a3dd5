"""Exactly-once answers, and files that crash the daemon: the journal in `.teaprint/journal/`.

Answering a query has two side effects: the result JSON appears in the outbox,
then the photo leaves the inbox. A kill between them would, on restart, see
the photo again and answer it twice. So before writing the result we record
the intent (photo path, sha256, result file) durably; after moving the photo
we drop the record. On restart `recover` finishes or discards every record:

- result file present -> the answer was given; finish the move, drop the record;
- result file absent -> nothing was published; drop the record, and the photo,
  still in the inbox, is answered normally.

Before a file is handled at all an attempt record is written (`attempts/`),
and dropped once the file is answered or moved aside. A record still there at
start means the daemon died while handling that file (a crash in a decoder, an
out-of-memory kill); it counts the tries, and a file that took the daemon down
`MAX_CRASHES` times is moved aside before a further try, so one poison file
cannot keep a daemon in a crash loop.

Record names are derived from hashes, never from the file names they concern:
a name of any length or bytes gives a record name that fits and is distinct.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from pipeline.fsutil import fit_name, move_noreplace, remove_stale_temps
from pipeline.results import write_json_atomic

MAX_CRASHES = 2  # a file that crashed the daemon this many times is not tried again


@dataclass(frozen=True)
class Intent:
    photo: str
    sha256: str
    result: str
    destination: str
    error_file: str | None = None
    error_text: str | None = None


def unique_path(folder: Path, stem: str, suffix: str, taken: set[str] | None = None,
                companion: str | None = None) -> Path:
    """`folder/stem+suffix`, or `stem-1`, `stem-2`... when taken, so nothing is overwritten.

    Names are fitted to 255 bytes (`fit_name`); "taken" includes a dangling
    symlink of that name (`lexists`), and, with `companion`, the name of the
    companion file (`<name><companion>`, e.g. ".error.json") must be free too.
    """
    taken = taken or set()
    n = 0
    while True:
        name = fit_name(stem, f"-{n}{suffix}" if n else suffix)
        candidate = folder / name
        free = not os.path.lexists(candidate) and name not in taken
        if free and companion is not None:
            free = not os.path.lexists(folder / error_name(name, companion))
        if free:
            return candidate
        n += 1


def error_name(name: str, companion: str = ".error.json") -> str:
    """The companion file's name for `name` (`<name>.error.json`), fitted to 255 bytes."""
    return fit_name(name, companion)


def move_aside(src: Path, dest: Path) -> Path:
    """Move `src` to `dest` (links and FIFOs as themselves), never overwriting; returns where it went.

    When `dest` is taken (a dangling link counts), the next free `stem-N`
    name is used: two files of one name from two folders both survive.
    A hard link then unlinking the old name, where the filesystem allows:
    inotify then reports a plain delete in the watched folder. A rename out
    of a watched folder is an unpaired "moved from", which watchdog holds for
    0.5 s waiting for its pair, delaying every event behind it (measured:
    ~400 ms added to the next query).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dest) and _same_file(src, dest):  # a link made before a crash
        os.unlink(src)
        return dest
    stem, suffix = _split(dest.name)
    for _ in range(1000):
        try:
            move_noreplace(src, dest)
            return dest
        except FileExistsError:
            dest = unique_path(dest.parent, stem, suffix)
    raise FileExistsError(f"no free name for {src} in {dest.parent}")


def _split(name: str) -> tuple[str, str]:
    p = Path(name)
    return p.stem, p.suffix


def _same_file(a: Path, b: Path) -> bool:
    """True when `a` and `b` are one file (links not followed)."""
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _key(text: str) -> str:
    return hashlib.sha256(os.fsencode(text)).hexdigest()[:24]


class Journal:
    """Intent records in `directory`, one small JSON file per query in flight."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.attempts_dir = directory / "attempts"
        self.attempts_dir.mkdir(parents=True, exist_ok=True)

    def clean_temp_files(self) -> list[Path]:
        """Remove temp files of writes cut short by a kill; call at start, under the daemon lock."""
        return remove_stale_temps(self.directory) + remove_stale_temps(self.attempts_dir)

    def begin(self, intent: Intent) -> Path:
        # The record's name comes from the result path's hash: any query name fits.
        record = self.directory / f"{_key(intent.result)}.intent"
        write_json_atomic(record, json.dumps(asdict(intent)))
        return record

    def finish(self, record: Path) -> None:
        record.unlink(missing_ok=True)

    def reserved(self) -> set[str]:
        """Result file names that in-flight records have claimed."""
        return {Path(i.result).name for _, i in self._records()}

    def recover(self, answered: Callable[[Intent], None] | None = None) -> list[Intent]:
        """Complete or discard every record left by a crash; returns completed ones.

        `answered` is called for each completed one before its record goes
        (the history of checks notes it there: a kill in between repeats the
        call on the next start, never skips it).
        """
        done = []
        for record, intent in self._records():
            if Path(intent.result).exists():
                _complete(intent)
                if answered is not None:
                    answered(intent)
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

    # ------------------------------------------------------------ attempts
    def _attempt_record(self, path: Path) -> Path:
        return self.attempts_dir / f"{_key(str(path))}.attempt"

    def crashes(self, path: Path) -> int:
        """How many times the daemon died while handling `path` (0 when never)."""
        try:
            data = json.loads(self._attempt_record(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return 0
        if not isinstance(data, dict) or data.get("path") != str(path):
            return 0
        tries = data.get("tries")
        return tries if isinstance(tries, int) and tries > 0 else 0

    def begin_attempt(self, path: Path) -> None:
        """Record, durably, that handling `path` starts (one more try)."""
        tries = self.crashes(path) + 1
        write_json_atomic(self._attempt_record(path), json.dumps({"path": str(path), "tries": tries}))

    def end_attempt(self, path: Path) -> None:
        """`path` was handled (answered or moved aside): no crash to count."""
        self._attempt_record(path).unlink(missing_ok=True)


def _complete(intent: Intent) -> None:
    photo = Path(intent.photo)
    if intent.error_file and intent.error_text is not None and not os.path.lexists(intent.error_file):
        Path(intent.error_file).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(intent.error_file), intent.error_text)
    if os.path.lexists(photo):
        move_aside(photo, Path(intent.destination))
