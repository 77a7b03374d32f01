"""`thinpatch serve`: the engine and the socket server in one process, with clean shutdown."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import structlog

from daemon.service.engine import Engine, EngineOptions
from daemon.socket.listen_address import ListenAddress
from daemon.socket.remote_token import load_or_create_token
from daemon.socket.server import DaemonServer, client_limit, raise_fd_limit
from daemon.socket.websocket import RemoteEndpoint

log = structlog.get_logger("thinpatch.serve")


async def serve_forever(
    socket_path: Path | None,
    workspaces: list[str | Path] | None,
    options: EngineOptions,
    *,
    listen: ListenAddress | None = None,
    task_status: anyio.abc.TaskStatus[tuple[Engine, DaemonServer]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run until SIGTERM/SIGINT, a `shutdown` request, or cancellation.

    On the way out the watcher stops through its stop event, running builds are cancelled
    (their process groups killed) and the server removes its socket file.

    With ``listen`` the protocol is also served to programs on other hosts, over a WebSocket
    on that address, to clients holding the token kept beside the socket.
    """
    fd_limit = raise_fd_limit()
    engine = Engine(workspaces=workspaces, options=options)
    server = DaemonServer(engine, socket_path, max_clients=client_limit(fd_limit))
    engine.publish = server.publish
    engine.count_receivers = server.processes_running
    engine.entry_points = server.entry_points
    async with anyio.create_task_group() as tg:

        def stop() -> None:
            # Stop events first: a cancelled watcher would wait out its OS poll timeout.
            engine.stop_watchers()
            tg.cancel_scope.cancel()

        async def stop_on_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("shutting down", signal=signal.Signals(signum).name)
                    stop()
                    return

        async def run_server(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            await server.run(task_status=task_status)
            stop()  # a client asked for shutdown

        tg.start_soon(stop_on_signals)
        await tg.start(run_server)
        if listen is not None:
            # The socket's directory exists now, private: the token is kept there.
            token = await anyio.to_thread.run_sync(load_or_create_token, server.socket_path)
            await tg.start(RemoteEndpoint(server, listen, token).run)
        await tg.start(engine.run)
        log.info("daemon ready", socket=str(server.socket_path), workspaces=len(engine.served))
        task_status.started((engine, server))
