"""Drop known-harmless asyncio callback errors, and only those, from the event loop's report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def drop_loop_errors(harmless: Callable[[dict[str, Any]], bool]) -> Callable[[], None]:
    """On the running asyncio loop, an exception handler that drops the callback errors
    ``harmless`` picks out of their context and passes every other to the handler before it.
    Returns a function that restores that handler. Does nothing outside asyncio."""
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return lambda: None
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if harmless(context):
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    return lambda: loop.set_exception_handler(previous)
