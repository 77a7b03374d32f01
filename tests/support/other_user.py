"""Act as another, unprivileged user (nobody) from a test that runs as root."""

from __future__ import annotations

import grp
import os
import pwd
import socket
from pathlib import Path


def connect_as_nobody(path: Path) -> bytes:
    """Fork, drop to nobody, connect, and return what the daemon sent (or the errno)."""
    nobody = pwd.getpwnam("nobody")
    try:
        nogroup = grp.getgrnam("nogroup").gr_gid
    except KeyError:
        nogroup = nobody.pw_gid
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nogroup)
            os.setuid(nobody.pw_uid)
            received = b""
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
                raw.settimeout(5)
                try:
                    raw.connect(os.fspath(path))
                except OSError as exc:
                    received = f"CONNECT-FAILED errno={exc.errno}".encode()
                else:
                    while chunk := raw.recv(65536):
                        received += chunk
            os.write(write_end, received)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(child, 0)
    return data
