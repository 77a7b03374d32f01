"""A compiler the daemon started dies with the daemon, even when the daemon is SIGKILLed:
otherwise it keeps writing into the incremental directory the next daemon builds in."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from daemon.build.processes import dies_with_parent

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")

# The "daemon": runs one tool through run_tool, as a build does, and waits.
DAEMON = """
import os, sys, anyio
from daemon.build.processes import run_tool
fifo = sys.argv[1]
anyio.run(lambda: run_tool(["sh", "-c", f"echo ready > '{fifo}'.ready; exec sleep 60 > '{fifo}'"],
                           cwd="/", env=os.environ, tool="rustc"))
"""


@linux_only
def test_a_tool_dies_when_the_daemon_is_killed(tmp_path):
    fifo = tmp_path / "held-by-tool"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    daemon = subprocess.Popen([sys.executable, "-c", DAEMON, str(fifo)])
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "held-by-tool.ready").exists():
            assert time.monotonic() < deadline and daemon.poll() is None, "the tool never started"
            time.sleep(0.02)
        while _read(reader) is not None:  # until the tool holds the FIFO open
            assert time.monotonic() < deadline
            time.sleep(0.02)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        while _read(reader) != b"":  # end-of-file: the tool is gone too
            assert time.monotonic() < deadline, "the tool outlived the SIGKILLed daemon"
            time.sleep(0.02)
    finally:
        os.close(reader)
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def _read(fd: int) -> bytes | None:
    try:
        return os.read(fd, 64)
    except BlockingIOError:
        return None


@linux_only
def test_a_missing_tool_is_not_wrapped(tmp_path):
    """A compiler that is gone must still fail to start (and be reported as missing)."""
    assert dies_with_parent([str(tmp_path / "no-rustc"), "-vV"], os.environ) == [str(tmp_path / "no-rustc"), "-vV"]
    wrapped = dies_with_parent(["sh", "-c", "true"], os.environ)
    assert wrapped[-3:] == ["sh", "-c", "true"] and "--pdeathsig" in wrapped
