"""Only asyncio's subprocess teardown race (CPython gh-145541) is kept off the terminal."""

from __future__ import annotations

import asyncio
from asyncio import base_subprocess

import pytest

from daemon.cli.subprocess_teardown import drop_subprocess_teardown_race


def report(loop: asyncio.AbstractEventLoop, exception: BaseException, callback) -> dict:
    return {"message": "Exception in callback", "exception": exception, "handle": asyncio.Handle(callback, (), loop)}


@pytest.mark.asyncio
async def test_only_the_subprocess_waiter_race_is_dropped() -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        drop_subprocess_teardown_race()
        handler = loop.get_exception_handler()
        assert handler is not None
        transport_method = base_subprocess.BaseSubprocessTransport._call_connection_lost
        handler(loop, report(loop, asyncio.InvalidStateError(), transport_method))
        assert seen == []
        transport = object.__new__(base_subprocess.BaseSubprocessTransport)
        transport._closed = True  # never made: nothing to close when it goes
        handler(loop, report(loop, asyncio.InvalidStateError(), transport._call_connection_lost))  # bound
        assert seen == []
        other_error = report(loop, ValueError("mine"), transport_method)
        same_error_elsewhere = report(loop, asyncio.InvalidStateError(), print)
        handler(loop, other_error)
        handler(loop, same_error_elsewhere)
        assert seen == [other_error, same_error_elsewhere]
    finally:
        loop.set_exception_handler(None)
