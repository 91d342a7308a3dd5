"""`teaprint doctor`: what is wrong with this setup, and the line that mends it, in one screen.

`diagnose` runs every check and returns `Finding`s (ok, warn or fail, one
line each, with a `fix` command or setting where there is one); `Diagnosis.text`
is the screen and `Diagnosis.exit_code` is 1 when anything fails. Warnings
(a stopped daemon, a weak token, a network share watched by inotify) keep exit 0.

The people who run the machine are not developers: messages say what is
wrong in the words of the setup (folders, the port, the token) and the fix
is a command to paste or a config key to set.
"""

from __future__ import annotations

import errno
import math
import os
import pwd
import shutil
import socket
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from pipeline.config import Config, ConfigError, load_config

Level = Literal["ok", "warn", "fail"]
INOTIFY_LIMIT_FILE = Path("/proc/sys/fs/inotify/max_user_watches")
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "virtiofs", "ceph", "glusterfs", "afs", "davfs",
                       "fuse.sshfs", "fuse.glusterfs", "fuse.rclone", "fuse.s3fs", "fuse.davfs")
DROP_FOLDERS = ("inbox_catalog", "inbox_query")
WRITTEN_FOLDERS = ("inbox_catalog", "inbox_query", "outbox", "processed", "failed", "index", "state")
TOKEN_FIX = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'  (set it as http.token or TEAPRINT_TOKEN)"


