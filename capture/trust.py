"""Whether a file or directory can be trusted: nobody but this user could have written it.

thinpatch runs the compilers and linkers that capture records name, and its clients load
the libraries a socket tells them about. So every record, capture root, registry entry,
session cache and socket directory is used only when:

- it belongs to this user and is not writable by group or others (group write is fine
  when the group is the user's private group, as with umask 002), and
- every directory above it either belongs to this user and is not writable by others (that
  directory is ours: the walk stops there), or belongs to root and is not writable by others,
  or is a sticky directory such as ``/tmp`` (others can't rename what we own in it).

Standard library only: the capture shims import the store, which imports this.
"""

from __future__ import annotations

import os
import stat

_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


class UntrustedPath(PermissionError):
    """A path someone else could have written. ``str()`` names the path, the reason and the fix."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"refusing to use {path}: {reason}. Someone else could have planted it; "
            "remove it (or fix its owner and mode) and run the command again."
        )
        self.path = path
        self.reason = reason


def _private_group(gid: int, uid: int) -> bool:
    """A user private group (the umask-002 convention): named after the user, whose
    primary group it is, with no other members. Group write there is the user's own."""
    import grp
    import pwd

    try:
        user = pwd.getpwuid(uid)
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    if user.pw_gid != gid or group.gr_name != user.pw_name or not set(group.gr_mem) <= {user.pw_name}:
        return False
    return not any(other.pw_gid == gid and other.pw_uid != uid for other in pwd.getpwall())


def _writable_by_others(info: os.stat_result, uid: int) -> bool:
    if info.st_mode & stat.S_IWOTH:
        return True
    return bool(info.st_mode & stat.S_IWGRP) and not _private_group(info.st_gid, uid)


def untrusted_reason(path: str | os.PathLike[str], uid: int | None = None) -> str | None:
    """Why ``path`` can't be trusted by ``uid`` (default: this process's user), or ``None``.

    Symlinks are followed (the link's target is what is read); the directories above the
    target are checked. A missing path is reported as such.
    """
    uid = os.geteuid() if uid is None else uid
    try:
        real = os.path.realpath(os.fspath(path))
        info = os.stat(real)
    except OSError as exc:
        return f"{os.fspath(path)} can't be read ({exc.strerror or exc})"
    if info.st_uid != uid:
        return f"{real} belongs to uid {info.st_uid}, not to you (uid {uid})"
    if info.st_mode & _WRITABLE_BY_OTHERS and _writable_by_others(info, uid):
        return f"{real} is writable by other users (mode {stat.S_IMODE(info.st_mode):04o})"
    child = real
    while True:
        parent = os.path.dirname(child)
        if parent == child:
            return None
        try:
            pinfo = os.stat(parent)
        except OSError as exc:
            return f"{parent} can't be read ({exc.strerror or exc})"
        writable = bool(pinfo.st_mode & _WRITABLE_BY_OTHERS) and _writable_by_others(pinfo, uid)
        sticky = pinfo.st_mode & stat.S_ISVTX
        if pinfo.st_uid == uid and not writable:
            return None  # our own private directory: nobody else can swap what is below it
        if pinfo.st_uid not in (uid, 0):
            return f"{parent}, a directory above it, belongs to uid {pinfo.st_uid}"
        if writable and not sticky:
            mode = stat.S_IMODE(pinfo.st_mode)
            return f"{parent}, a directory above it, is writable by other users (mode {mode:04o})"
        child = parent


def require_trusted(path: str | os.PathLike[str], uid: int | None = None) -> None:
    """Raise :class:`UntrustedPath` unless ``path`` passes :func:`untrusted_reason`."""
    reason = untrusted_reason(path, uid)
    if reason is not None:
        raise UntrustedPath(os.fspath(path), reason)


def is_trusted(path: str | os.PathLike[str], uid: int | None = None) -> bool:
    return untrusted_reason(path, uid) is None
