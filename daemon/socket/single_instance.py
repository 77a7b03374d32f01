"""One daemon per socket: bind under a lock, clean up stale sockets, refuse a second daemon.

The lock (``<socket>.lock``, flock) is held for the daemon's whole life, so it is released
by the kernel even after SIGKILL. A socket file left behind by a dead daemon refuses
connections: that is how it is recognised as stale and removed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from daemon.socket.socket_paths import check_path_length, lock_path, prepare_socket_dir

LISTEN_BACKLOG = 128


class DaemonAlreadyRunning(RuntimeError):
    def __init__(self, path: Path, pid: int | None) -> None:
        who = f" (pid {pid})" if pid else ""
        super().__init__(f"thinpatch daemon already running at {path}{who}")
        self.path = path
        self.pid = pid


@dataclass(frozen=True)
class ProbeResult:
    state: str  # "absent", "stale" or "running"
    pid: int | None = None


def probe(path: Path, timeout: float = 1.0) -> ProbeResult:
    """Is a daemon answering at ``path``? Reads its hello to learn its pid."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return ProbeResult("absent")
    if not stat.S_ISSOCK(info.st_mode):
        raise RuntimeError(f"{path} exists and is not a socket; refusing to replace it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except FileNotFoundError:
            return ProbeResult("absent")
        except ConnectionRefusedError:
            return ProbeResult("stale")
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return ProbeResult("stale")
            raise
        return ProbeResult("running", _read_hello_pid(sock))


def _read_hello_pid(sock: socket.socket) -> int | None:
    data = b""
    try:
        while b"\n" not in data and len(data) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        hello = json.loads(data.split(b"\n", 1)[0])
    except (OSError, ValueError):
        return None
    pid = hello.get("pid") if isinstance(hello, dict) else None
    return pid if isinstance(pid, int) else None


@dataclass
class BoundSocket:
    """A listening socket and what must be undone when the daemon exits."""

    sock: socket.socket
    path: Path | None
    lock_fd: int | None = None
    identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket file we created

    def release(self) -> None:
        """Remove the socket file if it is still the one we created, and drop the lock."""
        if self.path is not None and self.identity is not None:
            try:
                info = os.lstat(self.path)
                if (info.st_dev, info.st_ino) == self.identity:
                    os.unlink(self.path)
            except FileNotFoundError:
                pass
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def bind_or_fail(path: Path, *, probe_timeout: float = 1.0) -> BoundSocket:
    """Bind and listen at ``path`` (0600 in a 0700 directory), or raise DaemonAlreadyRunning."""
    path = Path(path)
    check_path_length(path)
    prepare_socket_dir(path)
    lock_fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DaemonAlreadyRunning(path, _pid_of_lock_holder(path, probe_timeout)) from None
        found = probe(path, probe_timeout)
        if found.state == "running":
            raise DaemonAlreadyRunning(path, found.pid)
        if found.state == "stale":
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(os.fspath(path))
            os.chmod(path, 0o600)
            sock.listen(LISTEN_BACKLOG)
            info = os.lstat(path)
        except BaseException:
            sock.close()
            raise
        return BoundSocket(sock, path, lock_fd, (info.st_dev, info.st_ino))
    except BaseException:
        os.close(lock_fd)
        raise


def _pid_of_lock_holder(path: Path, timeout: float) -> int | None:
    # The holder may still be starting up: give its socket a moment to appear.
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = probe(path, timeout)
        except (OSError, RuntimeError):
            return None
        if found.state == "running" or time.monotonic() >= deadline:
            return found.pid
        time.sleep(0.05)
