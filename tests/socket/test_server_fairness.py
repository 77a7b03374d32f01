"""Clients that hold connections without asking anything can't lock others out: at the limit,
the oldest connection that never completed a request makes room for a new client. And no
client behaviour, however fast it connects and hangs up, puts a traceback in the log."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import textwrap
import time

import anyio
import pytest

from tests.support.daemon_process import DaemonProcess
from tests.support.protocol_harness import FakeEngine, RawClient, running_server

# Connect and hang up in every way a client can, from many threads at once: argv = socket, cycles.
HAMMER = textwrap.dedent(
    """
    import socket, sys, threading
    path, cycles, threads = sys.argv[1], int(sys.argv[2]), 16
    def work(k):
        for i in range(cycles // threads):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                way = (i + k) % 5
                if way == 1:
                    s.recv(10)
                elif way == 2:
                    s.send(b'{"type":"ping"}\\n' * 20)
                elif way == 3:
                    s.send(b'{"type":"subscribe"}\\n{"type":"status"}\\n')
                elif way == 4:
                    s.send(b'{"type":"stat')
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    [w.start() for w in workers]
    [w.join() for w in workers]
    """
)


def hammer(socket_path, cycles: int) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", HAMMER, str(socket_path), str(cycles)], check=True, timeout=120)
    return time.monotonic() - started


@pytest.mark.asyncio
async def test_at_the_limit_the_oldest_silent_connection_makes_room(sock_path):
    async with running_server(FakeEngine(), sock_path, max_clients=3) as server:
        async with (
            RawClient.connect(sock_path) as oldest_silent,
            RawClient.connect(sock_path) as silent,
            RawClient.connect(sock_path) as asking,
        ):
            await silent.send_raw(b'{"type":"pi')  # an unfinished line is not a request
            assert (await asking.request({"type": "ping"}))["type"] == "pong"
            async with RawClient.connect(sock_path) as newcomer:
                assert (await newcomer.request({"type": "ping"}))["type"] == "pong"
                closed = await oldest_silent.read_until_closed()
                assert [m["type"] for m in closed] == ["error"], closed
                assert "made room for a new client" in closed[0]["message"]
                assert (await asking.request({"type": "ping"}))["type"] == "pong"
                await silent.send_raw(b'ng"}\n')
                assert (await silent.read())["type"] == "pong"  # the next oldest stayed
                assert server.client_count == 3


@pytest.mark.asyncio
async def test_at_the_limit_with_every_connection_asking_a_new_one_is_refused(sock_path):
    async with running_server(FakeEngine(), sock_path, max_clients=2):
        async with RawClient.connect(sock_path) as one, RawClient.connect(sock_path) as two:
            for client in (one, two):
                assert (await client.request({"type": "ping"}))["type"] == "pong"
            async with RawClient.connect(sock_path, read_hello=False) as refused:
                messages = await refused.read_until_closed()
            assert [m["type"] for m in messages] == ["error"]
            assert "too many clients (limit 2)" in messages[0]["message"]
            assert (await one.request({"type": "ping"}))["type"] == "pong"


@pytest.mark.asyncio
async def test_rapid_cycles_at_a_tight_limit_and_timeout_log_no_traceback(sock_path, caplog):
    """Every way a connection ends at once: idle closes, room-making, refusals, hang-ups."""
    caplog.set_level(logging.DEBUG, logger="asyncio")
    async with running_server(FakeEngine(), sock_path, max_clients=16, idle_timeout=0.01):
        await anyio.to_thread.run_sync(hammer, sock_path, 2000)
        async with RawClient.connect(sock_path) as client:  # still accepting, and greeting
            assert client.hello is not None
    problems = [r for r in caplog.records if r.exc_info or "InvalidStateError" in r.getMessage()]
    assert not problems, [r.getMessage() for r in problems]


def test_thousands_of_connect_and_hang_up_cycles_leave_the_daemon_log_clean(tmp_path):
    (tmp_path / "d").mkdir(mode=0o700)
    daemon = DaemonProcess(tmp_path / "d" / "thinpatch.sock")
    try:
        took = hammer(daemon.socket_path, 3000)
        with socket.socket(socket.AF_UNIX) as raw:
            raw.settimeout(5)
            raw.connect(str(daemon.socket_path))
            raw.sendall(b'{"type":"status","seq":1}\n')
            replies = b""
            while replies.count(b"\n") < 2:
                replies += raw.recv(65536)
        status = json.loads(replies.splitlines()[1])
        assert status["type"] == "status", status
    finally:
        daemon.terminate()
    log = daemon.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "InvalidStateError" not in log, log[-3000:]
    print(f"3000 cycles in {took:.1f} s")
