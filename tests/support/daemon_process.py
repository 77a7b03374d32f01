"""Run a real `thinpatch serve` process for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio


class DaemonProcess:
    def __init__(self, socket_path: Path, workspaces: list[Path] = (), *extra: str, env: dict[str, str] | None = None):
        self.socket_path = socket_path
        self.log_path = socket_path.parent / "daemon.log"
        args = [sys.executable, "-m", "daemon", "serve", "--socket", str(socket_path)]
        for ws in workspaces:
            args += ["--workspace", str(ws)]
        args += list(extra)
        full_env = dict(os.environ if env is None else env)
        full_env["THINPATCH_VALIDATE_PROTOCOL"] = "1"  # the daemon checks every message it sends
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=full_env)
        self.wait_listening()

    def wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}):\n{self.log()}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.socket_path))
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"daemon did not listen:\n{self.log()}")

    def wait_watching(self, workspace: Path, timeout: float = 30.0) -> None:
        """Until the daemon's watcher for ``workspace`` is armed (saves before that are
        picked up by its first rescan, but tests want to know edits are seen as events)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(
                [sys.executable, "-m", "daemon", "status", "--json", "--socket", str(self.socket_path)],
                capture_output=True, text=True, timeout=30,
            )
            if out.returncode == 0:
                for ws in json.loads(out.stdout).get("workspaces", []):
                    if ws["workspace"] == str(workspace) and ws.get("watching"):
                        return
            time.sleep(0.1)
        raise AssertionError(f"daemon never started watching {workspace}:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 5.0) -> float:
        """SIGTERM; returns how long the daemon took to exit."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"daemon ignored SIGTERM:\n{self.log()}") from exc
        self._log.close()
        return time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@contextmanager
def serving(workspace: Path, sock_dir: Path, *extra: str) -> Iterator[DaemonProcess]:
    """A real `thinpatch serve` for ``workspace`` (its default debounce), watching it; killed after."""
    daemon = DaemonProcess(sock_dir / "thinpatch.sock", [workspace], *extra)
    try:
        daemon.wait_watching(workspace)
        yield daemon
    finally:
        daemon.kill()


# --------------------------------------------------------------------------- driving it


def save_like_an_editor(path: Path, text: str) -> None:
    """Write a temp file beside the target and rename it over, as most editors do."""
    tmp = path.with_name(f".{path.name}.tmp-save")
    tmp.write_text(text)
    os.replace(tmp, path)


async def collect_until(client, predicate, timeout=60.0) -> list[dict]:
    """Events from ``client`` up to the first that satisfies ``predicate``; each one is
    checked against the protocol's JSON Schema."""
    from daemon.socket.protocol_schema import server_message_errors

    events = []
    with anyio.fail_after(timeout):
        async for event in client.events():
            assert server_message_errors(event) == [], event
            events.append(event)
            if predicate(event):
                return events
    raise AssertionError(f"stream ended: {events}")


async def quiet_mark(client, workspace, *, settle_s: float = 0.4, poll_s: float = 0.1, timeout: float = 60.0) -> int:
    """Wait until the workspace has no build running (earlier saves trigger builds), then
    return the daemon's current seq: later events belong to what the caller does next.
    ``settle_s`` must be longer than the debounce, so no save is still pending."""
    with anyio.fail_after(timeout):
        while True:
            status = await client.request({"type": "status"})
            [ws] = [w for w in status["workspaces"] if w["workspace"] == str(workspace)]
            if not ws["busy"]:
                await anyio.sleep(settle_s)
                status = await client.request({"type": "status"})
                [ws] = [w for w in status["workspaces"] if w["workspace"] == str(workspace)]
                if not ws["busy"]:
                    return status["seq"]
            await anyio.sleep(poll_s)


def is_outcome(event: dict) -> bool:
    """A build's final event, as it happens (not the last patch replayed to a new subscriber)."""
    return not event.get("replayed") and event["type"] in (
        "patch-ready", "build-failed", "patch-rejected", "full-rebuild-required"
    )
