"""Daemon faults: kill -9 and a restart, and a second daemon on the same socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from daemon.socket.client import connect
from tests.support.faults import (
    assert_nothing_lost,
    run,
    save_like_an_editor,
    start_daemon,
    start_host,
)

pytestmark = pytest.mark.cargo


@pytest.fixture
def source(captured):
    path = captured.app_source
    original = path.read_text()
    yield path
    if path.read_text() != original:
        save_like_an_editor(path, original)


def _files(directory) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in directory.iterdir()}


async def _status(socket_path):
    async with connect(socket_path) as client:
        return await client.request({"type": "status"})


def test_sigkill_then_restart_keeps_captures_symbol_cache_and_clients(captured, source, tmp_path):
    sock_dir = tmp_path / "run"
    sock_dir.mkdir()
    first = start_daemon(sock_dir, captured.workspace)
    host = start_host(captured.workspace, first.socket_path)
    second = None
    try:
        assert_nothing_lost(host, source, "BEFORE KILL")
        symbols = captured.capture_root / "symbols"
        program = captured.workspace / "target" / "debug" / "livehost"
        cached, program_mtime = _files(symbols), program.stat().st_mtime_ns
        records = _files(captured.capture_root / "captures" / "host-debug" / "rustc")
        assert cached

        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        assert first.socket_path.exists()  # left behind: stale
        host.expect(lambda line: line == "DISCONNECTED")

        second = start_daemon(sock_dir, captured.workspace)
        assert "already running" not in second.log()
        status = run(_status, second.socket_path)
        [ws] = status["workspaces"]
        assert ws["workspace"] == str(captured.workspace) and ws["busy"] is False
        assert "livehost.bin" in ws["crates"] and ws["capture_warnings"] == []
        assert status["daemon"]["pid"] == second.proc.pid

        host.send(f"socket {second.socket_path}")  # the client reconnects
        host.expect(lambda line: line == "SUBSCRIBED")
        assert_nothing_lost(host, source, "AFTER RESTART")
        # No new fat build, and the symbol tables came from the on-disk cache unchanged.
        assert program.stat().st_mtime_ns == program_mtime
        assert _files(captured.capture_root / "captures" / "host-debug" / "rustc") == records
        now = _files(symbols)
        assert {k: now[k] for k in cached} == cached, "symbol cache entries were rewritten"
    finally:
        host.close()
        first.kill()
        if second is not None:
            second.kill()


def test_a_second_daemon_is_refused_and_the_first_keeps_serving(captured, tmp_path):
    sock_dir = tmp_path / "run"
    sock_dir.mkdir()
    first = start_daemon(sock_dir, captured.workspace)
    try:
        serve = [
            sys.executable,
            "-m",
            "daemon",
            "serve",
            "--socket",
            str(first.socket_path),
            "--workspace",
            str(captured.workspace),
        ]
        out = subprocess.run(serve, capture_output=True, text=True, timeout=30)
        assert out.returncode == 1
        assert f"thinpatch daemon already running at {first.socket_path} (pid {first.proc.pid})" in out.stderr, (
            out.stderr
        )
        assert "Traceback" not in out.stderr

        # Even with its socket file deleted under it, the running daemon holds the lock.
        os.unlink(first.socket_path)
        out = subprocess.run(serve, capture_output=True, text=True, timeout=30)
        assert out.returncode == 1 and "already running" in out.stderr, out.stderr

        assert first.proc.poll() is None
    finally:
        first.kill()