@dataclass(frozen=True)
class Finding:
    """One check's verdict: `check` names it, `message` is one line, `fix` what to run or set."""

    check: str
    level: Level
    message: str
    fix: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"check": self.check, "level": self.level, "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class Diagnosis:
    root: Path
    findings: tuple[Finding, ...]

    @property
    def exit_code(self) -> int:
        return 1 if any(f.level == "fail" for f in self.findings) else 0

    def text(self) -> str:
        """The one screen `teaprint doctor` prints."""
        lines = [f"teaprint doctor: {self.root}"]
        for f in self.findings:
            lines.append(f"  {f.level.upper() if f.level != 'ok' else 'ok':<5} {f.check:<8} {f.message}")
            if f.fix:
                lines.append(f"{'':16}fix: {f.fix}")
        failed = sum(f.level == "fail" for f in self.findings)
        warned = sum(f.level == "warn" for f in self.findings)
        verdict = "all good" if not failed and not warned else f"{failed} problem{'s' * (failed != 1)}, {warned} warning{'s' * (warned != 1)}"
        lines.append(f"{verdict}; exit {self.exit_code}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return {"root": str(self.root), "exit_code": self.exit_code, "findings": [f.to_dict() for f in self.findings]}


@dataclass(frozen=True)
class Setup:
    """What the checks look at: the root, its config, and the machine facts they read."""

    root: Path
    config: Config
    config_source: str
    mountinfo: str
    serve: bool

    def path(self, name: str) -> Path:
        return self.root / getattr(self.config.paths, name)


def diagnose(root: Path, config_path: Path | None = None, serve: bool = True, mountinfo: str | None = None) -> Diagnosis:
    """Run every check on `root` with the config at `config_path` (None: the defaults).

    Parameters
    ----------
    serve : bool
        Also check what `teaprint serve` needs (the port, the token).
    mountinfo : str, optional
        The text of /proc/self/mountinfo (default: read it), for the network-share check.
    """
    root = Path(root).resolve()
    try:
        config = load_config(config_path)
    except ConfigError as err:
        return Diagnosis(root, (Finding("config", "fail", str(err), "fix the key it names; the shipped defaults (pipeline/data/default.yaml) list every key"),))
    setup = Setup(root, config, str(config_path) if config_path else "the defaults", mountinfo if mountinfo is not None else _read_mountinfo(), serve)
    findings = [Finding("config", "ok", f"config valid ({setup.config_source})")]
    checks: list[Callable[[Setup], list[Finding]]] = [check_model_and_index, check_folders, check_disk, check_inotify,
                                                      check_network_shares, check_history, check_records, check_daemon]
    if serve:
        checks += [check_port, check_token]
    for check in checks:
        try:
            findings += check(setup)
        except Exception as exc:  # noqa: BLE001 - a check that breaks is itself a finding, never a traceback
            findings.append(Finding(check.__name__.removeprefix("check_"), "fail", f"the check itself failed: {type(exc).__name__}: {exc}"))
    return Diagnosis(root, tuple(findings))


# ---------------------------------------------------------------- model and index
def check_model_and_index(setup: Setup) -> list[Finding]:
    from pipeline.engine import resolve_model_path
    from pipeline.features.embedding import Encoder

    path = resolve_model_path(setup.config, setup.root)
    if not path.is_file():
        return [Finding("model", "fail", f"model file missing: {path}", "set model.path to the .keras file (the default models/teaprint-encoder.keras is the one shipped in the package)"),
                *check_index(setup, None)]
    started = time.perf_counter()
    try:
        encoder = Encoder.load(path)
    except Exception as exc:  # noqa: BLE001 - any loading error is the finding
        return [Finding("model", "fail", f"model {path} does not load: {type(exc).__name__}: {exc}", "reinstall the model files (.keras, .json, .tflite) side by side"),
                *check_index(setup, None)]
    info = encoder.info
    found = Finding("model", "ok", f"model {info.model_id} loads ({info.runtime}, {time.perf_counter() - started:.1f} s)")
    return [found, *check_index(setup, info.model_id)]


def check_index(setup: Setup, model_id: str | None) -> list[Finding]:
    """The index opens, was built with this model, and agrees with the catalog folder."""
    from pipeline.catalog import CatalogIndex, ModelMismatchError
    from pipeline.photos import photo_files

    directory = setup.path("index")
    try:
        catalog = CatalogIndex(directory, model_id=model_id)
    except ModelMismatchError as err:
        return [Finding("index", "fail", str(err).splitlines()[0], f"teaprint --root {setup.root} reembed")]
    except Exception as err:  # noqa: BLE001 - a damaged manifest or segment, whatever h5py or json raise
        return [Finding("index", "fail", f"index {directory} does not open: {type(err).__name__}: {err}", f"move {directory} aside and run `teaprint --root {setup.root} index {setup.path('inbox_catalog')}`")]
    folder = setup.path("inbox_catalog")
    on_disk = {str(p.absolute()) for p in photo_files(folder, setup.config, recursive=True)}
    indexed = {e.path for e in catalog.entries() if Path(e.path).is_relative_to(folder)}
    unindexed, gone = len(on_disk - indexed), len(indexed - on_disk)
    summary = f"index opens: {len(catalog)} photos, {len(set(catalog.labels()))} cakes"
    if not unindexed and not gone:
        return [Finding("index", "ok", f"{summary}; agrees with {folder}")]
    parts = [f"{unindexed} photos in the folder not registered yet"] * bool(unindexed) + [f"{gone} registered photos gone from the folder"] * bool(gone)
    return [Finding("index", "warn", f"{summary}; {', '.join(parts)}", "the running daemon catches up within daemon.watch.reconcile_interval_s; is it running?")]


# ---------------------------------------------------------------- folders and disk
def check_folders(setup: Setup) -> list[Finding]:
    """Every folder the service writes exists (or can be made) and the service's account may write it."""
    account = setup.root.stat().st_uid if setup.root.exists() else os.geteuid()
    name = _user_name(account)
    problems = []
    for key in WRITTEN_FOLDERS:
        folder = setup.path(key)
        why = _unwritable(folder, account)
        if why:
            fix = f"sudo chown -R {name}: {folder}" if "permission" in why else f"fix paths.{key} or the folder {folder}"
            problems.append(Finding("folders", "fail", f"{key.replace('_', ' ')} {folder} {why}", fix))
    return problems or [Finding("folders", "ok", f"all {len(WRITTEN_FOLDERS)} folders writable by {name} (who owns the root and runs the service)")]


def _unwritable(folder: Path, uid: int) -> str | None:
    """Why `uid` cannot create files in `folder` (or in the folder that would hold it), or None."""
    target = folder
    while not target.exists():
        if target.is_symlink():
            return "is a dangling link"
        target = target.parent
    if not target.is_dir():
        return "is a file, not a folder" if target == folder else f"cannot be made: {target} is a file"
    if os.statvfs(target).f_flag & os.ST_RDONLY:
        return "is on a read-only filesystem"
    if uid == os.geteuid():
        try:
            fd, probe = tempfile.mkstemp(dir=target, prefix=".teaprint-doctor-")
        except OSError as exc:
            return "has no write permission for this account" if exc.errno in (errno.EACCES, errno.EPERM) else f"cannot be written: {exc.strerror}"
        os.close(fd)
        os.unlink(probe)
        return None
    return None if _mode_allows_write(target, uid) else f"has no write permission for {_user_name(uid)}"


def _mode_allows_write(folder: Path, uid: int) -> bool:
    """What the kernel would decide for `uid` by mode bits (root may always write)."""
    if uid == 0:
        return True
    info = folder.stat()
    groups = {g for g in os.getgrouplist(_user_name(uid), pwd.getpwuid(uid).pw_gid)} if _known(uid) else set()
    if info.st_uid == uid:
        need = stat.S_IWUSR | stat.S_IXUSR
    elif info.st_gid in groups:
        need = stat.S_IWGRP | stat.S_IXGRP
    else:
        need = stat.S_IWOTH | stat.S_IXOTH
    return info.st_mode & need == need


def check_disk(setup: Setup) -> list[Finding]:
    where = next((p for p in (setup.root, *setup.root.parents) if p.exists()))
    usage = shutil.disk_usage(where)
    free_mb = usage.free / 1e6
    want = setup.config.doctor.min_free_mb
    message = f"{free_mb / 1000:.1f} GB free of {usage.total / 1e9:.0f} GB on {where}"
    if free_mb < want / 10:
        return [Finding("disk", "fail", f"only {message}: results and moved photos cannot be written", "free space on that disk, or move the root")]
    if free_mb < want:
        return [Finding("disk", "warn", f"{message} (below doctor.min_free_mb {want:g} MB)", "free space soon: outbox/processed and the index grow with every photo")]
    return [Finding("disk", "ok", message)]


# ---------------------------------------------------------------- watching
def check_inotify(setup: Setup) -> list[Finding]:
    """inotify needs one watch per folder watched (the catalog folder recursively); the limit is per user."""
    if setup.config.daemon.watch.mode == "polling":
        return [Finding("inotify", "ok", "daemon.watch.mode is polling: no inotify watches needed")]
    limit, source = _inotify_limit(setup.config)
    if limit is None:
        return [Finding("inotify", "warn", f"cannot read the inotify watch limit ({INOTIFY_LIMIT_FILE})", "if folders are missed, set daemon.watch.mode: polling")]
    folders = count_folders(setup.path("inbox_catalog")) + count_folders(setup.path("inbox_query"), recursive=False)
    wanted = max(524288, 1 << math.ceil(math.log2(max(4 * folders, 2))))
    fix = (f"sudo sysctl fs.inotify.max_user_watches={wanted} && "
           f"echo fs.inotify.max_user_watches={wanted} | sudo tee /etc/sysctl.d/60-teaprint.conf")
    message = f"{folders} folders to watch, inotify watch limit {limit} ({source})"
    if folders >= limit:
        return [Finding("inotify", "fail", f"{message}: the daemon cannot watch them all", fix)]
    if folders * 2 > limit:
        return [Finding("inotify", "warn", f"{message}: other programs share the limit", fix)]
    return [Finding("inotify", "ok", message)]


def _inotify_limit(config: Config) -> tuple[int | None, str]:
    if config.doctor.inotify_max_user_watches is not None:
        return config.doctor.inotify_max_user_watches, "doctor.inotify_max_user_watches"
    try:
        return int(INOTIFY_LIMIT_FILE.read_text().strip()), "fs.inotify.max_user_watches"
    except (OSError, ValueError):
        return None, ""


def count_folders(folder: Path, recursive: bool = True) -> int:
    """`folder` and, with `recursive`, every folder under it (links not followed), as inotify watches them."""
    if not folder.is_dir():
        return 1  # created at start, then watched
    if not recursive:
        return 1
    return 1 + sum(len(dirs) for _, dirs, _ in os.walk(folder))


def check_network_shares(setup: Setup) -> list[Finding]:
    """inotify sees only changes made through this machine's kernel: a share written by others needs polling."""
    out = []
    for key in DROP_FOLDERS:
        folder = setup.path(key)
        fstype = filesystem_type(folder, setup.mountinfo)
        if fstype in NETWORK_FILESYSTEMS and setup.config.daemon.watch.mode != "polling":
            out.append(Finding("share", "warn", f"{key.replace('_', ' ')} {folder} is on a network share ({fstype}): inotify misses files other machines write",
                               "set daemon.watch.mode: polling"))
    return out or [Finding("share", "ok", "drop folders on local disks" if setup.config.daemon.watch.mode != "polling" else "polling the drop folders")]


def filesystem_type(path: Path, mountinfo: str) -> str | None:
    """The filesystem type of the mount holding `path`, from /proc/self/mountinfo text (longest mount point wins)."""
    target = next((p for p in (Path(path), *Path(path).parents) if p.exists()), Path("/")).resolve()
    best: tuple[int, str | None] = (-1, None)
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        mount_point = Path(fields[4].replace("\\040", " "))
        fstype = line.split(" - ", 1)[1].split()[0]
        if target == mount_point or target.is_relative_to(mount_point):
            depth = len(mount_point.parts)
            if depth >= best[0]:
                best = (depth, fstype)
    return best[1]


def _read_mountinfo() -> str:
    try:
        return Path("/proc/self/mountinfo").read_text()
    except OSError:
        return ""


# ---------------------------------------------------------------- history, records, daemon
def check_history(setup: Setup) -> list[Finding]:
    from pipeline.history import HistoryError, history_at

    history = history_at(setup.root, setup.config)
    if not history.path.exists() and not history.spool.exists():
        return [Finding("history", "ok", f"no checks recorded yet ({history.path} is made on the first answer)")]
    try:
        total = history.page(limit=1).total
    except HistoryError as err:
        return [Finding("history", "fail", f"history of checks unreadable: {err}",
                        f"stop the service, then: mv {history.path} {history.path}.broken (a new one is started)")]
    finally:
        history.close()
    waiting = history.pending
    if waiting:
        return [Finding("history", "warn", f"{total} checks recorded, {waiting} waiting to be written", "they are written when the database is free again")]
    return [Finding("history", "ok", f"{total} checks recorded")]


def check_records(setup: Setup) -> list[Finding]:
    from pipeline.records import RecordStore

    scan = RecordStore(setup.path("inbox_catalog")).scan()
    if not scan.problems:
        return [Finding("records", "ok", f"{len(scan.records)} cake records, no problems")]
    shown = [Finding("records", "warn", p.message, "fix the file (UTF-8 JSON or CSV); its note in failed/ says the same") for p in scan.problems[:3]]
    if len(scan.problems) > 3:
        shown.append(Finding("records", "warn", f"... and {len(scan.problems) - 3} more record problems (teaprint status lists them)"))
    return shown


def check_daemon(setup: Setup) -> list[Finding]:
    from pipeline.state import daemon_state

    status = daemon_state(setup.root, setup.config, ())
    if status["running"]:
        return [Finding("daemon", "ok", f"daemon running (pid {status['pid']})")]
    return [Finding("daemon", "warn", "the drop-folder daemon is not running", "systemctl start teaprint  (or: teaprint install-service)")]


# ---------------------------------------------------------------- serving
def check_port(setup: Setup) -> list[Finding]:
    host, port = setup.config.http.host, setup.config.http.port
    if port == 0:
        return [Finding("port", "ok", "http.port 0: a free port is picked at start")]
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host.strip("[]"), port))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return [Finding("port", "fail", f"cannot listen on {host}:{port}: {exc.strerror}", "set http.host to an address of this machine")]
        if _teaprint_answers(host, port):
            return [Finding("port", "ok", f"teaprint serve already answers on {host}:{port}")]
        return [Finding("port", "fail", f"port {port} on {host} is used by another program", f"set http.port, or see who holds it: ss -ltnp 'sport = :{port}'")]
    return [Finding("port", "ok", f"port {port} on {host} is free")]


