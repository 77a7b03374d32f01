"""Keep one known asyncio bug out of the terminal.

When a task that starts or awaits a subprocess is cancelled as the process ends (Ctrl-C
reaches cargo and `thinpatch run` at once), asyncio's subprocess transport can resolve a
waiter twice and print "Exception in callback … InvalidStateError: invalid state" with a
traceback (CPython gh-145541). Nothing is lost: the process has ended and its waiters were
answered. Only that case is dropped; every other error goes to the loop's usual handler.
"""

from __future__ import annotations

import asyncio
from typing import Any

from daemon.socket.loop_errors import drop_loop_errors

_SUBPROCESS_MODULES = ("asyncio.base_subprocess", "asyncio.subprocess", "asyncio.unix_events")


def is_subprocess_teardown_race(context: dict[str, Any]) -> bool:
    if not isinstance(context.get("exception"), asyncio.InvalidStateError):
        return False
    handle = context.get("handle")
    callback = getattr(handle, "_callback", None)
    module = getattr(callback, "__module__", None) or getattr(getattr(callback, "__func__", None), "__module__", None)
    return module in _SUBPROCESS_MODULES


def drop_subprocess_teardown_race() -> None:
    """On the running loop, drop only :func:`is_subprocess_teardown_race`."""
    drop_loop_errors(is_subprocess_teardown_race)
