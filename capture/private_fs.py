"""Opening and writing thinpatch's own directories without following symbolic links.

Every directory thinpatch writes (the capture root, session caches, the state dir, caches)
is reached from a trusted starting directory (``within``: checked with
``capture.trust.untrusted_reason``), then one component at a time through directory file
descriptors opened with ``O_NOFOLLOW``. A component that is a symbolic link, belongs to
someone else or is writable by others is refused before anything is written, with a
message that names the fix. Missing directories are made with mode 0700; an existing one is
never chmod-ed (it may not be ours to change).

Standard library only: the capture shims use this on every rustc call.
"""

from __future__ import annotations

import errno
import os
import stat

from capture.trust import UntrustedPath, _writable_by_others, untrusted_reason

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class RefusedPath(UntrustedPath):
    """A directory or file thinpatch won't write through. ``str()`` names it, why, and the fix."""

    def __init__(self, path: str, reason: str, fix: str) -> None:
        PermissionError.__init__(self, f"refusing to use {path}: {reason}. {fix}")
        self.path = path
        self.reason = reason
        self.fix = fix


def _link_refusal(path: str) -> RefusedPath:
    try:
        target = f" (to {os.readlink(path)})"
    except OSError:
        target = ""
    return RefusedPath(
        path,
        f"it is a symbolic link{target}, and thinpatch never writes through links in its own directories",
        f"Remove the link (rm {path}) and run the command again.",
    )


def _check_private_dir(fd: int, path: str) -> None:
    """Refuse a directory that is not ours alone. Never repairs it: it may be someone else's."""
    info = os.fstat(fd)
    uid = os.geteuid()
    if info.st_uid != uid:
        raise RefusedPath(
            path,
            f"it belongs to uid {info.st_uid}, not to you (uid {uid})",
            "Someone else made it: remove it, or point thinpatch at a directory of your own.",
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and _writable_by_others(info, uid):
        raise RefusedPath(
            path,
            f"it is writable by other users (mode {stat.S_IMODE(info.st_mode):04o})",
            f"Run `chmod 700 {path}` (or remove it) and run the command again.",
        )


def _open_within(within: str, create: bool) -> int:
    """The trusted starting directory, opened (it may be a link of the user's own choosing)."""
    if create and not os.path.isdir(within):
        os.makedirs(within, 0o700, exist_ok=True)
    fd = os.open(within, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        reason = untrusted_reason(within)
        if reason is not None:
            raise UntrustedPath(within, reason)
        opened, checked = os.fstat(fd), os.stat(within)
        if (opened.st_dev, opened.st_ino) != (checked.st_dev, checked.st_ino):
            raise UntrustedPath(within, "it was replaced while thinpatch opened it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_child(parent: int, name: str, path: str, create: bool) -> int:
    for attempt in (1, 2):
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            break
        except FileNotFoundError:
            if not create or attempt == 2:
                raise
            try:
                os.mkdir(name, 0o700, dir_fd=parent)
            except FileExistsError:
                pass  # made meanwhile by another of our processes; checked below
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                if stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                    raise _link_refusal(path) from None
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", path) from None
            raise
    try:
        _check_private_dir(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _parts_below(path: str, within: str) -> list[str]:
    rel = os.path.relpath(path, within)
    if rel == os.curdir:
        return []
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise ValueError(f"{path} is not inside {within}")
    return rel.split(os.sep)


def open_dir(path: str | os.PathLike[str], within: str | os.PathLike[str] | None = None, create: bool = True) -> int:
    """A file descriptor of the directory ``path``, reached from the trusted directory
    ``within`` (default: ``path``'s parent) without following links; missing directories
    below ``within`` are made 0700 when ``create``. Raises :class:`RefusedPath` or
    ``UntrustedPath`` (both OSError) before anything is written."""
    target = os.path.abspath(os.fspath(path))
    base = os.path.dirname(target) if within is None else os.path.abspath(os.fspath(within))
    parts = _parts_below(target, base)
    fd = _open_within(base, create)
    where = base
    try:
        for part in parts:
            where = os.path.join(where, part)
            child = _open_child(fd, part, where, create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_dirs(path: str | os.PathLike[str], within: str | os.PathLike[str] | None = None) -> None:
    """Make (or check) the private directory ``path`` below ``within``; see :func:`open_dir`."""
    os.close(open_dir(path, within))


def make_subdirs(
    path: str | os.PathLike[str], names: tuple[str, ...], within: str | os.PathLike[str] | None = None
) -> None:
    """Make (or check) the private directory ``path`` and each of its subdirectories ``names``
    in one walk; see :func:`open_dir`."""
    fd = open_dir(path, within)
    try:
        for name in names:
            os.close(_open_child(fd, name, os.path.join(os.path.abspath(os.fspath(path)), name), True))
    finally:
        os.close(fd)


def open_file(
    path: str | os.PathLike[str], flags: int, within: str | os.PathLike[str] | None = None, mode: int = 0o600
) -> int:
    """Open the file ``path`` in a private directory (see :func:`open_dir`) with ``O_NOFOLLOW``:
    a link or someone else's file is refused."""
    target = os.path.abspath(os.fspath(path))
    parent = open_dir(os.path.dirname(target), within, create=bool(flags & os.O_CREAT))
    name = os.path.basename(target)
    try:
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _link_refusal(target) from None
            raise
    finally:
        os.close(parent)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(info.st_mode) else f"owned by uid {info.st_uid}, not you"
        raise RefusedPath(target, f"it is {what}", f"Remove it (rm {target}) and run the command again.")
    return fd


def write_atomic(
    path: str | os.PathLike[str], data: bytes, within: str | os.PathLike[str] | None = None, mode: int = 0o600
) -> None:
    """Replace the file ``path`` with ``data`` whole or not at all: a temp file beside it
    (``O_EXCL|O_NOFOLLOW``), written and fsync-ed, then renamed over it. A full disk leaves
    the previous file as it was. ``within`` defaults to the directory above ``path``'s."""
    target = os.path.abspath(os.fspath(path))
    name = os.path.basename(target)
    parent = open_dir(os.path.dirname(target), within)
    try:
        # A unique sibling (not `tempfile`, which costs every rustc call its import).
        tmp = f".{name}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=parent)
        try:
            try:
                os.fchmod(fd, mode)  # our new file: the umask must not widen or narrow it
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=parent)
            except OSError:
                pass
            raise
    finally:
        os.close(parent)


def describe_os_error(exc: OSError) -> str:
    """An OSError in plain words, naming the fix where the cause is the environment's."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk is full{where}: free some space and run the command again"
    if exc.errno == errno.EROFS:
        return f"the file system is read-only{where}"
    return f"{exc.strerror or exc}{where}"
