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
        if args.json:  # scripts read stdout: say it there too
            print(json.dumps({"running": False, "error": str(exc)}, indent=2, sort_keys=True))
        print(f"thinpatch: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(reply, indent=2, sort_keys=True))
    else:
        print(render_status(reply))
    return 0


def render_status(reply: dict[str, Any]) -> str:
    """A readable summary: the daemon, then each workspace and its programs (pure)."""
    daemon = reply.get("daemon") or {}
    started = " (started by systemd)" if daemon.get("socket_activated") else ""
    lines = [
        f"thinpatch daemon {daemon.get('version', '?')}, pid {daemon.get('pid', '?')}, "
        f"up {_duration(daemon.get('uptime_s', 0))}{started}",
        f"  socket    {daemon.get('socket', '?')}",
        f"  clients   {daemon.get('clients', 0)} connected, {daemon.get('subscribers', 0)} subscribed",
    ]
    workspaces = reply.get("workspaces") or []
    problems = reply.get("problems") or []
    if not workspaces and not problems:
        lines += ["", "No workspace served yet: run `thinpatch capture` in a cargo workspace."]
    for entry in workspaces:
        lines += ["", *_render_workspace(entry)]
    if problems:
        lines += ["", "Not served:"]
        for problem in problems:
            lines.append(f"  {problem.get('workspace')}: {problem.get('message')}")
    return "\n".join(lines)


def _render_workspace(entry: dict[str, Any]) -> list[str]:
    if entry.get("busy"):
        state = "building"
    elif entry.get("watching"):
        files = entry.get("watched_files")
        state = f"watching {_count(files, 'file', 'files')}" if isinstance(files, int) and files else "watching"
    elif "watching" in entry:
        state = "not watching yet"
    else:
        state = str(entry.get("state") or "")
    lines = [f"{entry.get('workspace')}" + (f"  ({state})" if state else "")]
    rows: list[tuple[str, str]] = []
    if entry.get("scope"):
        rows.append(("captured", str(entry["scope"])))
    crates = entry.get("crates")
    if crates:
        rows.append(("crates", ", ".join(_crate_label(c) for c in crates)))
    if "builds" in entry:
        last = _last_build(entry)
        rows.append(("builds", f"{entry['builds']}" + (f", last: {last}" if last else "")))
    lines += [f"  {label:<10}{value}" for label, value in rows]
    for program in entry.get("programs") or []:
        lines.extend(_render_program(program))
    for note in entry.get("notes") or []:
        lines.append(f"  note: {note}")
    for warning in entry.get("capture_warnings") or []:
        lines.append(f"  capture warning: {warning}")
    return lines


def _crate_label(key: Any) -> str:
    name, _, kind = str(key).rpartition(".")
    return f"{name} ({kind})" if name else str(key)


def _last_build(entry: dict[str, Any]) -> str:
    outcome = entry.get("last_outcome")
    words = {
        "patch-ready": "patched",
        "build-failed": "compile error",
        "patch-rejected": "patch rejected",
    }.get(outcome or "", str(outcome or "").replace("-", " "))
    last = entry.get("last_patch") or {}
    if outcome == "patch-ready" and last:
        total = (last.get("timings") or {}).get("total_ms")
        took = f" in {total:.0f} ms" if isinstance(total, (int, float)) else ""
        return f"{words} (patch {last.get('id')}{took})"
    return words


def _render_program(program: dict[str, Any]) -> list[str]:
    """One program, its latest patch, and which processes applied it."""
    scope = f" ({program['scope']})" if program.get("scope") else ""
    build_id = str(program.get("build_id") or "")[:12]
    lines = [f"  program   {program.get('name')}{scope}" + (f", build ID {build_id}" if build_id else "")]
    pad = " " * 12
    last = program.get("last_patch")
    if not last:
        lines.append(f"{pad}no patch yet")
        return lines
    applied = [str(pid) for pid in last.get("applied") or []]
    sent = last.get("subscribers", 0)
    text = f"{pad}patch {last.get('id')}: "
    if not sent and not applied:
        text += "no process of it was subscribed, nothing was patched (start it with `thinpatch run`)"
    else:
        text += f"sent to {_count(sent, 'process', 'processes')}"
        if applied:
            text += f", applied in pid {', '.join(applied)}"
        elif not last.get("failed"):
            text += ", none has reported applying it yet"
    lines.append(text)
    for failure in last.get("failed") or []:
        lines.append(f"{pad}failed in pid {failure.get('pid')}: {failure.get('message')}")
    return lines


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
