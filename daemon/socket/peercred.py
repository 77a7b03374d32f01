"""Who is on the other end of a Unix socket, as the kernel reports it."""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class PeerCredentials:
    uid: int
    gid: int | None = None
    pid: int | None = None


def peer_credentials(sock: socket.socket) -> PeerCredentials | None:
    """The peer's uid (and pid/gid where the OS tells), or ``None`` if unavailable."""
    if hasattr(socket, "SO_PEERCRED"):  # Linux: struct ucred {pid_t pid; uid_t uid; gid_t gid;}
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        return PeerCredentials(uid=uid, gid=gid, pid=pid or None)
    if sys.platform == "darwin":
        # struct xucred {u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16];}
        sol_local, local_peercred = 0, 0x001
        raw = sock.getsockopt(sol_local, local_peercred, struct.calcsize("IIh2x16I"))
        _version, uid, ngroups, *groups = struct.unpack("IIh2x16I", raw)
        return PeerCredentials(uid=uid, gid=groups[0] if ngroups else None)
    return None
