"""Service definitions for running the daemon at login: systemd user units on Linux, a
launchd user agent on macOS.

The templates are the files in ``systemd/`` and ``launchd/`` (shipped as package data).
Rendering is pure: it fills in the absolute path of ``thinpatch`` and the PATH that finds
cargo and rustc, and returns the files to write; :func:`write_files` does the writing.
"""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

SYSTEMD_SOCKET = "thinpatch.socket"
SYSTEMD_SERVICE = "thinpatch.service"
LAUNCHD_LABEL = "dev.thinpatch.daemon"
LAUNCHD_PLIST = f"{LAUNCHD_LABEL}.plist"

_EXEC_START = re.compile(r"^ExecStart=.*$", re.MULTILINE)
_SERVICE_SECTION = re.compile(r"^\[Service\]\n", re.MULTILINE)


@dataclass(frozen=True)
class ServiceFile:
    path: Path
    content: str
    mode: int = 0o644


def template(name: str) -> str:
    return resources.files("daemon").joinpath("data", "service", name).read_text(encoding="utf-8")


def platform_kind(platform: str = sys.platform) -> str:
    if platform.startswith("linux"):
        return "systemd"
    if platform == "darwin":
        return "launchd"
    raise ValueError(f"no service manager support for {platform}: run `thinpatch serve` yourself")


# --------------------------------------------------------------------------- systemd


def systemd_quote(word: str) -> str:
    """One ExecStart/Environment word: ``%`` is a specifier, whitespace needs quotes."""
    escaped = word.replace("%", "%%")
    if re.search(r'[\s"\\]', escaped):
        escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def render_systemd_service(unit: str, executable: str, path_env: str | None) -> str:
    """The service unit with ExecStart pointing at ``executable`` and PATH recorded."""
    exec_start = f"ExecStart={systemd_quote(executable)} serve"
    rendered, replaced = _EXEC_START.subn(lambda _: exec_start, unit, count=1)
    if replaced != 1:
        raise ValueError("service template has no ExecStart= line")
    if path_env:
        environment = f"Environment={systemd_quote('PATH=' + path_env)}\n"
        rendered = _SERVICE_SECTION.sub(lambda m: m.group(0) + environment, rendered, count=1)
    return rendered


def systemd_unit_dir(home: Path, env: dict[str, str]) -> Path:
    config = env.get("XDG_CONFIG_HOME") or str(home / ".config")
    return Path(config) / "systemd" / "user"


# --------------------------------------------------------------------------- launchd


def render_launchd_plist(plist_text: str, executable: str, path_env: str | None, log_file: Path) -> str:
    agent = plistlib.loads(plist_text.encode())
    agent["ProgramArguments"] = [executable, "serve"]
    if path_env:
        agent.setdefault("EnvironmentVariables", {})["PATH"] = path_env
    agent["StandardOutPath"] = str(log_file)
    agent["StandardErrorPath"] = str(log_file)
    return plistlib.dumps(agent, sort_keys=False).decode()


# --------------------------------------------------------------------------- plan


def install_plan(
    kind: str,
    home: Path,
    executable: str,
    path_env: str | None,
    env: dict[str, str] | None = None,
) -> list[ServiceFile]:
    """Files to write for ``kind`` ("systemd" or "launchd")."""
    env = {} if env is None else env
    if not os.path.isabs(executable):
        raise ValueError(f"the thinpatch executable must be an absolute path, got {executable!r}")
    if kind == "systemd":
        directory = systemd_unit_dir(home, env)
        return [
            ServiceFile(directory / SYSTEMD_SOCKET, template(SYSTEMD_SOCKET)),
            ServiceFile(
                directory / SYSTEMD_SERVICE,
                render_systemd_service(template(SYSTEMD_SERVICE), executable, path_env),
            ),
        ]
    if kind == "launchd":
        log_file = home / "Library" / "Logs" / "thinpatch.log"
        content = render_launchd_plist(template(LAUNCHD_PLIST), executable, path_env, log_file)
        return [ServiceFile(home / "Library" / "LaunchAgents" / LAUNCHD_PLIST, content)]
    raise ValueError(f"unknown service manager {kind!r}")


