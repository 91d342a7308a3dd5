"""Filesystem primitives: the one safe open, name fitting, durable and no-replace moves.

Every file the daemon, the CLI or the server reads goes through `open_regular`
(or `read_regular`, built on it). It exists because a drop folder is written
by others: a FIFO blocks a plain `open()` forever, a symlink to `/dev/zero`
reads forever, a symlink to `/etc/passwd` leaks outside the root. So:

* links are resolved first and, with a `root`, the target must lie inside it;
* the target is `stat`ed and refused unless it is a regular file, before it is
  opened (opening some devices acts);
* it is opened with `O_NOFOLLOW` (the resolved name must not have turned into
  a link since), `O_NONBLOCK` (a FIFO swapped in meanwhile must not block the
  open) and `O_CLOEXEC`;
* the opened descriptor is `fstat`ed: a regular file within the size limit,
  or refused. What was checked is what is read.

File names are data: any byte string the filesystem allows (non-UTF-8,
255 bytes, newlines) must be answered and recorded. Names we derive from them
(`fit_name`) always fit in `NAME_MAX` bytes and stay distinct.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

NAME_MAX = 255  # bytes in one path component (Linux, macOS, most filesystems)
_READ_CHUNK = 1 << 20
_RENAME_NOREPLACE = 1


class UnsafeFile(OSError):
    """A file `open_regular` refuses; `kind` says why, str(err) is one line.

    Attributes
    ----------
    kind : str
        "missing", "not_a_file", "outside_root", "too_large" or "unreadable".
    size : int or None
        The size seen, for "too_large".
    """

    def __init__(self, kind: str, message: str, size: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.size = size

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type, tuple[str, str, int | None]]:
        return (type(self), (self.kind, self.message, self.size))


def _describe(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symlink that resolves to no file (a loop)"
    return "a special file"


def inside_root(path: Path, root: Path) -> Path:
    """`path` with every symlink resolved, if that lies inside `root`; else `UnsafeFile`."""
    real_root = os.path.realpath(root)
    target = os.path.realpath(path)
    try:
        inside = os.path.commonpath([real_root, target]) == real_root
    except ValueError:  # different drives on Windows
        inside = False
    if not inside:
        # The target is not named: it is outside the root, and none of our business.
        raise UnsafeFile("outside_root", f"{path}: a link that leads outside the folder {real_root}")
    return Path(target)


@contextmanager
def open_regular(path: Path, max_bytes: int | None = None, root: Path | None = None) -> Iterator[BinaryIO]:
    """Open a regular file for reading, safely; yields a binary file object.

    Parameters
    ----------
    path : Path
        The file; links are followed (see `root`).
    max_bytes : int, optional
        Refuse a file larger than this (by `fstat` of the opened descriptor).
    root : Path, optional
        If given, `path` must resolve (links followed) to a file inside it.

    Raises
    ------
    UnsafeFile
        For a missing file, anything but a regular file (FIFO, device,
        directory, socket, a link loop), a target outside `root`, a file above
        `max_bytes`, or an operating-system refusal. Nothing blocks.
    """
    target = inside_root(path, root) if root is not None else Path(os.path.realpath(path))
    try:
        info = os.stat(target, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        raise UnsafeFile("missing", f"{path}: no such file (or a dangling link)") from None
    except OSError as exc:
        kind = "not_a_file" if exc.errno == errno.ELOOP else "unreadable"
        raise UnsafeFile(kind, f"{path}: cannot read: {exc.strerror}") from None
    # Refused before opening: opening a FIFO blocks, opening a device can act.
    _check(path, info, max_bytes)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    # The descriptor is closed here, exactly once, whatever is raised where: the
    # file object never owns it. (It did, and a time budget's exception landing
    # inside `os.fdopen` after the object took the descriptor closed it twice:
    # EBADF instead of the timeout, or another thread's file closed.)
    fd = -1
    try:
        try:
            fd = os.open(target, flags)
        except (FileNotFoundError, NotADirectoryError):
            raise UnsafeFile("missing", f"{path}: no such file") from None
        except OSError as exc:
            # ELOOP: the checked name became a symlink between the stat and the open.
            kind = "not_a_file" if exc.errno == errno.ELOOP else "unreadable"
            raise UnsafeFile(kind, f"{path}: cannot open: {exc.strerror}") from None
        _check(path, os.fstat(fd), max_bytes)  # the file actually opened decides
        # Back to blocking reads: a regular file never blocks, and buffered
        # reads treat EAGAIN as an error.
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            yield fh
    finally:
        if fd >= 0:
            os.close(fd)


def _check(path: Path, info: os.stat_result, max_bytes: int | None) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFile("not_a_file", f"{path}: not a regular file ({_describe(info.st_mode)})")
    if max_bytes is not None and info.st_size > max_bytes:
        raise UnsafeFile("too_large", f"{path}: file is {info.st_size} bytes, above the limit of {max_bytes}", info.st_size)


def read_regular(path: Path, max_bytes: int | None = None, root: Path | None = None) -> bytes:
    """The whole content of a regular file, opened by `open_regular`.

    Reading is capped at `max_bytes` too, in case the file grows after the
    `fstat` (still being copied in).

    Raises
    ------
    UnsafeFile
        As `open_regular`; "too_large" also when the file grew past the limit.
    """
    with open_regular(path, max_bytes, root) as fh:
        chunks, total = [], 0
        try:
            while chunk := fh.read(_READ_CHUNK):
                chunks.append(chunk)
                total += len(chunk)
                if max_bytes is not None and total > max_bytes:
                    raise UnsafeFile("too_large", f"{path}: file grew above the limit of {max_bytes} bytes", total)
        except UnsafeFile:
            raise
        except OSError as exc:
            raise UnsafeFile("unreadable", f"{path}: cannot read: {exc.strerror or exc}") from None
    return b"".join(chunks)


def sha256_regular(path: Path, max_bytes: int | None = None, root: Path | None = None) -> str:
    """Hex sha256 of a regular file opened by `open_regular`, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open_regular(path, max_bytes, root) as fh:
        for chunk in iter(lambda: fh.read(_READ_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- names -------------------------------------------------------------------


def name_bytes(name: str) -> int:
    """Length of `name` in bytes as the filesystem stores it (`os.fsencode`)."""
    return len(os.fsencode(name))


def fit_name(stem: str, suffix: str = "", limit: int = NAME_MAX) -> str:
    """`stem + suffix`, shortened so that it fits in `limit` bytes, and stays distinct.

    A name that fits is returned unchanged. Otherwise the stem is cut on a
    character boundary and `~` plus 12 hex digits of the full name's hash is
    put before `suffix`, so two long names that share their beginning still
    give two names.

    Parameters
    ----------
    stem : str
        Any name as `os.fsdecode` gives it (lone surrogates stand for bytes
        that are not UTF-8; each is one byte).
    suffix : str
        Kept whole (e.g. ".json", "-3.jpg", ".error.json").
    limit : int
        Bytes allowed.
    """
    whole = stem + suffix
    if name_bytes(whole) <= limit:
        return whole
    tag = "~" + hashlib.blake2b(os.fsencode(whole), digest_size=6).hexdigest()
    budget = limit - name_bytes(suffix) - len(tag)
    if budget < 1:
        raise ValueError(f"suffix {suffix!r} leaves no room for a name in {limit} bytes")
    kept, used = [], 0
    for ch in stem:
        size = name_bytes(ch)
        if used + size > budget:
            break
        kept.append(ch)
        used += size
    return "".join(kept) + tag + suffix


# --- writes and moves ----------------------------------------------------------


def fsync_path(path: Path) -> None:
    """fsync a file or a folder by path (a folder's fsync makes renames in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TEMP_SUFFIX = ".tmp"


def temp_name(path: Path) -> Path:
    """The temp file beside `path` that `atomic_write_bytes` uses: `.<name>.<pid>.tmp`, fitted."""
    path = Path(path)
    return path.with_name(fit_name("." + path.name, f".{os.getpid()}{TEMP_SUFFIX}"))


_TEMP_NAME = re.compile(rf"^\.(.*)\.([0-9]+){re.escape(TEMP_SUFFIX)}$")
"""`temp_name`'s pattern: the target's name (possibly fitted) and the writer's pid."""


def remove_stale_temps(folder: Path, only_dead_writers: bool = False, of_names_ending: str = "") -> list[Path]:
    """Remove the temp files (`temp_name`) that writes cut short by a kill left in `folder`; the removed.

    With `only_dead_writers` a temp file whose writer's pid still runs is
    kept: for folders another process may be writing to (a pid reused since
    keeps a stale file, which is harmless). `of_names_ending`: only temp
    files of names ending so (the failed folder also holds users' files,
    whatever their names).
    """
    removed = []
    for path in folder.iterdir():
        match = _TEMP_NAME.match(path.name)
        if match is None or not match.group(1).endswith(of_names_ending) or not path.is_file():
            continue
        if only_dead_writers and _running(int(match.group(2))):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _running(pid: int) -> bool:
    """Whether a process `pid` exists (another user's too)."""
    if pid <= 0:  # 0 and negative pids name process groups
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        pass  # it exists, under another user
    return True


def atomic_write_bytes(path: Path, data: bytes, replace: bool = True) -> None:
    """Write `data` so that a reader sees the old file or the whole new one.

    Temp file in the same folder, fsync, rename (or, with `replace=False`, a
    hard link that fails if the name exists), fsync the folder.

    Raises
    ------
    FileExistsError
        With `replace=False`, when `path` exists (a link counts).
    """
    path = Path(path)
    tmp = temp_name(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        if replace:
            os.replace(tmp, path)
        else:
            move_noreplace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    fsync_path(path.parent)


def _renameat2_noreplace(src: Path, dest: Path) -> bool:
    """rename(2) that fails if `dest` exists (Linux renameat2); False where unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dest), _RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        raise FileExistsError(err, os.strerror(err), str(dest))
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False  # filesystem without RENAME_NOREPLACE
    raise OSError(err, os.strerror(err), str(src))


def move_noreplace(src: Path, dest: Path) -> None:
    """Move `src` (a file, a link, a FIFO: not followed) to `dest`, never replacing.

    A hard link then unlinking the old name where the filesystem allows (it
    also keeps inotify's events simple: a plain delete in the watched folder);
    else `renameat2(RENAME_NOREPLACE)`; else, across filesystems, a copy (a
    link is copied as a link) checked with `lexists` first, then fsync and
    unlink.

    Raises
    ------
    FileExistsError
        When `dest` exists (a dangling link counts): nothing was moved.
    """
    try:
        os.link(src, dest, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:
        pass
    else:
        os.unlink(src)
        return
    try:
        if _renameat2_noreplace(Path(src), Path(dest)):
            return
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    if os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, "file exists", str(dest))
    shutil.copy2(src, dest, follow_symlinks=False)
    if not os.path.islink(dest):
        with open(dest, "rb") as fh:
            os.fsync(fh.fileno())
    os.unlink(src)


def is_inside(path: Path, folder: Path) -> bool:
    """True when `path` lies under `folder` (lexically; resolve both first where links matter)."""
    try:
        Path(path).relative_to(folder)
    except ValueError:
        return False
    return True
