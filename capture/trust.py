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


# --------------------------------------------------------------------------- files other tools read
#
# Cargo's manifests and configs, compilers and linkers may belong to root (a system toolchain)
# as well as to this user; everything else is the rule above, applied to the whole path: every
# directory above, up to ``/``, and the directory holding each symbolic link on the way.


class Distrust:
    """Who else could have written ``path``: ``problem`` completes "``path`` …" in a sentence."""

    __slots__ = ("path", "problem")

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem

    def __repr__(self) -> str:
        return f"Distrust({self.path!r}, {self.problem!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Distrust) and (self.path, self.problem) == (other.path, other.problem)

    def __hash__(self) -> int:
        return hash((self.path, self.problem))


def owner_name(uid: int) -> str:
    """``mallory (uid 1001)``, or ``uid 1001`` when the user has no name."""
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _foreign_problem(info: os.stat_result, uid: int, is_dir: bool) -> str | None:
    if info.st_uid not in (uid, 0):
        return f"is owned by {owner_name(info.st_uid)}"
    if info.st_mode & _WRITABLE_BY_OTHERS and _writable_by_others(info, uid):
        if is_dir and info.st_mode & stat.S_ISVTX:
            return None  # sticky, like /tmp: others can't replace what is not theirs
        who = "everyone" if info.st_mode & stat.S_IWOTH else "its group"
        return f"is writable by {who} (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def _links_on_the_way(path: str) -> list[str]:
    """``path`` and each symbolic link it leads through to its final name (not the last)."""
    current = os.path.abspath(path)
    links = [current]
    for _ in range(40):  # the kernel's own limit on links followed
        try:
            target = os.readlink(current)
        except OSError:
            break
        current = os.path.normpath(os.path.join(os.path.dirname(current), target))
        links.append(current)
    return links


def _directories_holding(path: str) -> list[str]:
    """Every directory whose owner could replace what ``path`` names: those above it as
    written, those above what it finally names, and those holding each symbolic link."""
    held: list[str] = []

    def above(p: str) -> None:
        parent = os.path.dirname(p)
        while parent not in held:
            held.append(parent)
            if os.path.dirname(parent) == parent:
                return
            parent = os.path.dirname(parent)

    for hop in _links_on_the_way(path):
        above(hop)
        above(os.path.join(os.path.realpath(os.path.dirname(hop)), os.path.basename(hop)))
    above(os.path.realpath(path))
    return held


def foreign_writer(path: str | os.PathLike[str], uid: int | None = None) -> Distrust | None:
    """Whether anyone but ``uid`` (default: this process's user) and root could have written
    ``path`` (a file or a directory) or could swap it for another, or ``None``: it, each
    symbolic link on the way and what it finally names are owned by ``uid`` or root, none is
    writable by anyone else, and so is every directory above them, or that directory is
    sticky. A missing path is no problem (nothing to read); a link to nothing is (whoever can
    create what it names decides what is read)."""
    uid = os.geteuid() if uid is None else uid
    text = os.fspath(path)
    if not os.path.lexists(text):
        return None
    for hop in _links_on_the_way(text)[:-1]:
        try:
            link = os.lstat(hop)
        except OSError:
            break
        if link.st_uid not in (uid, 0):
            return Distrust(hop, f"is a symbolic link owned by {owner_name(link.st_uid)}")
    try:
        real = os.path.realpath(text)
        info = os.stat(real)
    except OSError:
        return Distrust(os.path.abspath(text), f"is a symbolic link to {real}, which does not exist")
    problem = _foreign_problem(info, uid, stat.S_ISDIR(info.st_mode))
    if problem is not None:
        return Distrust(real, problem)
    for directory in _directories_holding(text):
        try:
            dinfo = os.stat(directory)
        except OSError as exc:
            return Distrust(directory, f"can't be examined ({exc.strerror or exc})")
        problem = _foreign_problem(dinfo, uid, is_dir=True)
        if problem is not None:
            return Distrust(directory, problem)
    return None
