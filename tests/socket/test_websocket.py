"""The WebSocket endpoint with a real server, real sockets and websockets' own client: the
token, `hello`, subscriptions by build ID, a patch's bytes after its `patch-ready`, late
devices, devices that stop reading, many devices at once, a daemon restart."""

from __future__ import annotations

import hashlib
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
from structlog.testing import capture_logs
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from daemon.socket.payload import CHUNK_BYTES
from daemon.socket.remote_token import NO_TOKEN, WRONG_TOKEN
from tests.socket.remote_harness import BUILD_ID, checked, receive_patch, remote_patch, remote_server
from tests.support.protocol_harness import FakeEngine, build_started

OTHER_BUILD_ID = "0123456789abcdef0123456789abcdef01234567"
REPO = Path(__file__).parents[2]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def device(url: str, token: str | None, **options):
    """A websockets client as a device would connect (no size limit on the daemon's frames)."""
    headers = bearer(token) if token is not None else {}
    return connect(url, additional_headers=headers, max_size=None, compression=None, **options)


async def subscribe(ws, build_id: str = BUILD_ID, pid: int = 4242) -> dict:
    hello = checked(await ws.recv())
    assert hello["type"] == "hello" and hello["remote"] is True
    await ws.send(json.dumps({"type": "subscribe", "seq": 1, "pid": pid, "build_id": build_id}))
    reply = checked(await ws.recv())
    assert reply["type"] == "subscribed" and reply["build_id"] == build_id and reply["re"] == 1
    return reply


@pytest.fixture
def library(tmp_path: Path) -> Path:
    path = tmp_path / "libapp-tag-patch-1.so"
    path.write_bytes(os.urandom(CHUNK_BYTES + 12345))
    return path


# --------------------------------------------------------------------------- the token


@pytest.mark.asyncio
@pytest.mark.parametrize(("token", "reason"), [("0" * 64, WRONG_TOKEN), (None, NO_TOKEN)])
async def test_a_wrong_or_missing_token_is_closed_with_the_reason(sock_path: Path, token, reason) -> None:
    async with remote_server(sock_path) as (server, url, _):
        async with device(url, token) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd.code == 1008
        assert closed.value.rcvd.reason == reason
        assert server.client_count == 0


@pytest.mark.asyncio
async def test_the_token_never_reaches_logs_or_status(sock_path: Path) -> None:
    with capture_logs() as logs:
        async with remote_server(sock_path) as (_, url, token):
            async with device(url, token) as ws:
                await subscribe(ws)
                await ws.send(json.dumps({"type": "status", "seq": 2}))
                status = checked(await ws.recv())
            async with device(url, "f" * 64) as ws:
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
    assert status["daemon"]["listen"] == url
    assert token not in json.dumps(status)
    assert token not in repr(logs) and "f" * 64 not in repr(logs)


@pytest.mark.asyncio
async def test_any_other_path_is_not_found(sock_path: Path) -> None:
    async with remote_server(sock_path) as (_, url, token):
        with pytest.raises(InvalidStatus) as refused:
            async with device(url.replace("/thinpatch", "/other"), token):
                pass
        assert refused.value.response.status_code == 404


# --------------------------------------------------------------------------- subscribing


@pytest.mark.asyncio
async def test_a_remote_program_must_name_its_build_id(sock_path: Path) -> None:
    async with remote_server(sock_path) as (_, url, token):
        async with device(url, token) as ws:
            checked(await ws.recv())
            await ws.send(json.dumps({"type": "subscribe", "seq": 1, "pid": os.getpid()}))
            reply = checked(await ws.recv())
            assert reply["type"] == "error" and "build_id" in reply["message"] and reply["re"] == 1


@pytest.mark.asyncio
async def test_a_remote_pid_is_a_label_never_looked_up(sock_path: Path) -> None:
    class Recording(FakeEngine):
        async def identify(self, subscription):
            self.asked = subscription
            return await super().identify(subscription)

    engine = Recording()
    async with remote_server(sock_path, engine) as (server, url, token):
        async with device(url, token) as ws:
            await subscribe(ws, pid=1)  # pid 1 here is init: it must not be read
            assert engine.asked.pid is None and engine.asked.build_id == BUILD_ID
            # A patch result without a pid is the remote label's.
            server.publish(remote_patch(5, Path("/nonexistent")))
            engine.last_patch["x"] = {"id": 5}
            checked(await ws.recv())  # the error saying the library is gone (below)
            await ws.send(json.dumps({"type": "patch-result", "seq": 3, "id": 5, "applied": True}))
            assert checked(await ws.recv())["type"] == "ok"
            assert engine.results[-1]["id"] == 5


@pytest.mark.asyncio
async def test_a_patch_arrives_with_its_bytes_and_only_for_its_binary(sock_path: Path, library: Path) -> None:
    async with remote_server(sock_path) as (server, url, token):
        async with device(url, token) as mine, device(url, token) as other:
            await subscribe(mine)
            await subscribe(other, OTHER_BUILD_ID)
            server.publish(build_started(1))
            published = server.publish(remote_patch(1, library))
            assert "payload" not in published  # the Unix socket's event is unchanged
            ready, data = await receive_patch(mine)
            assert ready["payload"] == {
                "size": library.stat().st_size,
                "sha256": hashlib.sha256(library.read_bytes()).hexdigest(),
                "chunks": 2,
                "file": library.name,
            }
            assert data == library.read_bytes()
            assert hashlib.sha256(data).hexdigest() == ready["payload"]["sha256"]
            # The other binary's device got the build-started but no patch: its next reply is the pong.
            assert checked(await other.recv())["type"] == "build-started"
            await other.send(json.dumps({"type": "ping", "seq": 9}))
            assert checked(await other.recv())["type"] == "pong"


