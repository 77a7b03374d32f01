"""The daemon's socket hub: accepts clients, answers requests, fans events out.

Transport and fan-out only. What to build and when is the engine's job; the engine talks
to the server through :class:`Engine` (what the server asks of it) and
:meth:`DaemonServer.publish` (how it announces events).

Programs (connections that subscribed with a pid or a build ID) report their hot entry points;
the server keeps them per connection, while it lasts. The rest of the daemon reads them with
:meth:`DaemonServer.entry_points` and hears of new ones through
:attr:`DaemonServer.on_entry_points`.

Every client gets a bounded outgoing queue drained by its own writer task, so
``publish`` never blocks and one slow client cannot hold up the others: a client whose
queue fills up is disconnected with a reason.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from itertools import count
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.abc
import structlog
from anyio.abc import SocketAttribute

from daemon import __version__
from daemon.socket import protocol, systemd
from daemon.socket.entry_points import ReportedEntryPoints
from daemon.socket.loop_errors import drop_loop_errors
from daemon.socket.peercred import peer_credentials
from daemon.socket.protocol import (
    EVENT_TYPES,
    MAX_LINE_BYTES,
    EntryPoint,
    LineBuffer,
    LineTooLong,
    ProtocolError,
    Request,
    RequestError,
    Subscription,
)
from daemon.socket.single_instance import BoundSocket, bind_or_fail
from daemon.socket.socket_paths import default_socket_path

__all__ = ["DaemonServer", "Engine", "EntryPoint", "EntryPointsCallback", "RequestError", "Subscription", "serve"]

log = structlog.get_logger("thinpatch.server")

DEFAULT_QUEUE_LIMIT = 256
DEFAULT_MAX_CLIENTS = 1024
# File descriptors kept free for builds (pipes, objects), the watcher and the symbol cache.
RESERVED_FDS = 256
# Connections past the limit while others close to make room for them (a fraction of RESERVED_FDS).
CLOSING_ALLOWANCE = 64
MAX_FD_SOFT_LIMIT = 65536
# A connection that has not subscribed is closed after this long without a request.
IDLE_TIMEOUT_S = 60.0
# Unfinished lines held for all clients together; a client past it is disconnected.
TOTAL_PENDING_INPUT_BYTES = 32 * 1024 * 1024
READ_CHUNK_BYTES = 64 * 1024
# A writer sends queued messages in batches of up to this many bytes.
WRITE_BATCH_BYTES = 256 * 1024
# How long a client that hung up its sending side, or the whole server on shutdown,
# waits for queued messages to be written.
FLUSH_TIMEOUT_S = 0.5
FINAL_MESSAGE_TIMEOUT_S = 0.2
ENV_VALIDATE = "THINPATCH_VALIDATE_PROTOCOL"


def raise_fd_limit(ceiling: int = MAX_FD_SOFT_LIMIT) -> int:
    """Raise the soft limit on open files toward the hard limit; return the soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return ceiling if soft == resource.RLIM_INFINITY else soft


def quiet_readiness_races() -> Callable[[], None]:
    """Keep one known race out of the log: anyio's asyncio backend wakes a socket wait with
    ``Future.set_result`` from the event loop, and when the wait was cancelled in the same
    loop turn (a client that hung up as the server gave up on it), asyncio logs the
    resulting InvalidStateError as a traceback. The server avoids cancelling socket waits;
    this catches the ones it can't (shutdown). Returns a function that restores the
    previous handler. Does nothing outside asyncio."""
    import asyncio

    def harmless(context: dict[str, Any]) -> bool:
        if isinstance(context.get("exception"), asyncio.InvalidStateError) and "Future.set_result" in repr(
            context.get("handle")
        ):
            log.debug("a socket became ready as its wait was cancelled")
            return True
        return False

    return drop_loop_errors(harmless)


def client_limit(fd_limit: int) -> int:
    """How many clients fit beside the descriptors builds need (one descriptor each)."""
    return max(8, min(DEFAULT_MAX_CLIENTS * 4, fd_limit - RESERVED_FDS))


# What a connection's queue holds: a message as stamped, and its encoded line.
Outgoing = tuple[dict[str, Any], bytes]
# A transport's half of serving one connection: reading requests, or writing its queue.
ConnectionLoop = Callable[["_Connection"], Coroutine[Any, Any, None]]


