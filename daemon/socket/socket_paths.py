"""Where the daemon's socket lives, and the private directory that holds it.

``$THINPATCH_SOCKET`` if set, else ``$XDG_RUNTIME_DIR/thinpatch/thinpatch.sock``, else
``<tempdir>/thinpatch-<uid>/thinpatch.sock``. The directory is 0700 and the socket 0600.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from capture.trust import untrusted_reason

ENV_SOCKET = "THINPATCH_SOCKET"
SOCKET_NAME = "thinpatch.sock"

# sun_path is 108 bytes on Linux and 104 on macOS, including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 103


class SocketPathError(RuntimeError):
    """The socket path or its directory cannot be used safely."""


def default_socket_path(env: dict[str, str] | None = None, uid: int | None = None) -> Path:
    environ: Mapping[str, str] = os.environ if env is None else env
    if environ.get(ENV_SOCKET):
        return Path(environ[ENV_SOCKET])
    runtime_dir = environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return Path(runtime_dir) / "thinpatch" / SOCKET_NAME
    uid = os.getuid() if uid is None else uid
    tmp = environ.get("TMPDIR") or tempfile.gettempdir()
    return Path(tmp) / f"thinpatch-{uid}" / SOCKET_NAME


def lock_path(socket_path: Path) -> Path:
    return socket_path.with_name(socket_path.name + ".lock")


def check_path_length(socket_path: Path) -> None:
    if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH_BYTES:
        raise SocketPathError(
            f"socket path is too long for a Unix socket ({len(os.fsencode(socket_path))} bytes, "
            f"limit {MAX_SOCKET_PATH_BYTES}): {socket_path}; set {ENV_SOCKET} to a shorter path"
        )


def prepare_socket_dir(socket_path: Path) -> Path:
    """Create the socket's directory 0700, or check an existing one is ours.

    A directory under a shared temp dir could have been created by someone else to
    intercept the socket, so an existing directory must belong to us. Our own
    ``thinpatch*`` directories are tightened to 0700; a directory the user chose through
    ``$THINPATCH_SOCKET`` keeps its mode (the socket itself is still 0600).
    """
    directory = socket_path.parent
    try:
        try:
            directory.mkdir(mode=0o700, parents=False)
        except FileNotFoundError:
            directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.mkdir(mode=0o700, exist_ok=True)
        except FileExistsError:
            pass
        info = os.lstat(directory)
    except OSError as exc:
        raise SocketPathError(
            f"cannot create the socket directory {directory}: {exc.strerror or exc}. "
            f"Choose a socket path in a directory you can write (--socket or {ENV_SOCKET})."
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise SocketPathError(f"{directory} exists and is not a directory")
    if not directory.name.startswith("thinpatch"):
        # Chosen by the user: its mode is theirs, but clients would refuse a directory
        # others can write, so the daemon refuses it first, with the same reason.
        reason = untrusted_reason(directory)
        if reason is not None:
            raise SocketPathError(
                f"refusing to put the socket in {directory}: {reason}. "
                f"Set --socket or {ENV_SOCKET} to a path in a directory only you can write."
            )
        return directory
    if info.st_uid != os.geteuid():
        raise SocketPathError(
            f"{directory} belongs to uid {info.st_uid}, not to you (uid {os.geteuid()}); "
            f"refusing to put the socket there. Remove it or set {ENV_SOCKET}."
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(directory, 0o700)
    return directory


def untrusted_socket_reason(socket_path: Path, uid: int | None = None) -> str | None:
    """Why a client must not talk to whatever listens at ``socket_path``, or ``None``.

    The directory must pass the trust rule (ours, nobody else can write it or a directory
    above it) and the socket file must be ours: otherwise another user could be listening
    there, and a client would load the libraries they name.
    """
    uid = os.geteuid() if uid is None else uid
    directory = socket_path.parent
    if not os.path.lexists(directory):
        return None  # nothing listens there; connecting will say so
    reason = untrusted_reason(directory, uid)
    if reason is not None:
        return f"the socket directory is not safe: {reason}"
    try:
        info = os.lstat(socket_path)
    except OSError:
        return None  # nothing listens there; connecting will say so
    if info.st_uid != uid:
        return f"{socket_path} belongs to uid {info.st_uid}, not to you (uid {uid})"
    return None
