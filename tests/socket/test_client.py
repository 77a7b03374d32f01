"""daemon.socket.client and the status/stop/rebuild/watch commands, against real servers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from daemon.cli.commands.rebuild import pick_workspace
from daemon.socket.client import DaemonUnavailable, RequestFailed, connect
from daemon.socket.protocol_schema import server_message_errors
from daemon.socket.single_instance import probe
from tests.support.protocol_harness import (
    WORKSPACE,
    FakeEngine,
    every_event_kind,
    patch_ready,
    running_server,
    start_daemon_process,
)


@pytest.mark.asyncio
async def test_connect_request_and_events(sock_path: Path) -> None:
    engine = FakeEngine()
    async with running_server(engine, sock_path) as server:
        engine.remember(server.publish(patch_ready(1)))
        async with connect(sock_path) as client:
            assert client.hello["pid"] == os.getpid()
            assert (await client.request({"type": "ping"}))["type"] == "pong"
            status = await client.request({"type": "status"})
            assert status["daemon"]["clients"] == 1
            await client.subscribe(WORKSPACE)
            published = [server.publish(e) for e in every_event_kind()]
            received = []
            async for event in client.events():
                received.append(event)
                if len(received) == 1 + len(published):
                    break
            assert received[0]["replayed"] and received[0]["id"] == 1
            assert received[1:] == published


@pytest.mark.asyncio
async def test_error_replies_raise_request_failed(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path):
        async with connect(sock_path) as client:
            with pytest.raises(RequestFailed, match="not a crate name") as caught:
                await client.request({"type": "rebuild", "workspace": WORKSPACE, "crate": "../../etc"})
            assert caught.value.reply["type"] == "error"
            assert (await client.request({"type": "ping"}))["type"] == "pong"  # still usable


@pytest.mark.asyncio
async def test_concurrent_requests_get_their_own_replies(sock_path: Path) -> None:
    async with running_server(FakeEngine(), sock_path):
        async with connect(sock_path) as client:
            replies: dict[int, str] = {}

            async def ask(i: int) -> None:
                kind = "ping" if i % 2 else "status"
                replies[i] = (await client.request({"type": kind}))["type"]

            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(ask, i)
            assert replies == {i: ("pong" if i % 2 else "status") for i in range(20)}


@pytest.mark.asyncio
async def test_no_daemon_and_stale_socket_are_reported_plainly(sock_path: Path) -> None:
    with pytest.raises(DaemonUnavailable, match="not running \\(no socket at"):
        async with connect(sock_path):
            pass
    sock_path.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.fspath(sock_path))
    stale.close()
    with pytest.raises(DaemonUnavailable, match="not running \\(stale socket at"):
        async with connect(sock_path):
            pass


@pytest.mark.asyncio
async def test_events_end_when_the_daemon_stops(sock_path: Path) -> None:
    async with anyio.create_task_group() as tg:
        from daemon.socket.server import DaemonServer

        server = DaemonServer(FakeEngine(), sock_path, validate=True)
        await tg.start(server.run)
        async with connect(sock_path) as client:
            await client.subscribe()
            server.publish(patch_ready(1))
            tg.cancel_scope.cancel()
            received = [event async for event in client.events()]
            assert [e["id"] for e in received] in ([1], [])  # in flight at shutdown, or not


# --------------------------------------------------------------------------- rebuild


def test_pick_workspace(tmp_path: Path) -> None:
    inner = tmp_path / "ws" / "src"
    inner.mkdir(parents=True)
    served = [str(tmp_path / "ws"), str(tmp_path / "other")]
    assert pick_workspace(served, None, str(inner)) == served[0]
    assert pick_workspace(served, str(tmp_path / "other"), "/") == served[1]
    assert pick_workspace(served[:1], None, "/") == served[0]
    with pytest.raises(ValueError, match="pass --workspace"):
        pick_workspace(served, None, "/")
    with pytest.raises(ValueError, match="not served"):
        pick_workspace(served, "/nowhere", "/")


# --------------------------------------------------------------------------- commands, end to end


def thinpatch(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def daemon_process(sock_path: Path):
    process = start_daemon_process(sock_path)
    yield process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def test_status_command(daemon_process: subprocess.Popen, sock_path: Path) -> None:
    human = thinpatch("status", "--socket", str(sock_path))
    assert human.returncode == 0, human.stderr
    assert f"pid {daemon_process.pid}," in human.stdout and f"\n{WORKSPACE}  " in human.stdout
    raw = thinpatch("status", "--json", "--socket", str(sock_path))
    reply = json.loads(raw.stdout)
    assert server_message_errors(reply) == []
    assert reply["daemon"]["pid"] == daemon_process.pid


def test_status_command_without_a_daemon(sock_path: Path) -> None:
    result = thinpatch("status", "--socket", str(sock_path))
    assert result.returncode == 1
    assert "thinpatch daemon is not running" in result.stderr


def test_rebuild_command(daemon_process: subprocess.Popen, sock_path: Path) -> None:
    ok = thinpatch("rebuild", "--workspace", WORKSPACE, "--crate", "demo", "--socket", str(sock_path))
    assert ok.returncode == 0, ok.stderr
    assert f"rebuild requested for {WORKSPACE} (crate demo)" in ok.stdout
    refused = thinpatch("rebuild", "--workspace", WORKSPACE, "--crate", "../../etc", "--socket", str(sock_path))
    assert refused.returncode == 2 and "not a crate name" in refused.stderr  # a usage error, found before asking
    ambiguous = thinpatch("rebuild", "--socket", str(sock_path))
    assert ambiguous.returncode == 1 and "--workspace" in ambiguous.stderr


def test_watch_json_shows_the_same_stream_as_another_client(daemon_process: subprocess.Popen, sock_path: Path) -> None:
    watcher = subprocess.Popen(
        [sys.executable, "-m", "daemon", "watch", "--json", "--socket", str(sock_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    human = subprocess.Popen(
        [sys.executable, "-m", "daemon", "watch", "--socket", str(sock_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(10)
        raw.connect(os.fspath(sock_path))
        raw.sendall(b'{"type":"subscribe","seq":1}\n')
        reader = raw.makefile("rb")
        reader.readline(), reader.readline()  # hello, subscribed
        deadline = time.monotonic() + 10
        while status_subscribers(sock_path) < 3:
            assert time.monotonic() < deadline, "watchers did not subscribe"
            time.sleep(0.05)
        direct = []
        for _ in range(3):  # one at a time: pending signals of one kind coalesce
            daemon_process.send_signal(signal.SIGUSR1)
            direct.append(json.loads(reader.readline()))
    time.sleep(0.3)
    for process in (watcher, human):
        process.send_signal(signal.SIGINT)
    watched_out, _ = watcher.communicate(timeout=10)
    human_out, _ = human.communicate(timeout=10)
    watched = [json.loads(line) for line in watched_out.splitlines()]
    assert watched == direct
    assert [e["id"] for e in direct] == [1, 2, 3]
    assert len([line for line in human_out.splitlines() if " patched demo in " in line]) == 3


def status_subscribers(sock_path: Path) -> int:
    result = thinpatch("status", "--json", "--socket", str(sock_path))
    return json.loads(result.stdout)["daemon"]["subscribers"]


def test_stop_command(daemon_process: subprocess.Popen, sock_path: Path) -> None:
    result = thinpatch("stop", "--socket", str(sock_path))
    assert result.returncode == 0, result.stderr
    assert f"stopped thinpatch daemon (pid {daemon_process.pid})" in result.stdout
    assert daemon_process.wait(timeout=5) == 0
    assert probe(sock_path).state == "absent"
    again = thinpatch("stop", "--socket", str(sock_path))
    assert again.returncode == 0 and "nothing to stop" in again.stderr
