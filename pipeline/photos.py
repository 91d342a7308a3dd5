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
import functools
import os
import re
from pathlib import Path
from typing import Iterator

from pipeline.config import Config
from pipeline.intake import is_candidate


def ignored(name: str, patterns: tuple[str, ...]) -> bool:
    """True for names that are still being written (`*.part`) or hidden."""
    return _ignore_rule(tuple(patterns)).match(name) is not None


@functools.lru_cache(maxsize=8)
def _ignore_rule(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """The patterns as one compiled expression (`fnmatch.fnmatchcase` semantics); matches nothing when empty."""
    return re.compile("|".join(fnmatch.translate(p) for p in patterns) or r"(?!)")


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
    """The photos now in `folder`, sorted (so processing order is stable); nothing when it is not a folder.

    One `os.scandir` per directory, names checked as strings: the daemon
    rescans its catalog folder every `reconcile_interval_s`, and the walk
    through `Path.rglob` took 0.27 s of the interpreter at 10k photos (27 s
    at 1M). Folders matching `ignore_patterns` are not entered; links to
    folders are not followed (as `rglob`); unreadable folders are skipped.
    Sorted by path components, as `Path` objects sort.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    patterns = config.daemon.watch.ignore_patterns
    found: list[tuple[str, ...]] = []
    pending: list[tuple[tuple[str, ...], str]] = [((), str(folder))]
    while pending:
        parts, directory = pending.pop()
        try:
            with os.scandir(directory) as entries:
                listed = [(e.name, e.path, _is_dir(e), e.is_symlink()) for e in entries]
        except OSError:
            continue
        for name, path, is_dir, is_link in listed:
            if ignored(name, patterns):
                continue  # a name still being written, a dotfile, or a folder whose contents do not count
            if is_dir and not is_link:
                if recursive:
                    pending.append(((*parts, name), path))
                continue  # a directory named like a photo is not one (a link to one is answered, and refused)
            if is_candidate(Path(name), config.intake):
                found.append((*parts, name))
    for parts in sorted(found):
        yield folder.joinpath(*parts)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False
