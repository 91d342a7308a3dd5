"""Which files count as photos: the one rule every front-end uses.

A photo has one of `intake.extensions` (case-insensitive; the content, not
the name, decides how it is decoded), and neither its name nor any folder
between the walked folder and it matches `daemon.watch.ignore_patterns`
(names still being written such as `*.part`, and dotfiles). In a walked
folder, every such entry that is not a directory is a photo, a FIFO, a link
or a device included: each gets an answer, and the safe open refuses what is
not a regular file inside the folder.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Iterator

from pipeline.config import Config
from pipeline.intake import is_candidate


def ignored(name: str, patterns: tuple[str, ...]) -> bool:
    """True for names that are still being written (`*.part`) or hidden."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def is_photo(path: Path, folder: Path, config: Config) -> bool:
    """Whether `path`, found under `folder`, counts as a photo (by its name and its folders' names; no I/O)."""
    patterns = config.daemon.watch.ignore_patterns
    path = Path(path)
    try:
        between = path.relative_to(folder).parts[:-1]
    except ValueError:
        between = ()
    return is_candidate(path, config.intake) and not ignored(path.name, patterns) and not any(ignored(p, patterns) for p in between)


def photo_files(folder: Path, config: Config, recursive: bool = True) -> Iterator[Path]:
    """The photos now in `folder`, sorted (so processing order is stable); nothing when it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    found = folder.rglob("*") if recursive else folder.iterdir()
    for path in sorted(found):
        # A directory named like a photo is not one (a link to one is answered, and refused).
        if is_photo(path, folder, config) and (path.is_symlink() or not path.is_dir()):
            yield path
