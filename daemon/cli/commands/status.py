"""`thinpatch status`: what the daemon is serving."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

HELP = "show whether the daemon runs and what it serves"
DESCRIPTION = """\
Ask the running daemon for its status: its pid, version and socket, and for each
workspace it serves, its state and last build. Exits 1 when no daemon is running.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from daemon.cli.commands._socket_option import add_socket_option

    parser.add_argument("--json", action="store_true", help="print the raw status reply as JSON")
    add_socket_option(parser)


def run(args: argparse.Namespace) -> int:
    import anyio

    from daemon.socket.client import DaemonUnavailable, connect

    async def fetch() -> dict[str, Any]:
        async with connect(args.socket) as client:
            return await client.request({"type": "status"})

    try:
        reply = anyio.run(fetch)
    except (DaemonUnavailable, ConnectionError) as exc:
        print(f"thinpatch: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(reply, indent=2, sort_keys=True))
    else:
        print(render_status(reply))
    return 0


def render_status(reply: dict[str, Any]) -> str:
    daemon = reply.get("daemon", {})
    lines = [
        f"thinpatch daemon {daemon.get('version', '?')} (pid {daemon.get('pid', '?')}) "
        f"listening on {daemon.get('socket', '?')}"
        + (" (socket-activated)" if daemon.get("socket_activated") else ""),
        f"  up {_duration(daemon.get('uptime_s', 0))}, {daemon.get('clients', 0)} client(s), "
        f"{daemon.get('subscribers', 0)} subscribed",
    ]
    workspaces = reply.get("workspaces") or []
    if not workspaces:
        lines.append("no workspaces served yet: run `thinpatch capture` in a cargo workspace")
    for entry in workspaces:
        lines.append(f"workspace {entry.get('workspace')}")
        for program in entry.get("programs") or []:
            lines.extend(_render_program(program))
        for key, value in entry.items():
            if key in ("workspace", "programs"):
                continue
            if isinstance(value, (dict, list)):
                value = json.dumps(value, sort_keys=True)
            lines.append(f"  {key.replace('_', ' ')}: {value}")
    return "\n".join(lines)


def _render_program(program: dict[str, Any]) -> list[str]:
    """One program, its latest patch, and which processes applied it."""
    lines = [f"  program {program.get('name')} ({program.get('scope')}), build ID {str(program.get('build_id'))[:12]}"]
    last = program.get("last_patch")
    if not last:
        lines.append("    no patch yet")
        return lines
    applied = ", ".join(str(pid) for pid in last.get("applied") or []) or "none yet"
    lines.append(f"    patch {last.get('id')}: sent to {last.get('subscribers', 0)} process(es), applied by: {applied}")
    for failure in last.get("failed") or []:
        lines.append(f"    FAILED in pid {failure.get('pid')}: {failure.get('message')}")
    if not last.get("subscribers") and not last.get("applied"):
        lines.append("    no process of this program was subscribed when it was built: start it with `thinpatch run`")
    return lines


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