def _teaprint_answers(host: str, port: int) -> bool:
    import json
    import urllib.request

    shown = f"[{host}]" if ":" in host else host
    try:
        with urllib.request.urlopen(f"http://{shown}:{port}/health", timeout=2) as response:
            body = json.loads(response.read(4096))
    except (OSError, ValueError):
        return False
    return isinstance(body, dict) and body.get("status") == "ok" and "auth_required" in body


def check_token(setup: Setup) -> list[Finding]:
    from pipeline.server.run import is_loopback, resolve_token

    try:
        token = resolve_token(setup.config)
    except ConfigError as err:
        return [Finding("token", "fail", str(err).split(";")[0], TOKEN_FIX)]
    host = setup.config.http.host
    if token is None:
        if is_loopback(host):
            return [Finding("token", "ok", "no token: the API and page answer on this machine only")]
        return [Finding("token", "fail", f"no token but http.host is {host}: `teaprint serve` refuses to start", TOKEN_FIX)]
    bits = token_bits(token)
    if bits < 100:
        return [Finding("token", "warn", f"the token is weak (about {bits:.0f} bits; 128 wanted): it can be guessed", TOKEN_FIX)]
    return [Finding("token", "ok", f"token strong enough (about {bits:.0f} bits)")]


def token_bits(token: str) -> float:
    """A rough guessing strength, in bits: characters that are not a run or a repeat x log2(alphabet of the classes used).

    "abcdefgh12345678" and "aaaaaaaaaaaaaaaa" count as a couple of characters; a
    `secrets.token_urlsafe(32)` token as about 250 bits.
    """
    classes = [(str.islower, 26), (str.isupper, 26), (str.isdigit, 10)]
    alphabet = sum(size for test, size in classes if any(test(c) for c in token))
    alphabet += 32 if any(not c.isalnum() for c in token) else 0
    runs = sum(1 for a, b in zip(token, token[1:]) if abs(ord(b) - ord(a)) <= 1)
    return (len(token) - runs) * math.log2(max(2, alphabet))


# ---------------------------------------------------------------- accounts
def _known(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
