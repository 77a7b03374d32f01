"""The token a program on another host presents to the daemon's WebSocket endpoint.

One per daemon: 32 random bytes as 64 lowercase hex characters, kept in ``<runtime dir>/token``
(the directory of the daemon's Unix socket, 0700) with mode 0600. It is made once and reused,
so a device keeps working across daemon restarts. A file that is not a private regular file
of ours is never read: a fresh token replaces it. Writes go to a temporary file that is
fsynced and renamed over the old one, never through a symlink.

``token_refusal`` (pure) says why an ``Authorization`` header does not carry the token.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import stat
from pathlib import Path

TOKEN_NAME = "token"
TOKEN_BYTES = 32
_TOKEN = re.compile(r"[0-9a-f]{64}")

WRONG_TOKEN = "wrong token: use the token that `thinpatch token` prints on the host"
NO_TOKEN = "no token: set THINPATCH_TOKEN to the token that `thinpatch token` prints on the host"


class TokenError(RuntimeError):
    """The token file cannot be read or written; the message names the fix."""


def token_path(socket_path: Path) -> Path:
    """The token beside the daemon's socket, in its private runtime directory."""
    return socket_path.parent / TOKEN_NAME


def new_token() -> str:
    return secrets.token_hex(TOKEN_BYTES)


def is_token(text: str) -> bool:
    return bool(_TOKEN.fullmatch(text))


def token_refusal(authorization: str | None, token: str) -> str | None:
    """Why an upgrade request's ``Authorization`` header is refused, or ``None`` when it
    carries ``token`` as ``Bearer <token>``. The comparison takes the same time however many
    characters match."""
    if not authorization or not authorization.strip():
        return NO_TOKEN
    scheme, _, presented = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return NO_TOKEN
    if not hmac.compare_digest(presented.strip().encode(), token.encode()):
        return WRONG_TOKEN
    return None


def read_token(path: Path) -> str | None:
    """The token in ``path`` when it is ours, a regular file, private (0600 or stricter) and
    well formed; ``None`` otherwise (then a new one should replace it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077:
            return None
        text = os.read(fd, 256).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    return text if is_token(text) else None


def write_token(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` atomically, mode 0600, replacing whatever was there."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (token + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise TokenError(
            f"cannot write the token file {path}: {exc.strerror or exc}. "
            "Make its directory writable, or choose another socket path (--socket or THINPATCH_SOCKET)."
        ) from None


def load_or_create_token(socket_path: Path) -> str:
    """The daemon's token, made and saved the first time. The socket's directory must exist
    and be private (``socket_paths.prepare_socket_dir``)."""
    path = token_path(socket_path)
    token = read_token(path)
    if token is None:
        token = new_token()
        write_token(path, token)
    return token
