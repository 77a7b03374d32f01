"""systemd integration with real sockets: socket activation through an inherited fd, and
sd_notify to a real datagram socket (path and abstract addresses)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.socket import systemd
from tests.support.protocol_harness import short_socket_path

HARNESS = Path(__file__).parents[1] / "support" / "protocol_harness.py"

# Puts the inherited listening socket at fd 3 and sets LISTEN_PID to its own pid, then
# execs the daemon: what systemd does between fork and exec.
ACTIVATION_WRAPPER = """\
import os, sys
inherited = int(sys.argv[1])
if inherited != 3:
    os.dup2(inherited, 3)
    os.close(inherited)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.execv(sys.executable, [sys.executable] + sys.argv[2:])
"""


def receive_notifications(sock: socket.socket, until: str) -> list[str]:
    messages = []
    while True:
        message = sock.recv(4096).decode()
        messages.append(message)
        if until in message.split("\n"):
            return messages


def read_line(sock: socket.socket) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        data += chunk
    return json.loads(data)


@pytest.mark.parametrize("program", ["harness", "thinpatch serve"])
def test_socket_activated_daemon_serves_the_inherited_socket_and_notifies(tmp_path: Path, program: str) -> None:
    sock_path = short_socket_path(tmp_path)
    sock_path.parent.mkdir(mode=0o700, parents=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.fspath(sock_path))
    listener.listen(16)
    notify_path = sock_path.parent / "notify.sock"
    notifications = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notifications.bind(os.fspath(notify_path))
    notifications.settimeout(15)

    env = {**os.environ, "NOTIFY_SOCKET": os.fspath(notify_path), "THINPATCH_STATE_DIR": os.fspath(tmp_path / "state")}
    env.pop("THINPATCH_SOCKET", None)
    ignored = os.fspath(tmp_path / "unused" / "ignored.sock")
    command = [os.fspath(HARNESS), ignored] if program == "harness" else ["-m", "daemon", "serve", "--socket", ignored]
    daemon = subprocess.Popen(
        [sys.executable, "-c", ACTIVATION_WRAPPER, str(listener.fileno()), *command],
        pass_fds=(listener.fileno(),),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    listener.close()  # only the daemon holds it now, as with systemd
    try:
        ready = receive_notifications(notifications, "READY=1")
        assert any(line.startswith("STATUS=listening on ") for line in ready[-1].split("\n"))

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(10)
            client.connect(os.fspath(sock_path))
            hello = read_line(client)
            assert hello["type"] == "hello" and hello["pid"] == daemon.pid
            client.sendall(b'{"type":"status","seq":1}\n')
            status = read_line(client)
            assert status["daemon"]["socket_activated"] is True
            assert status["daemon"]["socket"] == os.fspath(sock_path)

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0, daemon.stderr.read()
        receive_notifications(notifications, "STOPPING=1")
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        notifications.close()
    # systemd owns the socket: the daemon must leave it in place, and must not have
    # bound the path it was given.
    assert sock_path.exists()
    assert not (tmp_path / "unused").exists()


def test_listen_fds_ignores_variables_meant_for_another_process() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}
    assert systemd.listen_fds(env) == []
    assert systemd.listen_fds({"LISTEN_PID": "x", "LISTEN_FDS": "1"}) == []
    assert systemd.listen_fds({}) == []


def test_listen_fds_consumes_its_variables() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as placeholder:
        saved = os.dup(3) if _fd_open(3) else None
        try:
            os.dup2(placeholder.fileno(), 3)
            env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "thinpatch.socket"}
            assert systemd.listen_fds(env) == [3]
            assert env == {}
            assert not os.get_inheritable(3)
        finally:
            if saved is not None:
                os.dup2(saved, 3)
                os.close(saved)
            else:
                os.close(3)


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_notify_to_a_path_socket(tmp_path: Path) -> None:
    path = short_socket_path(tmp_path).with_name("n.sock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(os.fspath(path))
        receiver.settimeout(5)
        env = {"NOTIFY_SOCKET": os.fspath(path)}
        assert systemd.notify_ready("serving 2\nworkspaces", env)
        assert receiver.recv(4096) == b"READY=1\nSTATUS=serving 2 workspaces"
        assert systemd.notify_stopping(env)
        assert receiver.recv(4096) == b"STOPPING=1"
        assert systemd.notify_status("building demo", env)
        assert receiver.recv(4096) == b"STATUS=building demo"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux-only")
def test_notify_to_an_abstract_socket() -> None:
    name = f"thinpatch-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(5)
        assert systemd.notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert receiver.recv(4096) == b"READY=1"


def test_notify_without_a_supervisor_is_a_quiet_no_op(tmp_path: Path) -> None:
    assert systemd.notify("READY=1", {}) is False
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": os.fspath(tmp_path / "gone.sock")}) is False
