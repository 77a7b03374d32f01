"""One `thinpatch run` per project: a lock file in the project's capture root.

`run` holds an exclusive flock on ``<target>/thinpatch/run.lock`` for as long as it lives
and writes its pid into the file. The kernel drops the lock when the process ends, however
it ends, so a file left behind by a crashed `run` never blocks the next one: the pid text
only says who holds the lock, and counts only while the lock is held. `thinpatch restart`
finds the project's `run` the same way.

The file is this user's (checked after opening, with every directory above it, as every file
thinpatch uses is), mode 0600, opened without following a symbolic link, in a directory made 0700.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import subprocess
import time
from pathlib import Path

from capture import store
from capture.trust import UntrustedPath, untrusted_reason

LOCK_NAME = "run.lock"
READ_PID_WAIT_S = 1.0  # a new holder writes its pid right after taking the lock
PROBE_WAIT_S = 0.3  # `thinpatch restart` holds the lock shared only while it looks


class RunLockError(Exception):
    """The lock file can't be used (not ours, not a regular file, unreadable)."""


class RunActive(Exception):
    """Another `run` holds the project's lock."""

    def __init__(self, pid: int | None) -> None:
        super().__init__(pid)
        self.pid = pid


def refusal(pid: int | None) -> str:
    who = f"another thinpatch run (pid {pid})" if pid else "another thinpatch run"
    return (
        f"{who} is running this project; stop it first (Ctrl-C in its terminal) or use it: "
        "it patches on every save, and `thinpatch restart` makes it rebuild and restart the program"
    )


def parse_pid(text: str) -> int | None:
    """The pid in a lock file's text; None when it holds no plausible pid."""
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        return None
    pid = int(text)
    return pid if 1 < pid < 2**31 else None


def lock_path(capture_root: Path) -> Path:
    return capture_root / LOCK_NAME


def capture_root_of(workspace: Path) -> Path:
    """Where `thinpatch capture` keeps this workspace's records: ``<target dir>/thinpatch``,
    with the target directory as cargo reports it (CARGO_TARGET_DIR, .cargo/config.toml)."""
    try:
        out = subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1"],
            cwd=workspace, capture_output=True, text=True, timeout=60,
        )
        if out.returncode == 0:
            return Path(json.loads(out.stdout)["target_directory"]) / store.CAPTURE_DIRNAME
    except (OSError, ValueError, KeyError, subprocess.SubprocessError):
        pass
    return workspace / "target" / store.CAPTURE_DIRNAME


def _open_checked(path: Path, flags: int) -> int:
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunLockError(f"{path} is a symbolic link; remove it") from None
        raise RunLockError(f"cannot open {path}: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        os.close(fd)
        raise RunLockError(f"{path} is not a file of yours; remove it")
    reason = untrusted_reason(path)  # the directories above it, as for every file thinpatch uses
    if reason is not None:
        os.close(fd)
        raise RunLockError(f"{path} can't be trusted: {reason}")
    return fd


def _read_pid(fd: int) -> int | None:
    deadline = time.monotonic() + READ_PID_WAIT_S
    while True:
        pid = parse_pid(os.pread(fd, 64, 0).decode(errors="replace"))
        if pid is not None or time.monotonic() > deadline:
            return pid
        time.sleep(0.02)


def hold(capture_root: Path) -> int:
    """Take the project's run lock and write this process's pid into it; the returned file
    descriptor holds the lock until it is closed or the process ends. Raises RunActive when
    another `run` holds it."""
    try:
        store.ensure_private_dir(capture_root, within=store.capture_base(capture_root))
    except UntrustedPath as exc:  # a link, or someone else's: refused, never repaired
        raise RunLockError(f"{capture_root} can't be trusted: {exc}") from None
    except OSError as exc:
        raise RunLockError(f"cannot make {capture_root}: {exc.strerror or exc}") from None
    path = lock_path(capture_root)
    fd = _open_checked(path, os.O_RDWR | os.O_CREAT)
    try:
        os.fchmod(fd, 0o600)
        deadline = time.monotonic() + PROBE_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # `thinpatch restart` holds it shared for an instant while it looks
                if time.monotonic() > deadline:
                    raise RunActive(_read_pid(fd)) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def holder(capture_root: Path) -> int | None:
    """The pid of the `run` holding the project's lock; None when no `run` holds it (no file,
    or a file whose lock nobody holds: what a finished or crashed `run` leaves)."""
    path = lock_path(capture_root)
    try:
        fd = _open_checked(path, os.O_RDONLY)
    except RunLockError:
        if not os.path.lexists(path):
            return None
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            if pid is None:
                raise RunLockError(f"{path} is locked but names no pid") from None
            return pid
        return None  # we got it: nobody else holds it (closing the file releases it)
    finally:
        os.close(fd)
