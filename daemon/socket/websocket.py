"""The WebSocket endpoint: the daemon's protocol for programs on other hosts.

``ws://ADDR:PORT/thinpatch`` (any other path: HTTP 404). A client presents the daemon's token
as ``Authorization: Bearer <token>``; without it the upgrade completes and the connection is
closed at once with code 1008 and the reason. After that it is the Unix socket's protocol,
served by the same :class:`DaemonServer` session, one JSON message per text frame. Two things
differ: ``hello`` says ``"remote": true``, and each ``patch-ready`` carries ``payload`` and is
followed by the library's bytes in binary frames (``daemon.socket.payload``), read from the
file one chunk at a time, so a connection holds about a chunk and websockets' write buffer.

A device that stops reading is closed (1008) once a frame has waited ``stall_timeout`` to be
sent; one whose queue of messages fills is closed the same way. websockets pings every 20 s
and closes a client that does not answer.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

import anyio
import anyio.abc
import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from daemon.socket import protocol
from daemon.socket.listen_address import ENDPOINT_PATH, ListenAddress, exposure_warning
from daemon.socket.payload import Payload, describe, payload_frames
from daemon.socket.protocol import MAX_LINE_BYTES
from daemon.socket.remote_token import token_refusal

if TYPE_CHECKING:
    from daemon.socket.server import DaemonServer, _Connection

log = structlog.get_logger("thinpatch.websocket")

# RFC 6455 close codes: a policy violation (wrong token, a device that stopped reading), and
# "try again later" (too many clients).
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
# A close frame's reason holds at most 123 bytes.
MAX_CLOSE_REASON_BYTES = 123
PING_INTERVAL_S = 20.0
# A frame that could not be handed to the network for this long: the device stopped reading.
SEND_STALL_TIMEOUT_S = 30.0
# Bytes websockets buffers for the network before a send waits (on top of the frame being sent).
WRITE_LIMIT_BYTES = 256 * 1024
CLOSE_TIMEOUT_S = 2.0
# Sizes and hashes of recently sent libraries: twenty devices get one patch hashed once.
PAYLOAD_CACHE_ENTRIES = 16

# websockets reports a client's failed handshake (a plain HTTP request, a dropped connection)
# as an error with a traceback; that is the client's business, not the daemon's log's.
_library_log = logging.getLogger("thinpatch.websocket.library")
_library_log.setLevel(logging.CRITICAL)


def close_reason(text: str) -> str:
    """``text`` cut to what a close frame can carry, at a character boundary."""
    data = text.encode()
    if len(data) <= MAX_CLOSE_REASON_BYTES:
        return text
    return data[: MAX_CLOSE_REASON_BYTES - 3].decode(errors="ignore") + "..."


def authorization(headers: Headers) -> str | None:
    """The one ``Authorization`` header (several are as good as none)."""
    values = headers.get_all("Authorization")
    return values[0] if len(values) == 1 else None


class _Stalled(Exception):
    """The device stopped reading; the connection was dropped."""


class RemoteEndpoint:
    """Serve ``server``'s protocol on ``address`` to clients holding ``token``.

    ``url = await tg.start(endpoint.run)`` returns once it listens, with the ``ws://`` address
    (the real port when ``address`` asked for port 0). Cancelling ``run`` closes every
    WebSocket connection.
    """

    def __init__(
        self,
        server: DaemonServer,
        address: ListenAddress,
        token: str,
        *,
        stall_timeout: float = SEND_STALL_TIMEOUT_S,
        ping_interval: float | None = PING_INTERVAL_S,
        write_limit: int = WRITE_LIMIT_BYTES,
    ) -> None:
        self.server = server
        self.address = address
        self.token = token
        self.stall_timeout = stall_timeout
        self.ping_interval = ping_interval
        self.write_limit = write_limit
        self.url: str | None = None
        self._payloads: OrderedDict[tuple[int, int, int, int], Payload] = OrderedDict()
        self._hashing = anyio.Lock()

    async def run(self, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        warning = exposure_warning(self.address)
        if warning is not None:
            log.warning("listening beyond this machine", endpoint=str(self.address), warning=warning)
        try:
            ws_server: Server = await serve(
                self._handle,
                self.address.host,
                self.address.port,
                process_request=self._only_the_endpoint,
                compression=None,
                server_header=None,
                ping_interval=self.ping_interval,
                ping_timeout=self.ping_interval,
                close_timeout=CLOSE_TIMEOUT_S,
                # A request is one line of the Unix protocol, perhaps with its newline.
                max_size=MAX_LINE_BYTES + 1,
                max_queue=4,
                write_limit=self.write_limit,
                logger=_library_log,
            )
        except OSError as exc:
            raise ListenError(
                f"cannot listen on {self.address}: {exc.strerror or exc}. Choose another address or port "
                "with --listen (port 0 picks a free one), or stop what uses it."
            ) from None
        try:
            port = ws_server.sockets[0].getsockname()[1]
            self.url = self.address.url(port)
            self.server.remote_endpoint = self.url
            log.info("listening for programs on other hosts", endpoint=self.url)
            task_status.started(self.url)
            await anyio.sleep_forever()
        finally:
            self.server.remote_endpoint = None
            ws_server.close()
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT_S + 1):
                await ws_server.wait_closed()

    # ------------------------------------------------------------------ one connection

    def _only_the_endpoint(self, ws: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != ENDPOINT_PATH:
            return ws.respond(HTTPStatus.NOT_FOUND, f"thinpatch listens for WebSocket clients at {ENDPOINT_PATH}\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        peer = _peer(ws)
        refusal = token_refusal(authorization(ws.request.headers) if ws.request else None, self.token)
        if refusal is not None:
            log.warning("refused a remote client", peer=peer, reason=refusal)
            await ws.close(CLOSE_POLICY, refusal)
            return
        if self.server.client_count >= self.server.max_clients:
            log.warning("refused a remote client: too many clients", peer=peer, limit=self.server.max_clients)
            await ws.close(CLOSE_TRY_AGAIN, f"too many clients (limit {self.server.max_clients}); try again later")
            return
        connection = self.server.new_connection(ws, remote=True)
        log.info("remote client connected", client=connection.number, peer=peer)
        await self.server.serve_connection(connection, self._read_loop, self._write_loop)
        if connection.drop_reason is not None:
            await ws.close(CLOSE_POLICY, close_reason(connection.drop_reason))
        else:
            await ws.close()
        log.info("remote client disconnected", client=connection.number, peer=peer)

    async def _read_loop(self, connection: _Connection) -> None:
        ws: ServerConnection = connection.stream
        deadline = anyio.current_time() + self.server.idle_timeout
        while connection.drop_reason is None:
            # Subscribers may stay silent for ever; anyone else must keep asking.
            timeout = None if connection.subscription is not None else max(0.0, deadline - anyio.current_time())
            message: str | bytes | None = None
            with anyio.move_on_after(timeout):
                try:
                    message = await ws.recv()
                except ConnectionClosed:
                    return
            if message is None:
                connection.drop(f"disconnected: no request for {self.server.idle_timeout:g} s and no subscription")
                return
            deadline = anyio.current_time() + self.server.idle_timeout
            connection.requests_completed += 1  # at the client limit, only silent ones make room
            if isinstance(message, bytes):
                self.server.send(connection, protocol.error("send each request as a text frame of JSON"))
                continue
            await self.server.handle_request(connection, message.encode())

    async def _write_loop(self, connection: _Connection) -> None:
        try:
            async with connection.inbox:
                async for message, line in connection.inbox:
                    if message.get("type") == "patch-ready":
                        await self._send_patch(connection, message)
                    else:
                        await self._send(connection, line.decode().rstrip("\n"))
        except (ConnectionClosed, _Stalled, OSError):
            if connection.scope is not None:
                connection.scope.cancel()
        finally:
            connection.writer_done.set()

    async def _send(self, connection: _Connection, frame: str | bytes) -> None:
        ws: ServerConnection = connection.stream
        connection.mid_write = True
        with anyio.move_on_after(self.stall_timeout) as waited:
            await ws.send(frame)
            connection.mid_write = False
        if waited.cancelled_caught:
            connection.drop(
                f"stopped reading: a frame waited {self.stall_timeout:g} s to be sent; read the connection"
            )
            raise _Stalled

    async def _send_patch(self, connection: _Connection, message: dict[str, Any]) -> None:
        """``patch-ready`` with its ``payload``, then the library's bytes in binary frames."""
        lib = str(message.get("lib", ""))
        try:
            library, payload = await self._open_library(lib)
        except OSError as exc:
            text = (
                f"patch {message.get('id')} was built, but its library {lib} could not be read "
                f"({exc.strerror or exc}); save again to build a new one"
            )
            log.warning("a patch library could not be sent", client=connection.number, lib=lib, error=str(exc))
            self.server.send(connection, protocol.error(text))
            return
        with library:
            announced = {**message, "payload": payload.as_field()}
            self.server.check_message(announced)
            await self._send(connection, protocol.encode(announced).decode().rstrip("\n"))
            frames = payload_frames(library, message["id"], payload)
            try:
                while (chunk := await anyio.to_thread.run_sync(next, frames, None)) is not None:
                    await self._send(connection, chunk)
            except (OSError, ValueError) as exc:
                # The device has part of a patch it can't check: only a new connection starts clean.
                connection.drop(close_reason(f"disconnected: reading the patch library failed: {exc}"))
                raise _Stalled from None

    async def _open_library(self, path: str) -> tuple[BinaryIO, Payload]:
        """The library open for reading, and its payload description (hashed once per file)."""
        library = await anyio.to_thread.run_sync(lambda: open(path, "rb"))
        try:
            info = os.fstat(library.fileno())
            key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
            async with self._hashing:
                payload = self._payloads.get(key)
                if payload is None:
                    payload = await anyio.to_thread.run_sync(describe, library, path)
                    self._payloads[key] = payload
                    while len(self._payloads) > PAYLOAD_CACHE_ENTRIES:
                        self._payloads.popitem(last=False)
        except BaseException:
            library.close()
            raise
        return library, payload


class ListenError(RuntimeError):
    """The endpoint cannot listen on the address asked for; the message names the fix."""


def _peer(ws: ServerConnection) -> str:
    address = ws.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
