"""Builds of one session take turns, and tidying runs beside the work that matters.

``exclusive_build`` takes a session's layout and holds its build lock for the block: a
daemon and a one-shot `thinpatch patch` may build in one session, and two rustc runs must
not write one crate's object directory at once. ``beside`` takes a tidy-up (run in a worker
thread) and async work, and gives the work's result once both are done, raising the work's
exception as itself.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio

from daemon.build.errors import writing_session
from daemon.build.session_cache import SessionLayout

T = TypeVar("T")


@asynccontextmanager
async def exclusive_build(layout: SessionLayout, poll_s: float = 0.05) -> AsyncIterator[None]:
    """Hold the session's build lock (waiting, cancellably, while another process holds it)."""
    with writing_session(layout.root):
        fd = os.open(layout.build_lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await anyio.sleep(poll_s)
        yield
    finally:
        os.close(fd)  # releases the lock


async def beside(tidy: Callable[[], object], work: Callable[[], Awaitable[T]]) -> T:
    """``await work()`` while ``tidy()`` runs in a worker thread; both are done on return.
    An exception from ``work`` comes out as itself, not inside the task group's group."""
    failed: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(anyio.to_thread.run_sync, tidy)
        try:
            result = await work()
        except Exception as exc:
            failed = exc
    if failed is not None:
        raise failed
    return result
