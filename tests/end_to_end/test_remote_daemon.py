"""End to end: a real `thinpatch serve --listen`, a real captured program, a real save, and a
device speaking the WebSocket protocol with websockets' client: the token `thinpatch token`
prints, a patch's bytes that match the library the daemon built, and the warning for an
address beyond this machine."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from daemon.binary.build_id import read_build_id
from daemon.socket.payload import split_frame
from daemon.socket.protocol_schema import server_message_errors
from tests.conftest import copy_fixture
from tests.support.daemon_process import DaemonProcess, save_like_an_editor

pytestmark = pytest.mark.cargo

GREETING = 'format!("hello, {name}")'


@pytest.fixture(scope="module")
def captured(tmp_path_factory, capture_state_dir):
    from daemon.cli.capture_run import run_capture

    result = run_capture(copy_fixture("single_bin", tmp_path_factory.mktemp("remote daemon")))
    assert result.exit_code == 0, result
    return result


@pytest.fixture(scope="module")
def workspace(captured) -> Path:
    return captured.workspace


@pytest.fixture
def listening(workspace, tmp_path):
    sock_dir = tmp_path / "run"
    sock_dir.mkdir(mode=0o700)
    daemon = DaemonProcess(sock_dir / "thinpatch.sock", [workspace], "--listen", "127.0.0.1:0")
    try:
        daemon.wait_watching(workspace)
        yield daemon
    finally:
        daemon.terminate()


def thinpatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon", *args], capture_output=True, text=True, timeout=60)


def endpoint(daemon: DaemonProcess) -> str:
    status = json.loads(thinpatch("status", "--json", "--socket", str(daemon.socket_path)).stdout)
    return status["daemon"]["listen"]


def checked(frame) -> dict:
    assert isinstance(frame, str), f"expected a text frame, got {len(frame)} bytes"
    message = json.loads(frame)
    assert server_message_errors(message) == [], message
    return message




def test_thinpatch_token_prints_the_token_the_daemon_checks(listening) -> None:
    out = thinpatch("token", "--socket", str(listening.socket_path))
    assert out.returncode == 0, out.stderr
    token = out.stdout.split()[-1]
    assert out.stdout.startswith("token: ") and len(token) == 64
    assert (listening.socket_path.parent / "token").read_text().strip() == token
    assert token not in listening.log()


@pytest.mark.asyncio
async def test_a_save_reaches_a_remote_device_as_bytes(captured, workspace, listening) -> None:
    token = thinpatch("token", "--socket", str(listening.socket_path)).stdout.split()[-1]
    (binary,) = captured.binaries
    build_id = read_build_id(binary)
    assert build_id is not None
    url = endpoint(listening)
    source = workspace / "src" / "main.rs"
    original = source.read_text()
    try:
        async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None) as ws:
            hello = checked(await ws.recv())
            assert hello["remote"] is True
            await ws.send(json.dumps({"type": "subscribe", "seq": 1, "pid": 999999, "build_id": build_id}))
            subscribed = checked(await ws.recv())
            assert subscribed["type"] == "subscribed" and subscribed["build_id"] == build_id, subscribed
            save_like_an_editor(source, original.replace(GREETING, 'format!("hi from afar, {name}")'))
            with anyio.fail_after(120):
                while (ready := checked(await ws.recv()))["type"] != "patch-ready":
                    assert ready["type"] in ("build-started", "patch-result"), ready
                received = bytearray()
                for index in range(ready["payload"]["chunks"]):
                    header, chunk = split_frame(await ws.recv())
                    assert header == {"id": ready["id"], "index": index, "offset": len(received)}
                    received += chunk
            library = Path(ready["lib"]).read_bytes()
            assert ready["for_build_id"] == build_id
            assert ready["payload"] == {
                "size": len(library), "sha256": hashlib.sha256(library).hexdigest(),
                "chunks": ready["payload"]["chunks"], "file": os.path.basename(ready["lib"]),
            }
            assert bytes(received) == library
            assert "linux" in ready["program"]["target"]  # the triple it was built for: this host's
            await ws.send(json.dumps({"type": "patch-result", "seq": 2, "id": ready["id"], "applied": True}))
            with anyio.fail_after(10):
                while (reply := checked(await ws.recv())).get("re") != 2:
                    pass
            assert reply["type"] == "ok"
    finally:
        save_like_an_editor(source, original)


@pytest.mark.asyncio
async def test_a_wrong_token_is_refused_with_the_reason(listening) -> None:
    async with connect(endpoint(listening), additional_headers={"Authorization": "Bearer " + "0" * 64}) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd.code == 1008
    assert "thinpatch token" in closed.value.rcvd.reason


def test_an_address_beyond_this_machine_is_warned_about_once(workspace, tmp_path) -> None:
    sock_dir = tmp_path / "run"
    sock_dir.mkdir(mode=0o700)
    daemon = DaemonProcess(sock_dir / "thinpatch.sock", [workspace], "--listen", "0.0.0.0:0")
    try:
        assert endpoint(daemon).startswith("ws://0.0.0.0:")
    finally:
        daemon.terminate()
    log = daemon.log_path.read_text()
    assert log.count("thinpatch serve: warning: the WebSocket endpoint listens on 0.0.0.0:0") == 1, log
    assert log.count("listening beyond this machine") == 1, log
    assert "run code in the subscribed programs" in log


def test_a_bad_listen_address_is_a_usage_error(tmp_path) -> None:
    out = thinpatch("serve", "--socket", str(tmp_path / "s.sock"), "--listen", "9876")
    assert out.returncode == 2
    assert "ADDR:PORT" in out.stderr and "Traceback" not in out.stderr


def test_a_port_in_use_is_a_plain_message(workspace, tmp_path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "run").mkdir(mode=0o700)
        out = subprocess.run(
            [sys.executable, "-m", "daemon", "serve", "--socket", str(tmp_path / "run" / "thinpatch.sock"),
             "--workspace", str(workspace), "--listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60,
        )
    assert out.returncode == 1, out.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "--listen" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.asyncio
async def test_a_device_running_another_binary_is_told_it_gets_no_patches(listening) -> None:
    token = thinpatch("token", "--socket", str(listening.socket_path)).stdout.split()[-1]
    async with connect(endpoint(listening), additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        checked(await ws.recv())
        await ws.send(json.dumps({"type": "subscribe", "seq": 1, "pid": 1, "build_id": "ab" * 20}))
        assert checked(await ws.recv())["type"] == "subscribed"
        notice = checked(await ws.recv())
    assert notice["type"] == "not-patchable" and notice["reason"] == "not-captured"
    assert "thinpatch capture" in notice["message"] and "process 1" not in notice["message"]