# Told of entry points a program reported for the first time on its connection: the build ID
# of its binary, and those entries (with its pid).
EntryPointsCallback = Callable[[str, list[EntryPoint]], None]


class Engine(Protocol):
    """What the server needs from whoever watches and builds."""

    def status(self) -> dict[str, Any]:
        """Status fields merged into the ``status`` reply; at least ``workspaces`` (a list
        of objects, each with a ``workspace`` path)."""
        ...

    async def request_rebuild(self, workspace: str, crate: str | None) -> None:
        """Schedule a rebuild. Raise :class:`RequestError` (plain English) for bad input,
        such as a workspace that is not served or a crate it does not have."""
        ...

    def current_state_for(self, subscription: Subscription) -> list[dict[str, Any]]:
        """Events a new subscriber should see first: per workspace, the last patch that
        is valid for it. Synchronous, so no event can slip in between."""
        ...

    async def identify(self, subscription: Subscription) -> tuple[Subscription, list[dict[str, Any]]]:
        """The subscription completed with the binary the subscriber runs (its build ID), and
        events for it alone (such as `not-patchable`) to send right after `subscribed`."""
        ...

    def record_patch_result(self, subscription: Subscription | None, fields: dict[str, Any]) -> None:
        """A process reports whether it applied a patch. Raise RequestError for an unknown id."""
        ...


class _Connection:
    def __init__(self, number: int, stream: Any, queue_limit: int, *, remote: bool = False) -> None:
        self.number = number
        self.stream = stream  # the transport's: a Unix socket stream, or a WebSocket connection
        self.remote = remote  # on the WebSocket endpoint: another host's program, no /proc to read
        self.queue_limit = queue_limit
        self.outbox, self.inbox = anyio.create_memory_object_stream[Outgoing](queue_limit)
        self.subscription: Subscription | None = None
        self.entry_points = ReportedEntryPoints()
        self.scope: anyio.CancelScope | None = None
        self.drop_reason: str | None = None
        self.mid_write = False
        self.writer_done = anyio.Event()
        self.requests_completed = 0
        # When a connection that has not subscribed is closed unless a request completes first.
        self.deadline = float("inf")

    def enqueue(self, data: Outgoing) -> bool:
        """Queue one encoded message without blocking. A full queue drops the client."""
        if self.drop_reason is not None:
            return False
        try:
            self.outbox.send_nowait(data)
        except anyio.WouldBlock:
            self.drop(
                f"disconnected: this client fell behind ({self.queue_limit} messages waiting "
                "to be read)"
            )
            return False
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False
        return True

    def drop(self, reason: str) -> None:
        if self.drop_reason is None:
            self.drop_reason = reason
            self.stop_reading()

    def stop_reading(self) -> None:
        """End the read loop by shutting the socket's receiving side: the pending read returns
        end-of-stream. Cancelling a read that waits on the socket instead races the socket's
        own readiness callback in the same loop turn (anyio's asyncio backend then logs an
        InvalidStateError traceback), which rapid connect/disconnect cycles hit."""
        try:
            if self.remote:  # a WebSocket's read waits in its own library: cancelling is safe there
                raise anyio.TypedAttributeLookupError
            self.stream.extra(SocketAttribute.raw_socket).shutdown(socket.SHUT_RD)
        except (OSError, anyio.TypedAttributeLookupError):
            if self.scope is not None:  # no socket to shut: the last resort is cancelling
                self.scope.cancel()


