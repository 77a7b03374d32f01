"""One build at a time per workspace; a newer edit restarts or queues behind it.

The scheduler knows nothing about rustc: it calls ``build(request)`` and cancels that
call when a newer edit supersedes it (policy "restart"), or lets it finish and then
builds the merged newer edits (policy "queue"). Either way the final build always sees
the final content, and a burst of saves collapses into a few builds.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from capture.store import CrateKey

POLICIES = ("restart", "queue")

# A build that starts less than BURST_WINDOW_S after another was superseded is part of a
# burst (auto-save, a formatter, a script): wait BURST_SETTLE_S for the burst to end before
# building. The OS watcher reports a file saved over and over about every 100 ms, so without
# this each report would start (and cancel) a rustc. A single save is never delayed.
BURST_WINDOW_S = 1.0
BURST_SETTLE_S = 0.25


# A build that only fills caches (rustc's incremental state, the program's symbols) when a
# session starts, so the first save is as fast as later ones. A real request supersedes it.
WARM_UP = "warm-up"


@dataclass(frozen=True)
class BuildRequest:
    workspace: str
    crates: frozenset[CrateKey] = frozenset()
    files: frozenset[str] = frozenset()
    reason: str = "edit"

    def merged(self, newer: BuildRequest | None) -> BuildRequest:
        if newer is None:
            return self
        return BuildRequest(
            workspace=self.workspace,
            crates=self.crates | newer.crates,
            files=self.files | newer.files,
            reason=newer.reason,
        )


@dataclass
class SchedulerStats:
    started: int = 0
    finished: int = 0
    cancelled: int = 0


@dataclass
class WorkspaceScheduler:
    build: Callable[[BuildRequest], Awaitable[object]]
    policy: str = "restart"
    stats: SchedulerStats = field(default_factory=SchedulerStats)
    burst_window_s: float = BURST_WINDOW_S
    burst_settle_s: float = BURST_SETTLE_S

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown --on-busy policy {self.policy!r}: choose one of {', '.join(POLICIES)}")
        self._pending: BuildRequest | None = None
        self._current: BuildRequest | None = None
        self._scope: anyio.CancelScope | None = None
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._superseded_at: float | None = None

    @property
    def busy(self) -> bool:
        return self._current is not None

    def submit(self, request: BuildRequest) -> None:
        """Ask for a build. Never blocks; safe to call from the watcher's task."""
        if self._pending is None or self._pending.reason == WARM_UP:
            self._pending = request  # a real request makes a pending warm-up pointless
        else:
            self._pending = self._pending.merged(request)
        if self.policy == "restart" and self._scope is not None and self._current is not None:
            if self._current.reason != WARM_UP:
                # The running build's crates still need building: fold them into the next one.
                self._pending = self._current.merged(self._pending)
            self._scope.cancel()
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        self._wake.set()

    def _in_burst(self) -> bool:
        return self._superseded_at is not None and time.monotonic() - self._superseded_at < self.burst_window_s

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._pending is not None:
                request, self._pending = self._pending, None
                self._current = request
                built = False
                with anyio.CancelScope() as scope:
                    self._scope = scope
                    try:
                        if self._in_burst():
                            await anyio.sleep(self.burst_settle_s)
                        built = True
                        self.stats.started += 1
                        await self.build(request)
                    finally:
                        self._scope = None
                        self._current = None
                if scope.cancelled_caught:
                    self._superseded_at = time.monotonic()  # a burst goes on while saves keep coming
                    self.stats.cancelled += built
                else:
                    self.stats.finished += 1
            self._idle.set()
