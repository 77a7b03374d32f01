"""Bounds on what clients can make the daemon hold: idle connections, unfinished input
across clients, file descriptors, and messages built to hurt the parser. A good client
is served throughout."""

from __future__ import annotations

import resource
import subprocess
import sys
from contextlib import AsyncExitStack

import anyio
import pytest

from daemon.socket import server as server_module
from daemon.socket.server import client_limit
from tests.support.protocol_harness import FakeEngine, RawClient, running_server


@pytest.mark.asyncio
async def test_a_connection_that_never_subscribes_is_closed_when_idle(sock_path):
    async with running_server(FakeEngine(), sock_path, idle_timeout=0.3) as server:
        async with RawClient.connect(sock_path) as idle, RawClient.connect(sock_path) as subscriber:
            await subscriber.request({"type": "subscribe"})
            messages = await idle.read_until_closed(timeout=5)
            assert [m["type"] for m in messages] == ["error"]
            assert "no request for 0.3 s and no subscription" in messages[0]["message"]
            await anyio.sleep(0.5)
            # The subscriber stays, silent as it is.
            assert server.client_count == 1
            assert (await subscriber.request({"type": "ping"}))["type"] == "pong"


@pytest.mark.asyncio
async def test_requests_keep_a_connection_alive(sock_path):
    async with running_server(FakeEngine(), sock_path, idle_timeout=0.4):
        async with RawClient.connect(sock_path) as client:
            for _ in range(4):
                await anyio.sleep(0.2)
                assert (await client.request({"type": "ping"}))["type"] == "pong"


@pytest.mark.asyncio
async def test_bytes_dripped_without_a_complete_request_do_not_keep_a_connection(sock_path):
    async with running_server(FakeEngine(), sock_path, idle_timeout=0.4) as server:
        async with RawClient.connect(sock_path) as dripper, RawClient.connect(sock_path) as good:
            await good.request({"type": "subscribe"})  # a subscriber may stay silent

            async def drip() -> None:  # a byte every 0.1 s for 3 s, never the newline
                for _ in range(30):
                    try:
                        await dripper.send_raw(b" ")
                    except (anyio.BrokenResourceError, OSError):
                        return  # closed
                    await anyio.sleep(0.1)

            started = anyio.current_time()
            async with anyio.create_task_group() as tg:
                tg.start_soon(drip)
                messages = await dripper.read_until_closed(timeout=10)
                closed_after = anyio.current_time() - started
                tg.cancel_scope.cancel()
            # closed at the deadline while still dripping, not 0.4 s after the last byte
            assert closed_after < 2.0, closed_after
            assert "no request for 0.4 s" in messages[-1]["message"], messages
            assert (await good.request({"type": "ping"}))["type"] == "pong"
            assert server.client_count == 1


@pytest.mark.asyncio
async def test_unfinished_input_is_capped_across_all_clients(sock_path):
    cap = 256 * 1024
    async with running_server(FakeEngine(), sock_path, max_pending_input=cap) as server:
        async with RawClient.connect(sock_path) as good, AsyncExitStack() as hogs:
            dropped = []
            for _ in range(8):  # up to 8 × 64 kB of unfinished lines, held at once: twice the cap
                hog = await hogs.enter_async_context(RawClient.connect(sock_path))
                await hog.send_raw(b'{"type":"ping","pad":"' + b"x" * (64 * 1024))
                try:
                    dropped.append(await hog.read(timeout=0.5))
                except TimeoutError:
                    continue  # still held: under the cap
                break
            assert dropped and "too much unfinished input" in dropped[0]["message"], dropped
            assert server.pending_input <= cap
            assert (await good.request({"type": "ping"}))["type"] == "pong"
        await anyio.sleep(0.2)
        assert server.pending_input == 0  # released as connections close


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "line,reason",
    [
        (b"[" * 100_000, "nested too deeply"),
        (b'{"type":"ping","x":' + b"[" * 40 + b"]" * 40 + b"}", "nested too deeply"),
        (b'{"type":"ping","seq":' + b"9" * 5000 + b"}", "integer of 5000 digits"),
        (b'{"type":"rebuild","workspace":"/\\ud800"}', "lone surrogate"),
        (b'{"type":"ping","x":NaN}', "NaN"),
        (b'{"type":"rebuild","workspace":"' + b"/a" * 200_000 + b'"}', "longer than 4096 bytes"),
        (b"\xff\xfe", "not valid UTF-8"),
    ],
)
async def test_hostile_messages_get_an_error_and_the_connection_stays(sock_path, line, reason):
    async with running_server(FakeEngine(), sock_path) as server:
        async with RawClient.connect(sock_path) as client:
            await client.send_raw(line + b"\n")
            reply = await client.read()
            assert reply["type"] == "error" and reason in reply["message"], reply
            assert (await client.request({"type": "ping"}))["type"] == "pong"
            assert server.client_count == 1


def test_client_limit_leaves_room_for_builds():
    assert client_limit(1024) == 1024 - server_module.RESERVED_FDS
    assert client_limit(65536) == server_module.DEFAULT_MAX_CLIENTS * 4
    assert client_limit(100) == 8


def test_the_fd_limit_is_raised_at_start_toward_the_hard_limit():
    # In a child, so this process keeps its own limits.
    code = (
        "import resource, sys\n"
        "from daemon.socket.server import raise_fd_limit\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "got = raise_fd_limit(4096)\n"
        "print(got, resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    got, soft, hard = map(int, out)
    expected = 4096 if hard == resource.RLIM_INFINITY or hard >= 4096 else hard
    assert got == soft == expected
