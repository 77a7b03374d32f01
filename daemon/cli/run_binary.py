"""Whether `thinpatch run` may start a captured binary: nobody else could have replaced it,
and it is a program this machine loads (ELF or Mach-O).

A build ID names what a binary was built from, not who wrote the file: another user who can
write ``target/debug/deps`` (or any directory above it inside the workspace) can put a
program of their own there carrying the same build ID. So every directory from the binary's
up to the workspace root must pass the trust rule of ``capture.trust``, checked right before
the program starts.
"""

from __future__ import annotations

import os
import re
import shlex

from capture.trust import untrusted_reason

# The first four bytes of the executables thinpatch builds patches for.
EXECUTABLE_MAGICS = (
    b"\x7fELF",
    b"\xfe\xed\xfa\xcf",  # Mach-O 64-bit, big-endian
    b"\xcf\xfa\xed\xfe",  # Mach-O 64-bit, little-endian
    b"\xfe\xed\xfa\xce",  # Mach-O 32-bit
    b"\xce\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",  # universal (fat) Mach-O
)


def directories_to_check(binary: str, workspace: str) -> list[str]:
    """The binary's directory and each one above it up to the workspace root (pure: real
    paths in). A binary outside the workspace (a shared CARGO_TARGET_DIR): its own
    directory only; the trust rule walks on from there."""
    inside = os.path.join(workspace, "")
    directory = os.path.dirname(binary)
    if not directory.startswith(inside) and directory != workspace:
        return [directory]
    chain = [directory]
    while directory != workspace:
        directory = os.path.dirname(directory)
        chain.append(directory)
    return chain


_NAMED_PATH = re.compile(r"^(.*?)(?:, a directory above it,)? (?:is writable|belongs to)")


def fix_for(reason: str, directory: str) -> str:
    """The fix for an :func:`untrusted_reason` about ``directory`` (or the one it names above)."""
    named = _NAMED_PATH.match(reason)
    directory = named.group(1) if named else directory
    quoted = shlex.quote(directory)
    if "belongs to uid" in reason:
        return f"remove {quoted} (or make it yours) and build again with `thinpatch capture`"
    return f"`chmod go-w {quoted}`, then run again"


def binary_refusal(binary: str, workspace: str) -> str | None:
    """Why ``binary`` must not be started (None: it may), in one line that names the fix."""
    try:
        real = os.path.realpath(binary)
        real_workspace = os.path.realpath(workspace)
    except OSError as exc:
        return f"{binary} can't be read ({exc.strerror or exc}); build it again with `thinpatch capture`"
    for directory in directories_to_check(real, real_workspace):
        reason = untrusted_reason(directory)
        if reason is not None:
            return (
                f"refusing to run {binary}: {reason}, so another user could replace the program before "
                f"it starts. Fix: {fix_for(reason, directory)}"
            )
    reason = untrusted_reason(real)
    if reason is not None:
        if "can't be read" in reason:
            return f"{reason}; build it again with `thinpatch capture`"
        return f"refusing to run {binary}: {reason}, so another user could have replaced it. Fix: " + fix_for(
            reason, real
        )
    return not_an_executable(real)


def not_an_executable(path: str) -> str | None:
    """A plain message when ``path`` is not an ELF or Mach-O file (a script, a truncated or
    overwritten build), else None."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        return f"{path} can't be read ({exc.strerror or exc}); build it again with `thinpatch capture`"
    if magic not in EXECUTABLE_MAGICS:
        return (
            f"{path} is not a program thinpatch can run (not an ELF or Mach-O executable): something "
            "overwrote the build. Build it again with `thinpatch capture`"
        )
    return None
