"""Why a patch could not be built: one exception class per cause, each worded for the user.

Every class derives from ``RebuildError``. ``str(error)`` is what events and the command
line show, so every message names the fix.
``writing_session`` turns an OSError while writing the session cache into SessionCacheError.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from capture.trust import UntrustedPath
from daemon.build.diagnostics import DiagnosticStream
from daemon.build.refusals import link_error_advice

RECAPTURE_HINT = "Run `thinpatch capture` in the workspace to record a fresh build."


class RebuildError(Exception):
    """Base class: a patch could not be built. ``str(err)`` is meant for the user."""


class UnsupportedEdit(RebuildError):
    """The edited crate cannot be hot-patched (a proc-macro, or not part of the program)."""


class MissingCapture(RebuildError):
    """The captures needed for this patch are absent, unreadable or out of date."""


class UntrustedTool(RebuildError):
    """A program the capture recorded, or a cargo config that chose it, could now have been
    written by someone else: it is not run. ``str()`` says which, why, and the fix."""


class ToolNotFound(RebuildError):
    def __init__(self, tool: str, program: str, reason: str = "not found") -> None:
        self.tool = tool
        self.program = program
        super().__init__(
            f"{tool} {reason}: {program}. The toolchain used at capture time has changed or "
            f"been removed. {RECAPTURE_HINT}"
        )


class ToolKilled(RebuildError):
    """The tool died from a signal it did not send itself (the OOM killer, a `kill -9`)."""

    def __init__(self, tool: str, signal_number: int, crate: str) -> None:
        self.tool = tool
        self.signal_number = signal_number
        try:
            name = signal.Signals(signal_number).name
        except ValueError:
            name = f"signal {signal_number}"
        super().__init__(
            f"{tool} was killed by {name} while building the patch for crate {crate} (out of memory, "
            "or stopped by another program). Nothing was patched; the next save builds again."
        )


class SessionCacheError(RebuildError):
    """The session cache (where patch objects and libraries go) cannot be written."""

    def __init__(self, root: Path, error: OSError) -> None:
        self.root = root
        if isinstance(error, UntrustedPath):  # its message names the directory and the fix
            super().__init__(f"cannot use the session cache at {root}: {error}")
            return
        where = f" ({error.filename})" if error.filename and str(error.filename) != str(root) else ""
        super().__init__(
            f"cannot write the session cache at {root}: {error.strerror or error}{where}. "
            "Make it a writable directory again (or free disk space), then save again."
        )


@contextmanager
def writing_session(root: Path) -> Iterator[None]:
    """Raise an OSError from inside the block as SessionCacheError for the session at ``root``."""
    try:
        yield
    except OSError as exc:
        raise SessionCacheError(root, exc) from exc


class CompileError(RebuildError):
    def __init__(self, crate: str, diagnostics: DiagnosticStream, argv: Sequence[str], returncode: int) -> None:
        self.crate = crate
        self.diagnostics = diagnostics
        self.argv = list(argv)
        self.returncode = returncode
        errors = diagnostics.errors
        if errors:
            lines = [d.summary() for d in errors if not d.is_summary]
            detail = "\n".join(lines or [d.summary() for d in errors])
        else:
            detail = "\n".join(diagnostics.other_lines[-20:]) or f"rustc exited with status {returncode}"
        super().__init__(f"crate {crate} does not compile:\n{detail}")


class LinkError(RebuildError):
    def __init__(self, stderr: str, argv: Sequence[str], returncode: int) -> None:
        self.stderr = stderr
        self.argv = list(argv)
        self.returncode = returncode
        self.advice = link_error_advice(stderr)
        tail = "\n".join(stderr.strip().splitlines()[-20:])
        if self.advice:
            first = next((line for line in stderr.splitlines() if "error" in line), "").strip()
            super().__init__(f"{self.advice}\nlinker: {first[:300]}" if first else self.advice)
            return
        super().__init__(
            f"linking the patch library failed (status {returncode}):\n{tail}\n"
            f"command: {' '.join(self.argv)}"
        )