class DaemonServer:
    """Serve the protocol (:data:`protocol.PROTOCOL_VERSION`) on a Unix socket.

    ``await tg.start(server.run)`` returns once the socket is listening, with the server
    itself as the start value. ``run`` returns after a client's ``shutdown`` request, and
    stops within a second when cancelled; either way the listener and clients are closed
    and the socket file is removed (unless systemd owns it).
    """

    def __init__(
        self,
        engine: Engine,
        socket_path: Path | str | None = None,
        *,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        max_clients: int | None = None,
        idle_timeout: float = IDLE_TIMEOUT_S,
        max_pending_input: int = TOTAL_PENDING_INPUT_BYTES,
        validate: bool | None = None,
        listen_socket: socket.socket | None = None,
        version: str = __version__,
    ) -> None:
        self.engine = engine
        self.socket_path = Path(socket_path) if socket_path else default_socket_path()
        self.queue_limit = queue_limit
        if max_clients is None:
            import resource

            max_clients = client_limit(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout
        self.max_pending_input = max_pending_input
        self.pending_input = 0  # bytes of unfinished lines held for all clients
        self.version = version
        self.socket_activated = False
        # The WebSocket endpoint's ws:// address while one listens (daemon.socket.websocket).
        self.remote_endpoint: str | None = None
        self._listen_socket = listen_socket
        self._uid = os.geteuid()
        self._seq = count(1)
        self._connection_numbers = count(1)
        self._connections: set[_Connection] = set()
        self._shutdown: anyio.Event | None = None
        self._started_at = time.monotonic()
        # Set by the engine to hear of new entry points; called on the event loop's thread.
        self.on_entry_points: EntryPointsCallback | None = None
        if validate is None:
            validate = os.environ.get(ENV_VALIDATE, "") not in ("", "0")
        self._check: Callable[[dict[str, Any]], None] | None = None
        if validate:
            from daemon.socket.protocol_schema import check_server_message

            self._check = check_server_message

    # ------------------------------------------------------------------ public API

    def publish(self, event: dict[str, Any]) -> dict[str, Any]:
        """Send ``event`` to every subscriber that wants it. Never blocks.

        Call it from the event loop's thread. Returns the event as sent (with ``seq``).
        """
        kind = event.get("type")
        if kind not in EVENT_TYPES:
            raise ValueError(f"not an event type: {kind!r}")
        # Set on the caller's dict: the engine keeps it as the current state, and a replay
        # must show when the event happened, not when it was re-sent.
        event.setdefault("time", round(time.time(), 3))
        stamped = self._stamp(event)
        for connection in list(self._connections):
            if connection.subscription is not None and connection.subscription.wants(stamped[0]):
                connection.enqueue(stamped)
        return stamped[0]

    def request_shutdown(self) -> None:
        if self._shutdown is not None:
            self._shutdown.set()

    @property
    def client_count(self) -> int:
        return len(self._connections)

    def processes_running(self, build_id: str) -> int:
        """Subscribed processes whose binary has ``build_id``."""
        return sum(
            1
            for c in self._connections
            if c.subscription is not None and not c.subscription.is_observer and c.subscription.build_id == build_id
        )

    def entry_points(self, build_id: str) -> list[EntryPoint]:
        """The hot entry points reported by the processes connected now whose binary has
        ``build_id``: each process's entries in the order it first called them, processes in
        the order they connected. The same entry reported by two processes appears once for
        each (``pid`` tells them apart). A process's entries are gone once it disconnects."""
        found: list[EntryPoint] = []
        for connection in sorted(self._connections, key=lambda c: c.number):
            subscription = connection.subscription
            if subscription is not None and not subscription.is_observer and subscription.build_id == build_id:
                found.extend(connection.entry_points)
        return found

    @property
    def subscriber_count(self) -> int:
        return sum(1 for c in self._connections if c.subscription is not None)

    def queued_messages(self) -> int:
        """Messages waiting in all client queues (bounded by clients × queue_limit)."""
        return sum(c.outbox.statistics().current_buffer_used for c in self._connections)

    async def run(self, *, task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        self._shutdown = anyio.Event()
        bound: BoundSocket | None = None
        sock = self._listen_socket
        if sock is None:
            sock = systemd.activated_unix_listener()
            self.socket_activated = sock is not None
        if sock is None:
            bound = await anyio.to_thread.run_sync(bind_or_fail, self.socket_path)
            sock = bound.sock
        else:
            name = sock.getsockname()
            if isinstance(name, str) and name:
                self.socket_path = Path(name)
        listener = await anyio.abc.SocketListener.from_socket(sock)
        restore_handler = quiet_readiness_races()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._accept_loop, listener, tg)
                log.info("listening", socket=str(self.socket_path), activated=self.socket_activated)
                systemd.notify_ready(f"listening on {self.socket_path}")
                task_status.started(self)
                await self._shutdown.wait()
                log.info("shutdown requested by a client")
                await self._flush_all()
                tg.cancel_scope.cancel()
        finally:
            restore_handler()
            systemd.notify_stopping()
            with anyio.CancelScope(shield=True):
                await listener.aclose()
            if bound is not None:
                bound.release()
            self._connections.clear()
            log.info("stopped", socket=str(self.socket_path))

    # ------------------------------------------------------------------ connections

    async def _accept_loop(self, listener: anyio.abc.SocketListener, tg: anyio.abc.TaskGroup) -> None:
        while True:
            try:
                stream = await listener.accept()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            except OSError as exc:  # EMFILE and friends: wait for descriptors to free up
                log.warning("accept failed", error=str(exc))
                await anyio.sleep(0.1)
                continue
            tg.start_soon(self._serve_connection, stream)

    async def _serve_connection(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            refusal = self._refusal_for(stream)
            if refusal is not None:
                await self._send_final(stream, protocol.error(refusal))
                return
            connection = self.new_connection(stream)
            connection.deadline = anyio.current_time() + self.idle_timeout
            await self.serve_connection(connection, self._read_loop, self._write_loop, self._close_when_idle)
            if connection.drop_reason is not None and not connection.mid_write:
                await self._send_final(stream, protocol.error(connection.drop_reason))

    # The transport seam: the Unix socket above and the WebSocket endpoint (daemon.socket.websocket)
    # each accept, read and write in their own way; the session below is the same for both.

    def new_connection(self, stream: Any, *, remote: bool = False) -> _Connection:
        return _Connection(next(self._connection_numbers), stream, self.queue_limit, remote=remote)

    async def serve_connection(
        self,
        connection: _Connection,
        read_loop: ConnectionLoop,
        write_loop: ConnectionLoop,
        watchdog: ConnectionLoop | None = None,
    ) -> None:
        """Serve an accepted connection until it ends: `hello` first, requests as ``read_loop``
        hands them to :meth:`handle_request`, and the connection's queue written by ``write_loop``
        (``watchdog``, if any, beside them: the transport's idle limit).
        Sets ``connection.drop_reason`` when the daemon ended it; the transport says so last."""
        self._connections.add(connection)
        log.debug("client connected", client=connection.number, clients=len(self._connections))
        try:
            async with anyio.create_task_group() as tg:
                connection.scope = tg.cancel_scope
                connection.enqueue(self._encode(protocol.hello(self.version, os.getpid(), remote=connection.remote)))
                tg.start_soon(write_loop, connection)
                if watchdog is not None:
                    tg.start_soon(watchdog, connection)
                await read_loop(connection)
                # The client stopped sending: write what it is owed, then hang up.
                connection.outbox.close()
                with anyio.move_on_after(FLUSH_TIMEOUT_S):
                    await connection.writer_done.wait()
                tg.cancel_scope.cancel()
        except Exception:
            log.exception("client connection failed", client=connection.number)
        finally:
            self._connections.discard(connection)
            connection.subscription = None
            connection.entry_points.clear()
        if connection.drop_reason is not None:
            log.warning("client dropped", client=connection.number, reason=connection.drop_reason)
        log.debug("client disconnected", client=connection.number)

    async def handle_request(self, connection: _Connection, data: bytes) -> None:
        """One request as the transport received it (a line, or a text message)."""
        await self._handle_line(connection, data)

    def send(self, connection: _Connection, message: dict[str, Any]) -> None:
        """Queue a message for one connection (numbered now), such as a transport's own `error`."""
        connection.enqueue(self._encode(message))

    def check_message(self, message: dict[str, Any]) -> None:
        """Check a message a transport completed (a patch's ``payload``) against the schema, when asked to."""
        if self._check is not None:
            self._check(message)

    def _refusal_for(self, stream: anyio.abc.SocketStream) -> str | None:
        raw = stream.extra(SocketAttribute.raw_socket)
        try:
            credentials = peer_credentials(raw)
        except OSError:
            credentials = None
        if credentials is not None and credentials.uid != self._uid:
            log.warning("refused a client of another user", uid=credentials.uid, pid=credentials.pid)
            return (
                f"permission denied: this thinpatch daemon serves uid {self._uid} only, "
                f"and this client runs as uid {credentials.uid}"
            )
        if len(self._connections) >= self.max_clients and not self._make_room():
            log.warning("refused a client: too many clients", limit=self.max_clients)
            return f"too many clients (limit {self.max_clients}); try again later"
        return None

    def _make_room(self) -> bool:
        """At the limit, close the oldest connection that never completed a request (and is
        not subscribed) for the new one. False when every connection has, or when too many
        are still closing (each holds a descriptor until it is gone)."""
        staying = [c for c in self._connections if c.drop_reason is None]
        if len(self._connections) >= self.max_clients + CLOSING_ALLOWANCE:
            return False
        if len(staying) < self.max_clients:
            return True  # room is being made already
        silent = [c for c in staying if c.requests_completed == 0 and c.subscription is None]
        if not silent:
            return False
        oldest = min(silent, key=lambda c: c.number)
        log.warning("closed a client that sent no request, to make room", client=oldest.number)
        oldest.drop(
            f"disconnected: the daemon is at its limit of {self.max_clients} clients, and this connection "
            "had sent no complete request, so it made room for a new client. Send each request as one line."
        )
        return True

    async def _send_final(self, stream: anyio.abc.SocketStream, message: dict[str, Any]) -> None:
        """Best effort: a last message before closing, never waiting long."""
        with anyio.move_on_after(FINAL_MESSAGE_TIMEOUT_S):
            try:
                await stream.send(self._encode(message)[1])
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass

    async def _read_loop(self, connection: _Connection) -> None:
        lines = LineBuffer(MAX_LINE_BYTES)
        held = 0  # this connection's share of self.pending_input
        try:
            while connection.drop_reason is None:
                try:
                    chunk = await connection.stream.receive(READ_CHUNK_BYTES)
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    last = lines.finish()
                    if last is not None and connection.drop_reason is None:
                        await self._handle_line(connection, last)
                    return
                try:
                    complete = lines.feed(chunk)
                except LineTooLong as exc:
                    log.warning("client sent an oversized line", client=connection.number)
                    connection.enqueue(self._encode(protocol.error(str(exc))))
                    return
                self.pending_input += lines.pending_bytes - held
                held = lines.pending_bytes
                if held and self.pending_input > self.max_pending_input:
                    connection.drop(
                        "disconnected: the daemon holds too much unfinished input from its clients; "
                        "send each message as one complete line"
                    )
                    return
                if complete:
                    # Only a complete request moves the deadline: bytes dripped one at a time don't.
                    connection.deadline = anyio.current_time() + self.idle_timeout
                    connection.requests_completed += len(complete)
                for line in complete:
                    await self._handle_line(connection, line)
                    if connection.drop_reason is not None:
                        return
        finally:
            self.pending_input -= held

    async def _close_when_idle(self, connection: _Connection) -> None:
        """Close a connection that has not subscribed once its deadline passes without a
        complete request. Subscribers may stay silent for ever."""
        while connection.drop_reason is None:
            remaining = connection.deadline - anyio.current_time()
            if remaining > 0:
                await anyio.sleep(remaining)
            elif connection.subscription is None:
                connection.drop(
                    f"disconnected: no request for {self.idle_timeout:g} s and no subscription "
                    "(a request counts once its line is complete)"
                )
            else:
                connection.deadline = anyio.current_time() + self.idle_timeout

    async def _write_loop(self, connection: _Connection) -> None:
        try:
            async with connection.inbox:
                async for _, data in connection.inbox:
                    batch = [data]
                    size = len(data)
                    while size < WRITE_BATCH_BYTES:
                        try:
                            _, more = connection.inbox.receive_nowait()
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                        batch.append(more)
                        size += len(more)
                    connection.mid_write = True
                    await connection.stream.send(b"".join(batch))
                    connection.mid_write = False
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            connection.stop_reading()  # the peer went away
        finally:
            connection.writer_done.set()

    async def _flush_all(self) -> None:
        for connection in list(self._connections):
            connection.outbox.close()
        with anyio.move_on_after(FLUSH_TIMEOUT_S):
            for connection in list(self._connections):
                await connection.writer_done.wait()

    # ------------------------------------------------------------------ requests

    async def _handle_line(self, connection: _Connection, line: bytes) -> None:
        if not line.strip():
            return  # blank lines are harmless (keep-alives from hand-typed sessions)
        try:
            request = protocol.parse_request(line)
        except ProtocolError as exc:
            connection.enqueue(self._encode(protocol.error(str(exc), exc.re_seq)))
            return
        try:
            for reply in await self._answer(connection, request):
                connection.enqueue(self._encode(reply))
        except RequestError as exc:
            connection.enqueue(self._encode(protocol.error(str(exc), request.seq)))
        except Exception as exc:
            log.exception("request failed", client=connection.number, request=request.type)
            message = f"internal error while handling {request.type!r}: {type(exc).__name__}: {exc}"
            connection.enqueue(self._encode(protocol.error(message, request.seq)))

    async def _answer(self, connection: _Connection, request: Request) -> list[dict[str, Any]]:
        if request.type == "ping":
            return [protocol.reply("pong", request.seq)]
        if request.type == "status":
            return [self._status_reply(request.seq)]
        if request.type == "subscribe":
            subscription, notices = await self._identify(connection, request.subscription())
            current = self.engine.current_state_for(subscription)
            # No await from here on: the snapshot and the switch-over are atomic.
            connection.subscription = subscription
            # A program sends its entry points after each `subscribed`.
            connection.entry_points.clear()
            fields = dict(request.fields)
            if subscription.build_id is not None:
                fields["build_id"] = subscription.build_id
            replies = [protocol.reply("subscribed", request.seq, **fields)]
            replies += notices
            replies += [{**event, "replayed": True} for event in current]
            return replies
        if request.type == "patch-result":
            self.engine.record_patch_result(connection.subscription, dict(request.fields))
            return [protocol.reply("ok", request.seq)]
        if request.type == "entry-points":
            self._record_entry_points(connection, request)
            return [protocol.reply("ok", request.seq)]
        if request.type == "rebuild":
            await self.engine.request_rebuild(request.fields["workspace"], request.fields.get("crate"))
            return [protocol.reply("ok", request.seq)]
        if request.type == "shutdown":
            self.request_shutdown()
            return [protocol.reply("ok", request.seq)]
        raise AssertionError(f"unhandled request type {request.type}")

    async def _identify(
        self, connection: _Connection, wanted: Subscription
    ) -> tuple[Subscription, list[dict[str, Any]]]:
        if not connection.remote:
            return await self.engine.identify(wanted)
        # Another host's pid means nothing here: only the build ID identifies its binary.
        if wanted.pid is not None and wanted.build_id is None:
            raise RequestError(
                "a program on another host must subscribe with 'build_id' (its binary's build ID): "
                "the daemon cannot read that host's processes"
            )
        subscription, notices = await self.engine.identify(replace(wanted, pid=None))
        return replace(subscription, pid=wanted.pid), notices

    def _record_entry_points(self, connection: _Connection, request: Request) -> None:
        subscription = connection.subscription
        if subscription is None or subscription.is_observer:
            raise RequestError(
                "'entry-points' are a program's: subscribe with 'pid' or 'build_id' first"
            )
        new = connection.entry_points.add(request.entry_points(subscription.pid))
        if new:
            log.debug("entry points reported", client=connection.number, pid=subscription.pid, new=len(new))
        callback = self.on_entry_points
        if new and callback is not None and subscription.build_id is not None:
            try:
                callback(subscription.build_id, new)
            except Exception:
                # The engine's trouble, not the client's: it still gets `ok`.
                log.exception("the entry points callback failed", client=connection.number)

    def _status_reply(self, re_seq: int | None) -> dict[str, Any]:
        fields: dict[str, Any] = {"workspaces": []}
        fields.update(self.engine.status())
        fields["daemon"] = {
            "pid": os.getpid(),
            "version": self.version,
            "protocol": protocol.PROTOCOL_VERSION,
            "socket": str(self.socket_path),
            "socket_activated": self.socket_activated,
            "uptime_s": round(time.monotonic() - self._started_at, 3),
            "clients": len(self._connections),
            "subscribers": self.subscriber_count,
        }
        if self.remote_endpoint is not None:
            fields["daemon"]["listen"] = self.remote_endpoint
        fields.pop("seq", None)
        fields.pop("re", None)
        return protocol.reply("status", re_seq, **{k: v for k, v in fields.items() if k != "type"})

    # ------------------------------------------------------------------ encoding

    def _stamp(self, message: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        stamped = {**message, "seq": next(self._seq)}
        if self._check is not None:
            self._check(stamped)
        return stamped, protocol.encode(stamped)

    def _encode(self, message: dict[str, Any]) -> Outgoing:
        return self._stamp(message)


async def serve(
    engine: Engine,
    socket_path: Path | str | None = None,
    *,
    task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Run a :class:`DaemonServer` until shutdown or cancellation.

    ``server = await tg.start(serve, engine)`` gives the running server, whose
    ``publish`` the engine calls.
    """
    server = DaemonServer(engine, socket_path, **options)
    await server.run(task_status=task_status)
