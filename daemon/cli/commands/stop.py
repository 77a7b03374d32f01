"""`thinpatch stop`: ask the daemon to exit cleanly."""

from __future__ import annotations

import argparse
import sys

HELP = "stop the running daemon"
DESCRIPTION = """\
Send the daemon a `shutdown` request over its socket and wait until it has exited and
removed its socket. Under systemd socket activation the socket unit stays, so the next
client starts the daemon again; use `systemctl --user stop thinpatch.socket
thinpatch.service` to stop both.
"""

EXIT_WAIT_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from daemon.cli.commands._socket_option import add_socket_option

    add_socket_option(parser)


def run(args: argparse.Namespace) -> int:
    import anyio

    from daemon.socket.client import DaemonDisconnected, DaemonNotTrusted, DaemonUnavailable, connect

    async def stop() -> int | None:
        async with connect(args.socket) as client:
            pid = client.hello.get("pid")
            try:
                await client.request({"type": "shutdown"})
            except DaemonDisconnected:
                pass  # it hung up right after accepting: that is the goal
            with anyio.move_on_after(EXIT_WAIT_S):
                async for _ in client.events():
                    pass  # drain until the daemon closes the connection
            return pid

    try:
        pid = anyio.run(stop)
    except DaemonNotTrusted as exc:
        print(f"thinpatch: {exc}", file=sys.stderr)
        return 1
    except DaemonUnavailable as exc:
        print(f"thinpatch: {str(exc).split(' Start it with', 1)[0]} There is nothing to stop.", file=sys.stderr)
        return 0
    except ConnectionError as exc:
        print(f"thinpatch: {exc}", file=sys.stderr)
        return 1
    print(f"stopped thinpatch daemon (pid {pid})")
    return 0
