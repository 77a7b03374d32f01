"""A WebSocket endpoint over a real DaemonServer with the fake engine, for the socket tests:
in this process (``remote_server``), or as a daemon process of its own
(``python -m tests.socket.remote_harness SOCKET PORT LIBRARY`` from the checkout), which publishes one `patch-ready` for
LIBRARY per SIGUSR1 and reuses the token kept beside SOCKET, as the daemon does."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from daemon.socket.listen_address import ListenAddress
from daemon.socket.payload import split_frame
from daemon.socket.protocol_schema import server_message_errors
from daemon.socket.remote_token import load_or_create_token
from daemon.socket.server import DaemonServer
from daemon.socket.websocket import RemoteEndpoint
from tests.support.protocol_harness import FakeEngine, patch_ready

BUILD_ID = "f804d21ea4552fbea2211314b12d749a464b8b52"


def remote_patch(build_id: int, lib: Path, for_build_id: str = BUILD_ID) -> dict[str, Any]:
    event = patch_ready(build_id, for_build_id=for_build_id, subscribers=1)
    event["lib"] = str(lib)
    event["jump_table"] = {**event["jump_table"], "lib": str(lib)}
    return event


@asynccontextmanager
async def remote_server(
    socket_path: Path, engine: Any | None = None, **endpoint_options: Any
) -> AsyncIterator[tuple[DaemonServer, str, str]]:
    """A server on ``socket_path`` and its WebSocket endpoint on a free loopback port:
    (server, ws:// url, token)."""
    server = DaemonServer(engine or FakeEngine(), socket_path, validate=True)
    async with anyio.create_task_group() as tg:
        await tg.start(server.run)
        token = load_or_create_token(server.socket_path)
        endpoint = RemoteEndpoint(server, ListenAddress("127.0.0.1", 0), token, **endpoint_options)
        url = await tg.start(endpoint.run)
        try:
            yield server, url, token
        finally:
            tg.cancel_scope.cancel()


def checked(text: str | bytes) -> dict[str, Any]:
    """A text frame from the daemon, checked against the protocol's schema."""
    assert isinstance(text, str), f"expected a text frame, got {len(text)} binary bytes"
    message = json.loads(text)
    assert server_message_errors(message) == [], message
    return message


async def receive_patch(ws: Any, timeout: float = 30.0) -> tuple[dict[str, Any], bytes]:
    """The next `patch-ready` (skipping other messages) and the library bytes that follow it."""
    with anyio.fail_after(timeout):
        while True:
            message = checked(await ws.recv())
            if message["type"] == "patch-ready":
                break
        payload = message["payload"]
        data = bytearray()
        for index in range(payload["chunks"]):
            frame = await ws.recv()
            assert isinstance(frame, bytes), f"expected binary frame {index}, got {frame!r}"
            header, chunk = split_frame(frame)
            assert header == {"id": message["id"], "index": index, "offset": len(data)}
            data += chunk
        return message, bytes(data)


def main(argv: list[str]) -> int:
    import signal

    from daemon.cli.logging_setup import configure_logging

    configure_logging("info", stream=sys.stderr)  # stdout tells the test what happened
    socket_path, port, library = Path(argv[0]), int(argv[1]), Path(argv[2])
    engine = FakeEngine()

    async def serve() -> None:
        server = DaemonServer(engine, socket_path, validate=True)
        async with anyio.create_task_group() as tg:
            await tg.start(server.run)
            token = load_or_create_token(server.socket_path)
            await tg.start(RemoteEndpoint(server, ListenAddress("127.0.0.1", port), token).run)
            number = 0
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGUSR1) as signals:
                print("listening", flush=True)
                async for signum in signals:
                    if signum == signal.SIGTERM:
                        break
                    number += 1
                    engine.remember(server.publish(remote_patch(number, library)))
                    print(f"published {number}", flush=True)
            tg.cancel_scope.cancel()

    anyio.run(serve)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
