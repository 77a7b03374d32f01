"""A held capture build: the rustc shim waits at a gate before its first compile.

``thinpatch run`` starts the capture build of a save while the daemon is still deciding whether
a patch can carry it, so that cargo's own start (reading the workspace, checking what is fresh)
overlaps that decision. Until the decision, nothing may be recorded or compiled: the shim holds
every compile at the gate.

The gate is a pipe whose read end cargo passes down to us; the side that holds the write end
decides:

* *go*: it writes one byte and keeps it there (nobody reads it), so every held compile, and
  every later one, finds data waiting: compile and record as usual;
* *stop*: it closes the write end with nothing written (as its death does): exit without
  running rustc, so cargo stops with nothing recorded and nothing built.
"""

from __future__ import annotations

import fcntl
import os
import select
import sys
import termios

ENV_GATE = "THINPATCH_BUILD_GATE"  # the read end's descriptor number
CALLED_OFF_EXIT = 75  # EX_TEMPFAIL: the build was not wanted after all


def gate_fd(value: str) -> int | None:
    return int(value) if value.isdigit() else None


def wait_at_gate(value: str) -> bool:
    """Block until the build is decided: True to compile, False when it was called off, its
    holder is gone, or the gate can't be read (never compile without a clear go)."""
    fd = gate_fd(value)
    if fd is None:
        return False
    try:
        select.select([fd], [], [])
        # data (go) or end of file (stop), left unread
        waiting = fcntl.ioctl(fd, termios.FIONREAD, bytes(4))
        return int.from_bytes(waiting, sys.byteorder) > 0
    except (OSError, ValueError):
        return False


def close_gate(value: str) -> None:
    """The gate's descriptor is ours, not rustc's: closed before exec."""
    fd = gate_fd(value)
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


class GateHolder:
    """The holding side: the pipe's write end stays here (it is not inherited), its read end
    goes to cargo (``pass_fds``) and is named in cargo's environment (``env``)."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()
        self.decided = False

    def env(self) -> dict[str, str]:
        return {ENV_GATE: str(self.read_fd)}

    def go(self) -> None:
        if not self.decided:
            self.decided = True
            os.write(self._write_fd, b"g")  # stays unread until the pipe is gone

    def stop(self) -> None:
        if not self.decided:
            self.decided = True
            self._close_write()

    def close(self) -> None:
        """Once cargo is done: nothing waits at the gate any more (stops it if undecided)."""
        self.decided = True
        self._close_write()
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1

    def _close_write(self) -> None:
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1
