"""Async client for the daemon's socket (protocol v2).

::

    async with connect() as client:
        print(client.hello["pid"])
        status = await client.request({"type": "status"})
        await client.subscribe(workspace="/path/to/ws")
        async for event in client.events():
            ...

A background task reads every line: replies are matched to requests by ``re``, and
everything else (events, connection errors) goes to :meth:`DaemonClient.events`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import count
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectSendStream

from daemon.socket import protocol
from daemon.socket.peercred import peer_credentials
from daemon.socket.protocol import LineBuffer, ProtocolError
from daemon.socket.socket_paths import ENV_SOCKET, default_socket_path, untrusted_socket_reason

DEFAULT_TIMEOUT_S = 5.0
# Events buffered on the client side before the reader stops reading (and the daemon,
# seeing its queue for us fill up, eventually disconnects us).
EVENT_BUFFER = 4096


class DaemonUnavailable(ConnectionError):
    """No daemon answers at the socket path."""


class DaemonNotTrusted(DaemonUnavailable):
    """Whatever listens at the socket path might not be this user's daemon: refused."""


def _not_trusted(socket_path: Path, reason: str) -> DaemonNotTrusted:
    return DaemonNotTrusted(
        f"refusing to talk to {socket_path}: {reason}. Another user could be impersonating the daemon; "
        f"remove that directory (or set {ENV_SOCKET} to a path in a directory only you can write) "
        "and start the daemon again."
    )


def verify_peer(stream: anyio.abc.SocketStream, socket_path: Path) -> None:
    """Refuse a daemon that runs as another user (SO_PEERCRED / LOCAL_PEERCRED)."""
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    try:
        credentials = peer_credentials(raw)
    except OSError as exc:
        raise _not_trusted(socket_path, f"cannot tell who runs the daemon ({exc.strerror or exc})") from None
    if credentials is None:
        raise _not_trusted(socket_path, "this system does not say who runs the daemon")
    if credentials.uid != os.geteuid():
        raise _not_trusted(socket_path, f"the daemon runs as uid {credentials.uid}, not as you (uid {os.geteuid()})")


class DaemonDisconnected(ConnectionError):
    """The daemon closed the connection. ``reason`` is its last error message, if any."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class RequestFailed(RuntimeError):
    """The daemon answered a request with an ``error``."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(reply.get("message", "request failed"))
        self.reply = reply


