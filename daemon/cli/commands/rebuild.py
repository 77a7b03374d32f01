"""`thinpatch rebuild`: build a patch now, without waiting for a save."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

HELP = "rebuild the current workspace's patch now"
DESCRIPTION = """\
Ask the daemon to rebuild now. The workspace is the served workspace containing the
current directory (or --workspace); --crate limits the rebuild to one crate. With --wait,
wait for the build's outcome and print it as `thinpatch watch` would.
"""

OUTCOMES = ("patch-ready", "build-failed", "patch-rejected", "full-rebuild-required")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from daemon.cli.commands._socket_option import add_socket_option

    parser.add_argument("--crate", metavar="NAME", help="rebuild only this crate")
    parser.add_argument(
        "--workspace", metavar="DIR", help="workspace root (default: the one containing the current directory)"
    )
    parser.add_argument("--wait", action="store_true", help="wait for the outcome and exit 1 unless a patch is ready")
    add_socket_option(parser)


def pick_workspace(served: list[str], requested: str | None, cwd: str) -> str:
    """The served workspace to rebuild. Raises ValueError with a plain-English reason."""
    if requested:
        wanted = os.path.realpath(requested)
        for workspace in served:
            if os.path.realpath(workspace) == wanted:
                return workspace
        raise ValueError(f"{requested} is not served by the daemon (served: {', '.join(served) or 'none'})")
    here = os.path.realpath(cwd)
    containing = [w for w in served if here == os.path.realpath(w) or here.startswith(os.path.realpath(w) + os.sep)]
    if containing:
        return max(containing, key=len)
    if len(served) == 1:
        return served[0]
    if not served:
        raise ValueError("the daemon serves no workspace yet: run `thinpatch capture` first")
    raise ValueError("the current directory is in none of the served workspaces; pass --workspace")


def run(args: argparse.Namespace) -> int:
    import anyio

    from daemon.socket.protocol import is_crate_name

    if args.crate is not None and not is_crate_name(args.crate):
        print(
            f"thinpatch rebuild: {args.crate!r} is not a crate name. Pass the name cargo uses "
            "(letters, digits, '_' and '-'), e.g. --crate mylib.",
            file=sys.stderr,
        )
        return 2

    from daemon.cli.commands.watch import render_event
    from daemon.socket.client import DaemonUnavailable, RequestFailed, connect

    async def rebuild() -> int:
        async with connect(args.socket) as client:
            status = await client.request({"type": "status"})
            served = [entry["workspace"] for entry in status.get("workspaces", [])]
            try:
                workspace = pick_workspace(served, args.workspace, os.getcwd())
            except ValueError as exc:
                print(f"thinpatch: {exc}", file=sys.stderr)
                return 1
            if args.wait:
                await client.subscribe(workspace)
            request: dict[str, Any] = {"type": "rebuild", "workspace": workspace}
            if args.crate:
                request["crate"] = args.crate
            await client.request(request)
            print(f"rebuild requested for {workspace}" + (f" (crate {args.crate})" if args.crate else ""))
            if not args.wait:
                return 0
            async for event in client.events():
                if event.get("replayed"):
                    continue
                for line in render_event(event):
                    print(line)
                if event.get("type") in OUTCOMES:
                    return 0 if event["type"] == "patch-ready" else 1
            print("thinpatch: the daemon closed the connection before the build finished", file=sys.stderr)
            return 1

    try:
        return anyio.run(rebuild)
    except (RequestFailed, DaemonUnavailable, ConnectionError) as exc:
        print(f"thinpatch: {exc}", file=sys.stderr)
        return 1
