"""Shared pieces for the socket server tests: a small in-memory engine, sample events, a
raw client that checks every line the daemon sends against the protocol's JSON Schema,
and a context manager that runs a real server on a real socket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from daemon.socket.protocol import LineBuffer, RequestError, Subscription
from daemon.socket.protocol_schema import server_message_errors
from daemon.socket.server import DaemonServer
from daemon.socket.single_instance import probe

WORKSPACE = "/srv/demo-workspace"
OTHER_WORKSPACE = "/srv/other-workspace"


class FakeEngine:
    """Remembers the last patch per workspace and records rebuild requests."""

    def __init__(self, workspaces: tuple[str, ...] = (WORKSPACE, OTHER_WORKSPACE)) -> None:
        self.workspaces = list(workspaces)
        self.last_patch: dict[str, dict[str, Any]] = {}
        self.rebuilds: list[tuple[str, str | None]] = []
        self.results: list[dict[str, Any]] = []

    def status(self) -> dict[str, Any]:
        return {"workspaces": [{"workspace": w, "state": "idle"} for w in self.workspaces]}

    async def request_rebuild(self, workspace: str, crate: str | None) -> None:
        if workspace not in self.workspaces:
            raise RequestError(f"workspace {workspace} is not served by this daemon")
        if crate is not None and crate != "demo":
            raise RequestError(f"workspace {workspace} has no crate named {crate!r}")
        self.rebuilds.append((workspace, crate))

    def current_state_for(self, subscription: Subscription) -> list[dict[str, Any]]:
        return [event for event in self.last_patch.values() if subscription.wants(event)]

    async def identify(self, subscription: Subscription) -> tuple[Subscription, list[dict[str, Any]]]:
        return subscription, []  # the real engine matches binaries; tests/service covers it

    def record_patch_result(self, subscription: Subscription | None, fields: dict[str, Any]) -> None:
        if fields["id"] not in {e["id"] for e in self.last_patch.values()}:
            raise RequestError(f"no patch with id {fields['id']!r} is current")
        self.results.append(fields)

    def remember(self, event: dict[str, Any]) -> None:
        if event["type"] == "patch-ready":
            self.last_patch[event["workspace"]] = event


def patch_ready(build_id: int, workspace: str = WORKSPACE, **extra: Any) -> dict[str, Any]:
    return {
        "type": "patch-ready",
        "id": build_id,
        "workspace": workspace,
        "crate": "demo",
        "lib": f"/tmp/thinpatch/patch-{build_id}.so",
        "jump_table": {
            "lib": f"/tmp/thinpatch/patch-{build_id}.so",
            "map": {"4198400": 8192},
            "aslr_reference": 4196000,
            "new_base_address": 4096,
            "ifunc_count": 0,
        },
        "report": {"verified": True},
        "timings": {"rustc_ms": 120.5, "link_ms": 30, "verify_ms": 4, "total_ms": 160},
        "verdict": "carried",
        "changes": [],
        **extra,
    }


def build_started(build_id: int, workspace: str = WORKSPACE) -> dict[str, Any]:
    return {"type": "build-started", "id": build_id, "workspace": workspace, "crate": "demo",
            "files": [f"{workspace}/src/main.rs"]}


def build_failed(build_id: int, workspace: str = WORKSPACE) -> dict[str, Any]:
    rendered = (
        "error[E0425]: cannot find value `x` in this scope\n"
        " --> src/main.rs:3:5\n  |\n3 |     x\n  |     ^ not found in this scope\n\n"
    )
    return {
        "type": "build-failed", "id": build_id, "workspace": workspace, "crate": "demo",
        "message": "rustc exited with status 1",
        "diagnostics": [{
            "message": "cannot find value `x` in this scope", "level": "error",
            "code": {"code": "E0425", "explanation": None},
            "spans": [{"file_name": "src/main.rs", "line_start": 3, "line_end": 3,
                       "column_start": 5, "column_end": 6, "is_primary": True}],
            "children": [], "rendered": rendered,
        }],
    }


def every_event_kind(build_id: int = 1, workspace: str = WORKSPACE) -> list[dict[str, Any]]:
    return [
        build_started(build_id, workspace),
        patch_ready(build_id, workspace),
        build_failed(build_id + 1, workspace),
        {"type": "patch-rejected", "id": build_id + 2, "workspace": workspace, "crate": "demo",
         "reason": "the patch references symbols the running binary does not export",
         "missing_symbols": ["_ZN4demo6helper17h0123456789abcdefE"],
         "action": "run `cargo build` and restart the program"},
        {"type": "restart-required", "id": build_id + 3, "workspace": workspace, "crate": "demo",
         "reason": "demo::Player's layout changed (size 16 → 24 bytes; field `score` added)",
         "changes": [{"function": "demo::frame", "change": "changed", "verdict": "needs-restart",
                      "why": "it uses a type whose layout changed", "file": "src/main.rs", "line": 12}],
         "timings": {"rustc_ms": 120.5, "link_ms": 30, "verify_ms": 4, "analysis_ms": 2.5, "total_ms": 160}},
        {"type": "full-rebuild-required", "workspace": workspace,
         "reason": "Cargo.toml changed", "files": [f"{workspace}/Cargo.toml"]},
        {"type": "session-reset", "workspace": workspace, "reason": "a new fat build was captured"},
        {"type": "not-patchable", "workspace": workspace, "for_pid": 4242, "reason": "replaced",
         "message": "process 4242 runs a binary thinpatch did not capture; restart it with `thinpatch run`"},
        {"type": "patch-result", "id": build_id, "workspace": workspace, "pid": 4242, "applied": False,
         "message": "dlopen failed: no such file"},
        {"type": "error", "message": "the session cache is not writable"},
    ]


class SchemaViolation(AssertionError):
    pass


class RawClient:
    """A client speaking raw bytes, asserting every daemon line matches the schema."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.lines = LineBuffer()
        self.ready: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.hello: dict[str, Any] | None = None
        self._seq = 0

    @classmethod
    @asynccontextmanager
    async def connect(cls, path: Path, *, read_hello: bool = True) -> AsyncIterator[RawClient]:
        stream = await anyio.connect_unix(os.fspath(path))
        async with stream:
            client = cls(stream)
            if read_hello:
                client.hello = await client.read()
                assert client.hello["type"] == "hello", client.hello
            yield client

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send(data)

    async def send(self, message: dict[str, Any]) -> int:
        self._seq += 1
        await self.send_raw(json.dumps({**message, "seq": self._seq}).encode() + b"\n")
        return self._seq

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        seq = await self.send(message)
        reply = await self.read()
        assert reply.get("re") == seq, reply
        return reply

    async def read(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next message; raises EOFError when the daemon closed the connection."""
        with anyio.fail_after(timeout):
            while not self.ready:
                try:
                    chunk = await self.stream.receive(65536)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    raise EOFError("daemon closed the connection") from None
                for line in self.lines.feed(chunk):
                    message = json.loads(line)
                    problems = server_message_errors(message)
                    if problems:
                        raise SchemaViolation(f"{message!r}: {problems}")
                    self.ready.append(message)
        message = self.ready.pop(0)
        self.received.append(message)
        return message

    async def read_until_closed(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        messages = []
        while True:
            try:
                messages.append(await self.read(timeout))
            except EOFError:
                return messages


@asynccontextmanager
async def running_server(engine: Any, socket_path: Path, **options: Any) -> AsyncIterator[DaemonServer]:
    options.setdefault("validate", True)
    server = DaemonServer(engine, socket_path, **options)
    async with anyio.create_task_group() as tg:
        await tg.start(server.run)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


def short_socket_path(tmp_path: Path) -> Path:
    """A socket path short enough for sun_path even under deep pytest temp dirs."""
    path = tmp_path / "thinpatch" / "thinpatch.sock"
    if len(os.fsencode(path)) <= 100:
        return path
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="tp-"))
    return directory / "thinpatch" / "thinpatch.sock"


def start_daemon_process(path: Path) -> subprocess.Popen:
    """Run this file as a separate daemon process on `path`; return once it answers."""
    process = subprocess.Popen(
        [sys.executable, os.fspath(Path(__file__)), os.fspath(path)],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 10
    while probe(path).state != "running":
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "daemon did not start"
        time.sleep(0.02)
    return process


def main(argv: list[str]) -> int:
    """Run a real daemon process with the fake engine: ``protocol_harness.py SOCKET``.

    Serves until SIGTERM/SIGINT or a ``shutdown`` request. Publishes one patch-ready event
    per SIGUSR1, so tests can drive it from outside.
    """
    import signal
    import sys

    from daemon.socket.single_instance import DaemonAlreadyRunning

    socket_path = Path(argv[0]) if argv else None
    engine = FakeEngine()

    async def serve() -> None:
        server = DaemonServer(engine, socket_path, validate=True)
        async with anyio.create_task_group() as tg:

            async def on_signals() -> None:
                build_id = 0
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1) as signals:
                    async for signum in signals:
                        if signum == signal.SIGUSR1:
                            build_id += 1
                            engine.remember(server.publish(patch_ready(build_id)))
                        else:
                            tg.cancel_scope.cancel()

            tg.start_soon(on_signals)
            await server.run()  # returns after a shutdown request
            tg.cancel_scope.cancel()

    try:
        anyio.run(serve)
    except DaemonAlreadyRunning as exc:
        print(f"thinpatch: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