class DaemonClient:
    def __init__(self, stream: anyio.abc.SocketStream, path: Path) -> None:
        self.path = path
        self.hello: dict[str, Any] = {}
        self.disconnect_reason: str | None = None
        self._stream = stream
        self._seq = count(1)
        self._pending: dict[int, MemoryObjectSendStream[dict[str, Any]]] = {}
        self._events_in, self._events_out = anyio.create_memory_object_stream[dict[str, Any]](EVENT_BUFFER)
        self._closed = False

    async def request(self, message: dict[str, Any], *, timeout: float | None = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        """Send a request and return its reply. Raises :class:`RequestFailed` on ``error``."""
        if self._closed:
            raise DaemonDisconnected("not connected to the daemon", self.disconnect_reason)
        seq = next(self._seq)
        reply_in, reply_out = anyio.create_memory_object_stream[dict[str, Any]](1)
        self._pending[seq] = reply_in
        try:
            await self._stream.send(protocol.encode({**message, "seq": seq}))
            with anyio.fail_after(timeout):
                try:
                    reply = await reply_out.receive()
                except anyio.EndOfStream:
                    raise DaemonDisconnected(
                        "the daemon closed the connection before answering", self.disconnect_reason
                    ) from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise DaemonDisconnected(f"lost the connection to the daemon: {exc}", self.disconnect_reason) from None
        finally:
            self._pending.pop(seq, None)
            reply_out.close()
        if reply.get("type") == "error":
            raise RequestFailed(reply)
        return reply

    async def subscribe(
        self,
        workspace: str | None = None,
        *,
        pid: int | None = None,
        aslr_reference: int | None = None,
        build_id: str | None = None,
    ) -> dict[str, Any]:
        fields = {"workspace": workspace, "pid": pid, "aslr_reference": aslr_reference, "build_id": build_id}
        return await self.request({"type": "subscribe", **{k: v for k, v in fields.items() if v is not None}})

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Events as they arrive; ends when the daemon closes the connection."""
        async for event in self._events_out:
            yield event

    async def aclose(self) -> None:
        self._closed = True
        await self._stream.aclose()

    async def _read_forever(self, lines: LineBuffer) -> None:
        """Dispatch every line until the daemon hangs up. ``lines`` may hold a partial line
        left over from reading the hello."""
        try:
            while True:
                try:
                    chunk = await self._stream.receive(65536)
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    return
                for line in lines.feed(chunk):
                    self._dispatch(protocol.decode(line))
        except ProtocolError as exc:
            self.disconnect_reason = f"the daemon sent something unreadable: {exc}"
        finally:
            self._closed = True
            for pending in self._pending.values():
                pending.close()
            self._events_in.close()

    def _dispatch(self, message: dict[str, Any]) -> None:
        re_seq = message.get("re")
        if re_seq is not None and re_seq in self._pending:
            try:
                self._pending[re_seq].send_nowait(message)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
            return
        if message.get("type") == "error" and re_seq is None:
            self.disconnect_reason = message.get("message")
        if protocol.is_event(message):
            try:
                self._events_in.send_nowait(message)
            except anyio.WouldBlock:
                self.disconnect_reason = "this client fell behind reading events"


START_HINT = "Start it with `thinpatch serve` (or `thinpatch service install` to start it with your session)."


async def _open(path: Path) -> anyio.abc.SocketStream:
    try:
        return await anyio.connect_unix(os.fspath(path))
    except FileNotFoundError:
        raise DaemonUnavailable(f"thinpatch daemon is not running (no socket at {path}). {START_HINT}") from None
    except ConnectionRefusedError:
        raise DaemonUnavailable(f"thinpatch daemon is not running (stale socket at {path}). {START_HINT}") from None
    except PermissionError:
        raise DaemonUnavailable(f"permission denied connecting to {path}") from None
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            raise DaemonUnavailable(f"thinpatch daemon is not running at {path}. {START_HINT}") from None
        raise DaemonUnavailable(f"cannot connect to {path}: {exc.strerror or exc}") from None


async def _read_hello(stream: anyio.abc.SocketStream, lines: LineBuffer) -> tuple[dict[str, Any], list[bytes]]:
    while True:
        try:
            chunk = await stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            raise DaemonUnavailable("the daemon closed the connection before saying hello") from None
        found = lines.feed(chunk)
        if found:
            return protocol.decode(found[0]), found[1:]


@asynccontextmanager
async def connect(path: Path | str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S) -> AsyncIterator[DaemonClient]:
    """Connect, read the daemon's ``hello``, and yield a :class:`DaemonClient`."""
    socket_path = Path(path) if path else default_socket_path()
    reason = untrusted_socket_reason(socket_path)
    if reason is not None:
        raise _not_trusted(socket_path, reason)
    try:
        with anyio.fail_after(timeout):
            stream = await _open(socket_path)
    except TimeoutError:
        raise DaemonUnavailable(f"timed out connecting to {socket_path}") from None
    async with stream:
        try:
            verify_peer(stream, socket_path)
        except DaemonNotTrusted:
            await stream.aclose()
            raise
        lines = LineBuffer(protocol.MAX_LINE_BYTES)
        try:
            with anyio.fail_after(timeout):
                first, rest = await _read_hello(stream, lines)
        except TimeoutError:
            raise DaemonUnavailable(f"no hello from {socket_path} within {timeout:g} s") from None
        if first.get("type") == "error":
            raise DaemonUnavailable(f"the daemon refused the connection: {first.get('message')}")
        if first.get("type") != "hello" or first.get("protocol") != protocol.PROTOCOL_VERSION:
            raise DaemonUnavailable(
                f"unexpected greeting from {socket_path}: expected protocol "
                f"{protocol.PROTOCOL_VERSION} hello, got {first!r}"
            )
        client = DaemonClient(stream, socket_path)
        client.hello = first
        for line in rest:  # lines that arrived together with the hello
            client._dispatch(protocol.decode(line))
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(client._read_forever, lines)
                try:
                    yield client
                finally:
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The caller's own error (RequestFailed, ...) as itself, not wrapped by the reader's task group.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