def enable_instructions(kind: str, files: list[ServiceFile]) -> str:
    if kind == "systemd":
        return (
            "Enable and start the socket (the daemon starts on the first connection):\n"
            "  systemctl --user daemon-reload\n"
            f"  systemctl --user enable --now {SYSTEMD_SOCKET}\n"
            "Check it with `thinpatch status`; logs: journalctl --user -u thinpatch.service"
        )
    plist = files[0].path
    return (
        "Load the agent (it starts now and at every login):\n"
        f"  launchctl bootstrap gui/$(id -u) {plist}\n"
        "Check it with `thinpatch status`; logs: ~/Library/Logs/thinpatch.log\n"
        f"Unload it with: launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL}"
    )


# --------------------------------------------------------------------------- uninstall


@dataclass(frozen=True)
class UninstallPlan:
    stop: list[list[str]]  # run first: stop the daemon and disable it in the service manager
    files: list[Path]  # then removed: the service files and the links that enable them
    reload: list[list[str]]  # run last: the manager forgets the removed files


def uninstall_plan(kind: str, home: Path, env: dict[str, str], existing: list[Path]) -> UninstallPlan:
    """What `service uninstall` does for ``kind``. ``existing`` lists the files under the
    unit or agent directory (the caller reads the disk), so links left by `enable` in
    ``*.wants`` directories are removed even when the manager cannot be reached."""
    if kind == "systemd":
        directory = systemd_unit_dir(home, env)
        names = {SYSTEMD_SOCKET, SYSTEMD_SERVICE}
        ours = [directory / SYSTEMD_SOCKET, directory / SYSTEMD_SERVICE]
        links = sorted(
            p for p in existing if p.name in names and p.parent.parent == directory and p.parent.name.endswith(".wants")
        )
        return UninstallPlan(
            # Two steps: `disable` only edits links and works without a running user manager.
            stop=[
                ["systemctl", "--user", "stop", SYSTEMD_SOCKET, SYSTEMD_SERVICE],
                ["systemctl", "--user", "disable", SYSTEMD_SOCKET, SYSTEMD_SERVICE],
            ],
            files=[p for p in ours + links if p in existing],
            reload=[["systemctl", "--user", "daemon-reload"]],
        )
    if kind == "launchd":
        plist = home / "Library" / "LaunchAgents" / LAUNCHD_PLIST
        return UninstallPlan(
            stop=[["launchctl", "bootout", f"gui/{os.getuid()}/{LAUNCHD_LABEL}"]],
            files=[plist] if plist in existing else [],
            reload=[],
        )
    raise ValueError(f"unknown service manager {kind!r}")


def service_directory(kind: str, home: Path, env: dict[str, str]) -> Path:
    return systemd_unit_dir(home, env) if kind == "systemd" else home / "Library" / "LaunchAgents"


# --------------------------------------------------------------------------- effects


def list_service_directory(directory: Path) -> list[Path]:
    """Files and links in ``directory`` and its ``*.wants`` subdirectories."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if not p.is_dir() or p.is_symlink()]
    for wants in directory.glob("*.wants"):
        if wants.is_dir() and not wants.is_symlink():
            found += list(wants.iterdir())
    return found


def run_manager(command: list[str]) -> str | None:
    """Run a service-manager command; None when it worked, else why not (in one line)."""
    if shutil.which(command[0]) is None:
        return f"{command[0]} is not installed"
    import subprocess

    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    said = (done.stderr or done.stdout).strip().splitlines()
    return said[-1] if said else f"exit status {done.returncode}"


def remove_files(paths: list[Path]) -> list[Path]:
    """Remove each path that still exists; returns those removed."""
    removed = []
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


def find_executable() -> str:
    """Absolute path of the ``thinpatch`` command that is running, or the one on PATH."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "thinpatch" and os.path.isfile(argv0):
        return os.path.abspath(argv0)
    found = shutil.which("thinpatch")
    if found:
        return os.path.abspath(found)
    raise FileNotFoundError("cannot find the `thinpatch` executable on PATH; install thinpatch first")


def write_files(files: list[ServiceFile]) -> list[tuple[ServiceFile, str]]:
    """Write each file (atomically); returns (file, "created" | "updated" | "unchanged")."""
    results = []
    for item in files:
        item.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            previous = item.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            previous = None
        if previous == item.content:
            results.append((item, "unchanged"))
            continue
        temporary = item.path.with_name(f".{item.path.name}.tmp")
        temporary.write_text(item.content, encoding="utf-8")
        os.chmod(temporary, item.mode)
        os.replace(temporary, item.path)
        results.append((item, "created" if previous is None else "updated"))
    return results
