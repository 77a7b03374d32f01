"""systemd integration in pure Python: socket activation and sd_notify.

Socket activation: systemd passes listening sockets as fds 3, 4, … and sets
``LISTEN_FDS`` (how many) and ``LISTEN_PID`` (our pid, so a child that inherited the
environment does not take them too).

Notification: ``NOTIFY_SOCKET`` names an AF_UNIX datagram socket (a leading ``@`` means
the abstract namespace) to which we send ``READY=1``, ``STOPPING=1`` and ``STATUS=…``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, MutableMapping

LISTEN_FDS_START = 3


def listen_fds(env: dict[str, str] | None = None, *, unset: bool = True) -> list[int]:
    """The fds systemd passed us, or ``[]`` when we were not socket-activated.

    With ``unset`` (the default, as sd_listen_fds does) the variables are removed from
    ``os.environ`` so the builds we spawn do not see them.
    """
    environ: MutableMapping[str, str] = os.environ if env is None else env
    try:
        pid = int(environ.get("LISTEN_PID", ""))
        count = int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    if pid != os.getpid() or count < 1:
        return []
    if unset:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            environ.pop(name, None)
    fds = list(range(LISTEN_FDS_START, LISTEN_FDS_START + count))
    for fd in fds:
        os.set_inheritable(fd, False)
    return fds


def activated_unix_listener(env: dict[str, str] | None = None) -> socket.socket | None:
    """The first activated fd as a listening AF_UNIX stream socket, or ``None``."""
    fds = listen_fds(env)
    if not fds:
        return None
    sock = socket.socket(fileno=fds[0])
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        family, kind = sock.family, sock.type
        sock.detach()
        raise RuntimeError(
            f"socket activation passed fd {fds[0]} of family {family!r} and type {kind!r}; "
            "expected a Unix stream socket (ListenStream= with a path)"
        )
    return sock


def notify(state: str, env: dict[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to ``$NOTIFY_SOCKET``. False when there is none.

    Errors are swallowed: a daemon must not die because its supervisor went away.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False  # vsock and other transports are not used for user services
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def notify_ready(status: str | None = None, env: dict[str, str] | None = None) -> bool:
    lines = ["READY=1"]
    if status:
        lines.append(f"STATUS={_one_line(status)}")
    return notify("\n".join(lines), env)


def notify_stopping(env: dict[str, str] | None = None) -> bool:
    return notify("STOPPING=1", env)


def notify_status(status: str, env: dict[str, str] | None = None) -> bool:
    return notify(f"STATUS={_one_line(status)}", env)


def _one_line(text: str) -> str:
    return " ".join(text.split())
