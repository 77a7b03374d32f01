"""Hostile input against the real daemon while it serves a live program: every bad message
gets an `error`, idle and unfinished connections are bounded, a good client is answered
throughout, and the next edit still reaches the running host."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack

import pytest

from daemon.socket.client import connect
from tests.support.faults import assert_nothing_lost, run
from tests.support.protocol_harness import RawClient

pytestmark = pytest.mark.cargo

HOSTILE = [
    (b"[" * 100_000, "nested too deeply"),
    (b'{"type":"status","seq":' + b"9" * 5000 + b"}", "integer of 5000 digits"),
    (b'{"type":"rebuild","workspace":"/\\ud800"}', "lone surrogate"),
    (b'{"type":"rebuild","workspace":"' + b"/a" * 200_000 + b'"}', "longer than 4096 bytes"),
    (b"\xff\xfe\x00", "not valid UTF-8"),
]


def test_hostile_input_while_serving_a_live_program(captured, daemon, host, source):
    async def main():
        async with connect(daemon.socket_path) as good, AsyncExitStack() as stack:
            # 50 connections holding an unfinished line each, left open meanwhile.
            for _ in range(50):
                hog = await stack.enter_async_context(RawClient.connect(daemon.socket_path))
                await hog.send_raw(b'{"type":"ping","pad":"' + b"x" * 100_000)
            async with RawClient.connect(daemon.socket_path) as bad:
                for line, reason in HOSTILE:
                    started = time.monotonic()
                    await bad.send_raw(line + b"\n")
                    reply = await bad.read(timeout=10)
                    assert reply["type"] == "error" and reason in reply["message"], reply
                    assert (await good.request({"type": "ping"}, timeout=2))["type"] == "pong"
                    assert time.monotonic() - started < 2, "the daemon stalled on a hostile message"
            status = await good.request({"type": "status"})
            assert status["daemon"]["clients"] >= 51
            return status

    status = run(main)
    assert [w["workspace"] for w in status["workspaces"]] == [str(captured.workspace)]
    assert daemon.proc.poll() is None and "Traceback" not in daemon.log()
    assert_nothing_lost(host, source, "AFTER HOSTILE INPUT")
