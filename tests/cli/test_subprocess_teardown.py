"""Only asyncio's subprocess teardown race (CPython gh-145541) is kept off the terminal."""

from __future__ import annotations

import asyncio
from asyncio import base_subprocess

from daemon.cli.subprocess_teardown import drop_subprocess_teardown_race


def test_only_the_subprocess_waiter_race_is_dropped() -> None:
    loop = asyncio.new_event_loop()
    try:
        seen: list[dict] = []
        loop.set_exception_handler(lambda _loop, context: seen.append(context))
        drop_subprocess_teardown_race(loop)
        handler = loop.get_exception_handler()
        assert handler is not None
        race = asyncio.Handle(base_subprocess.BaseSubprocessTransport._call_connection_lost, (None,), loop)
        handler(loop, {"message": "Exception in callback", "exception": asyncio.InvalidStateError(), "handle": race})
        assert seen == []
        other_error = {"message": "Exception in callback", "exception": ValueError("mine"), "handle": race}
        handler(loop, other_error)
        elsewhere = asyncio.Handle(print, (), loop)
        same_error_elsewhere = {"message": "x", "exception": asyncio.InvalidStateError(), "handle": elsewhere}
        handler(loop, same_error_elsewhere)
        assert seen == [other_error, same_error_elsewhere]
    finally:
        loop.close()


def test_a_bound_transport_method_is_recognised() -> None:
    loop = asyncio.new_event_loop()
    try:
        seen: list[dict] = []
        loop.set_exception_handler(lambda _loop, context: seen.append(context))
        drop_subprocess_teardown_race(loop)
        transport = object.__new__(base_subprocess.BaseSubprocessTransport)
        transport._closed = True  # never made: nothing to close when it goes
        race = asyncio.Handle(transport._call_connection_lost, (None,), loop)
        loop.get_exception_handler()(loop, {"message": "m", "exception": asyncio.InvalidStateError(), "handle": race})
        assert seen == []
    finally:
        loop.close()