@pytest.mark.asyncio
async def test_a_late_device_gets_the_newest_patch_replayed_with_its_bytes(sock_path: Path, library: Path) -> None:
    engine = FakeEngine()
    async with remote_server(sock_path, engine) as (server, url, token):
        engine.remember(server.publish(remote_patch(1, library)))
        async with device(url, token) as ws:
            await subscribe(ws)
            ready, data = await receive_patch(ws)
            assert ready["replayed"] is True and data == library.read_bytes()


@pytest.mark.asyncio
async def test_a_library_that_is_gone_is_an_error_that_names_the_fix(sock_path: Path, tmp_path: Path) -> None:
    async with remote_server(sock_path) as (server, url, token):
        async with device(url, token) as ws:
            await subscribe(ws)
            server.publish(remote_patch(4, tmp_path / "pruned.so"))
            error = checked(await ws.recv())
            assert error["type"] == "error" and "save again" in error["message"]
            await ws.send(json.dumps({"type": "ping", "seq": 2}))
            assert checked(await ws.recv())["type"] == "pong"  # still connected


# --------------------------------------------------------------------------- load


@pytest.mark.asyncio
async def test_a_device_that_stops_reading_is_dropped_and_others_still_get_the_patch(
    sock_path: Path, tmp_path: Path
) -> None:
    big = tmp_path / "libbig.so"
    big.write_bytes(os.urandom(32 * CHUNK_BYTES))
    with capture_logs() as logs:
        async with remote_server(sock_path, stall_timeout=3.0, write_limit=64 * 1024) as (server, url, token):
            async with device(url, token, max_queue=1) as stalled, device(url, token) as reader:
                await subscribe(stalled)
                await subscribe(reader)
                server.publish(remote_patch(1, big))
                _, data = await receive_patch(reader)  # while the other one never reads
                assert data == big.read_bytes()
                with anyio.fail_after(15):
                    while server.client_count > 1:
                        await anyio.sleep(0.05)
                with pytest.raises(ConnectionClosed):
                    with anyio.fail_after(15):
                        while True:
                            await stalled.recv()
    dropped = [e for e in logs if e["event"] == "client dropped"]
    assert len(dropped) == 1 and "stopped reading" in dropped[0]["reason"]


@pytest.mark.asyncio
async def test_twenty_devices_at_once_all_get_the_patch(sock_path: Path, library: Path) -> None:
    expected = library.read_bytes()
    async with remote_server(sock_path) as (server, url, token):
        received: list[bytes] = []

        async def one_device(ready: anyio.Event) -> None:
            async with device(url, token) as ws:
                await subscribe(ws)
                ready.set()
                received.append((await receive_patch(ws))[1])

        async with anyio.create_task_group() as tg:
            subscribed = [anyio.Event() for _ in range(20)]
            for event in subscribed:
                tg.start_soon(one_device, event)
            with anyio.fail_after(30):
                for event in subscribed:
                    await event.wait()
            server.publish(remote_patch(1, library))
    assert received == [expected] * 20


# --------------------------------------------------------------------------- a daemon process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


class HarnessProcess:
    def __init__(self, socket_path: Path, port: int, library: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.socket.remote_harness", str(socket_path), str(port), str(library)],
            cwd=REPO, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "listening"

    def publish(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().startswith("published")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.mark.asyncio
async def test_a_32_mib_patch_streams_with_bounded_memory(sock_path: Path, tmp_path: Path) -> None:
    big = tmp_path / "libbig.so"
    big.write_bytes(os.urandom(33 * CHUNK_BYTES + 7))
    port = _free_port()
    harness = HarnessProcess(sock_path, port, big)
    try:
        token = (sock_path.parent / "token").read_text().strip()
        url = f"ws://127.0.0.1:{port}/thinpatch"
        harness.publish()  # remembered: every device gets it replayed
        before = _peak_rss_kib(harness.proc.pid)
        for _ in range(3):
            async with device(url, token) as ws:
                await subscribe(ws)
                ready, data = await receive_patch(ws, timeout=60)
                assert ready["payload"]["size"] == len(data) == big.stat().st_size
                assert hashlib.sha256(data).hexdigest() == ready["payload"]["sha256"]
        grown_mib = (_peak_rss_kib(harness.proc.pid) - before) / 1024
        # The library is 33 MiB: a connection holding it whole would grow the peak past that
        # (measured: about 41 MiB that way, about 8 MiB as sent).
        assert grown_mib < 16, f"the daemon's peak RSS grew by {grown_mib:.1f} MiB"
    finally:
        harness.stop()


@pytest.mark.asyncio
async def test_after_a_daemon_restart_a_device_reconnects_with_the_same_token(
    sock_path: Path, library: Path
) -> None:
    port = _free_port()
    harness = HarnessProcess(sock_path, port, library)
    token = (sock_path.parent / "token").read_text().strip()
    url = f"ws://127.0.0.1:{port}/thinpatch"
    try:
        async with device(url, token) as ws:
            await subscribe(ws)
            harness.stop()
            with pytest.raises(ConnectionClosed):
                with anyio.fail_after(10):
                    while True:
                        await ws.recv()
        harness = HarnessProcess(sock_path, port, library)
        assert (sock_path.parent / "token").read_text().strip() == token
        deadline = time.monotonic() + 10
        async with device(url, token) as ws:
            await subscribe(ws)
            harness.publish()
            _, data = await receive_patch(ws)
            assert data == library.read_bytes()
        assert time.monotonic() < deadline
    finally:
        harness.stop()
