"""`teaprint install-service`: write the systemd units for this install and root, then enable them.

The units shipped in `pipeline/ops/systemd/` (also `contrib/`) are complete
units with example paths; `render_unit` replaces the lines that depend on the
machine (ExecStart, WorkingDirectory, User, Group) and, for a per-user unit
(`--user`, run by the user's own systemd), drops what only the system manager
may do (User/Group, the sandboxing lines) and installs into `default.target`.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

UNITS = {"run": "teaprint.service", "serve": "teaprint-serve.service"}
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
_SYSTEM_ONLY = ("User=", "Group=", "PrivateTmp=", "ProtectSystem=", "NoNewPrivileges=")


@dataclass(frozen=True)
class InstallReport:
    """What `install_service` wrote, the commands that enable it, and what they answered when run."""

    units: tuple[Path, ...]
    commands: tuple[tuple[str, ...], ...]
    outcomes: tuple[tuple[int, str], ...] = ()
    user_mode: bool = False

    @property
    def ok(self) -> bool:
        return all(code == 0 for code, _ in self.outcomes)

    def lines(self) -> list[str]:
        """What the CLI prints."""
        out = [f"wrote {unit}" for unit in self.units]
        if not self.outcomes:
            out += ["enable with:"] + [f"  {' '.join(command)}" for command in self.commands]
        for command, (code, text) in zip(self.commands, self.outcomes):
            out.append(f"{'ran' if code == 0 else 'FAILED'} {' '.join(command)}" + (f": {text.strip()}" if code and text.strip() else ""))
        if self.user_mode:
            out.append("to keep it running while you are logged out: loginctl enable-linger " + pwd.getpwuid(os.getuid()).pw_name)
        return out


def unit_template(name: str) -> str:
    """The shipped unit file `name` (`teaprint.service` or `teaprint-serve.service`)."""
    return resources.files("pipeline.ops").joinpath("systemd", name).read_text(encoding="utf-8")


def default_command() -> list[str]:
    """How this install runs teaprint: the `teaprint` script beside this Python, else `python -m pipeline`."""
    script = Path(sys.executable).parent / "teaprint"
    return [str(script)] if os.access(script, os.X_OK) else [sys.executable, "-m", "pipeline"]


def exec_line(command: Sequence[str]) -> str:
    """A command line as systemd reads it: words with spaces or quotes quoted, `%` doubled (specifier escape)."""
    words = []
    for word in command:
        word = word.replace("%", "%%")
        if any(c in word for c in ' \t"\'\\;$') or not word:
            word = '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
        words.append(word)
    return " ".join(words)


def render_unit(template: str, command: Sequence[str], root: Path, user_mode: bool,
                user: str | None = None, group: str | None = None) -> str:
    """`template` with this machine's command, root and account.

    Parameters
    ----------
    command : sequence of str
        The whole ExecStart command (program, global options, subcommand).
    root : Path
        The teaprint root (WorkingDirectory).
    user_mode : bool
        A unit for `systemctl --user`: no User/Group nor sandboxing, WantedBy=default.target.
    """
    out = []
    for line in template.splitlines():
        if line.startswith("ExecStart="):
            line = "ExecStart=" + exec_line(command)
        elif line.startswith("WorkingDirectory="):
            line = "WorkingDirectory=" + str(root).replace("%", "%%")  # a path, not a command line: no quoting
        elif user_mode and line.startswith(_SYSTEM_ONLY):
            continue
        elif line.startswith("User=") and user:
            line = f"User={user}"
        elif line.startswith("Group=") and group:
            line = f"Group={group}"
        elif user_mode and line.startswith("WantedBy="):
            line = "WantedBy=default.target"
        elif user_mode and line.startswith("EnvironmentFile=-/etc/teaprint/"):
            line = "EnvironmentFile=-%h/.config/teaprint/" + line.rsplit("/", 1)[1]
        elif user_mode and line.lstrip("# ").startswith(("cp contrib/", "systemctl daemon-reload", "By hand")):
            continue  # the by-hand lines are for the system-wide copy
        out.append(line)
    return "\n".join(out) + "\n"


def install_service(root: Path, *, user_mode: bool, serve: bool = False, config: Path | None = None,
                    command: Sequence[str] | None = None, unit_dir: Path | None = None,
                    enable: bool = True, systemctl: str = "systemctl") -> InstallReport:
    """Write `teaprint.service` (and `teaprint-serve.service` with `serve`) for `root`, then enable and start them.

    Parameters
    ----------
    root : Path
        The teaprint root the service runs on (must exist).
    user_mode : bool
        Install for the current user's systemd (`~/.config/systemd/user`) instead of
        the system's (`/etc/systemd/system`, as root; the service runs as the owner of `root`).
    config : Path, optional
        A config file passed as `--config`.
    command : sequence of str, optional
        The teaprint program (default: `default_command()`).
    unit_dir : Path, optional
        Where to write the units (default by `user_mode`).
    enable : bool
        Run `systemctl [--user] daemon-reload` and `enable --now`; otherwise only return the commands.

    Raises
    ------
    ValueError
        For a root that is not a folder or a config file that does not exist.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder; create it (or run `teaprint --root {root} run` once) first")
    if config is not None and not Path(config).is_file():
        raise ValueError(f"{config}: no such config file")
    base = list(command or default_command())
    if config is not None:
        base += ["--config", str(Path(config).resolve())]
    base += ["--root", str(root)]
    folder = unit_dir or (Path.home() / ".config" / "systemd" / "user" if user_mode else SYSTEM_UNIT_DIR)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".teaprint-")
        probe.close()
    except PermissionError:
        raise ValueError(f"{folder}: no permission to write units there; run as root (sudo) or install for yourself with --user") from None
    info = root.stat()
    owner, group = (None, None) if user_mode else (pwd.getpwuid(info.st_uid).pw_name, grp.getgrgid(info.st_gid).gr_name)
    written = []
    for subcommand in ("run", "serve") if serve else ("run",):
        name = UNITS[subcommand]
        path = folder / name
        path.write_text(render_unit(unit_template(name), [*base, subcommand], root, user_mode, owner, group), encoding="utf-8")
        written.append(path)
    scope = ("--user",) if user_mode else ()
    commands = ((systemctl, *scope, "daemon-reload"), (systemctl, *scope, "enable", "--now", *(p.name for p in written)))
    outcomes: list[tuple[int, str]] = []
    if enable:
        for cmd in commands:
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
                outcomes.append((done.returncode, done.stderr or done.stdout))
            except (OSError, subprocess.TimeoutExpired) as exc:
                outcomes.append((127, str(exc)))
            if outcomes[-1][0] != 0:
                break
    return InstallReport(tuple(written), commands, tuple(outcomes), user_mode)
