"""A save's capture build, started beside its patch build and held until the save's verdict.

When a save holds a change no patch can carry, `thinpatch run` builds the whole program under
capture and restarts it. The daemon only knows that once its patch build is compiled and
analysed, and cargo then still has to start: read the workspace, check what is fresh, start
the shims. An early build starts cargo when the patch build starts, and holds every compile
at the shim's gate (``capture.build_gate``) until the verdict:

* the save needs a restart: the build goes ahead from where cargo stands (:meth:`go`);
* a patch carries the save (or its build failed): it is called off (:meth:`call_off`) before
  it compiled or recorded anything, and shows nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from daemon.cli.capture_run import BuildHold, CalledOff


class EarlyBuild:
    """One held capture build. ``before``: the manifest contents when it started (what the
    build answered, for `thinpatch run`'s check that a manifest change is already built)."""

    def __init__(self, before: dict[str, str | None]) -> None:
        self.before = before
        self.done = anyio.Event()
        self._hold = BuildHold()
        self._error: Exception | None = None

    @property
    def decided(self) -> bool:
        return self._hold.decided

    async def run(self, build: Callable[[BuildHold], Awaitable[object]]) -> None:
        """``build`` (a capture build under this hold) to its end; what it raised is kept for
        :meth:`go`."""
        try:
            await build(self._hold)
        except CalledOff:  # (only ever after call_off)
            pass
        except Exception as exc:  # a RunError, said where the build is awaited
            self._error = exc
        finally:
            self.done.set()

    async def go(self) -> None:
        """Let the build go ahead (only while it is undecided) and wait for it; raises what
        the build raised."""
        self._hold.go()
        await self.done.wait()
        if self._error is not None:
            raise self._error

    def call_off(self) -> None:
        """No restart: the build stops before compiling anything (see :meth:`settle`)."""
        self._hold.call_off()

    async def settle(self) -> None:
        """Called off, and ended: cargo has exited and the sources' times are back."""
        self.call_off()
        await self.done.wait()
