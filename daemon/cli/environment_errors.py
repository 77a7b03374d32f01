"""Failures the environment causes (a full disk, a file of another user's, a missing tool),
told apart from thinpatch's own bugs, each as one line that names the fix.

Commands raise :class:`EnvironmentProblem` (or its kinds) for what they recognise themselves;
anything else that reaches the command line is classified here by type and errno, so no
full disk or permission problem is ever reported as an internal error.
"""

from __future__ import annotations

import errno
import os

from capture.trust import UntrustedPath


class EnvironmentProblem(Exception):
    """A problem with the machine, not with thinpatch: ``str()`` says what and the fix."""


class ToolMissing(EnvironmentProblem):
    """A program thinpatch runs (cargo, rustc, a linker) is not installed or not on PATH."""


class NotOurs(EnvironmentProblem):
    """A file or directory another user could have written (see ``capture.trust``)."""


def _where(exc: OSError) -> str:
    names = [os.fsdecode(n) for n in (exc.filename, exc.filename2) if n is not None]
    return f" ({' → '.join(names)})" if names else ""


# errno -> what it means and the fix; the file involved is added when the error names one.
_OS_ERRORS: dict[int, str] = {
    errno.ENOSPC: "the disk is full{where}. Free some space, then run the command again",
    errno.EDQUOT: "your disk quota is used up{where}. Free some space, then run the command again",
    errno.EROFS: "the file system is read-only{where}. Use a writable directory (or remount it), then run again",
    errno.EACCES: "permission denied{where}. Check the owner and mode (`ls -ld`), then run again",
    errno.EPERM: "operation not permitted{where}. Check the owner and mode (`ls -ld`), then run again",
    errno.ELOOP: "a symbolic link stands where thinpatch needs a real file or directory{where}. "
    "Remove the link, then run again",
    errno.EMFILE: "too many open files{where}. Raise the limit (`ulimit -n 4096`), then run again",
    errno.ENFILE: "the system has too many open files. Close some programs, then run again",
    errno.ENOMEM: "out of memory. Close some programs, then run again",
    errno.EISDIR: "a directory stands where a file is expected{where}. Remove or rename it, then run again",
    errno.ENOTDIR: "a file stands where a directory is expected{where}. Remove or rename it, then run again",
    errno.ENOENT: "a file or directory is missing{where}. Check the path, or build again with `thinpatch capture`",
    errno.EIO: "an input/output error from the disk{where}. Check the disk, then run again",
}


def environment_message(exc: BaseException) -> str | None:
    """The one-line message for a failure the environment caused, or None for a bug."""
    if isinstance(exc, (EnvironmentProblem, UntrustedPath)):
        return str(exc)
    if isinstance(exc, OSError):
        template = _OS_ERRORS.get(exc.errno or 0)
        if template is not None:
            return template.format(where=_where(exc))
        if exc.errno is not None:
            return f"{exc.strerror or exc}{_where(exc)}. Fix the cause, then run the command again"
    if isinstance(exc, MemoryError):
        return _OS_ERRORS[errno.ENOMEM]
    return None


def first_of(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first ``kind`` inside ``exc``, which may be an exception group (from a task group)."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_of(inner, kind)
            if found is not None:
                return found
    return None
