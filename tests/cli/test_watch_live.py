"""`thinpatch watch` against real daemon processes: it follows a daemon through a restart
and Ctrl-C still quits."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.protocol_harness import start_daemon_process


class Watch:
    """A `thinpatch watch` process whose stdout and stderr lines are read as they come."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "watch", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.seen: list[tuple[str, str]] = []
        for name, stream in (("out", self.proc.stdout), ("err", self.proc.stderr)):
            threading.Thread(target=self._pump, args=(name, stream), daemon=True).start()

    def _pump(self, name: str, stream) -> None:
        for line in stream:
            self.lines.put((name, line.rstrip("\n")))

    def expect(self, stream: str, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(item)
            if item[0] == stream and text in item[1]:
                return item[1]
        raise AssertionError(f"no {stream} line with {text!r}; seen: {self.seen}")

    def everything(self) -> list[tuple[str, str]]:
        """Every line, once the process has exited."""
        self.proc.wait(timeout=5)
        time.sleep(0.2)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.seen


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def test_watch_reconnects_after_the_daemon_restarts_and_quits_on_ctrl_c(sock_path: Path):
    first = start_daemon_process(sock_path)
    second = None
    watch = Watch("--socket", str(sock_path), env=dict(os.environ, NO_COLOR="1"))
    try:
        watch.expect("err", f"watching the thinpatch daemon (pid {first.pid})")
        first.send_signal(signal.SIGUSR1)
        watch.expect("out", "patched demo in 160 ms")
        stop(first)
        watch.expect("err", "the daemon closed the connection; reconnecting when it is back (Ctrl-C to stop)")
        time.sleep(1.0)  # a few attempts fail while no daemon listens
        assert watch.proc.poll() is None
        second = start_daemon_process(sock_path)
        watch.expect("err", f"reconnected to the thinpatch daemon (pid {second.pid})")
        second.send_signal(signal.SIGUSR1)
        line = watch.expect("out", "patched demo in 160 ms")
        assert "\x1b[" not in line  # NO_COLOR
        watch.proc.send_signal(signal.SIGINT)
        assert watch.proc.wait(timeout=5) == 130
        assert not any("Traceback" in line for _, line in watch.everything())
    finally:
        if watch.proc.poll() is None:
            watch.proc.kill()
            watch.proc.wait()
        for daemon in (first, second):
            if daemon is not None:
                stop(daemon)


def test_ctrl_c_quits_while_waiting_for_the_daemon(sock_path: Path):
    daemon = start_daemon_process(sock_path)
    watch = Watch("--socket", str(sock_path), "--color", "always")
    try:
        watch.expect("err", "watching the thinpatch daemon")
        daemon.send_signal(signal.SIGUSR1)
        assert "\x1b[32mpatched\x1b[0m" in watch.expect("out", "patched")
        stop(daemon)
        watch.expect("err", "reconnecting when it is back")
        watch.proc.send_signal(signal.SIGINT)
        assert watch.proc.wait(timeout=5) == 130
    finally:
        if watch.proc.poll() is None:
            watch.proc.kill()
            watch.proc.wait()
        stop(daemon)


def test_no_reconnect_exits_when_the_daemon_stops(sock_path: Path):
    daemon = start_daemon_process(sock_path)
    watch = Watch("--socket", str(sock_path), "--no-reconnect")
    try:
        watch.expect("err", "watching the thinpatch daemon")
        stop(daemon)
        assert watch.proc.wait(timeout=10) == 1
        watch.expect("err", "the daemon closed the connection")
    finally:
        if watch.proc.poll() is None:
            watch.proc.kill()
            watch.proc.wait()
        stop(daemon)
