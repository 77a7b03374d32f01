"""`thinpatch watch`: follow builds live."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

HELP = "follow builds, timings and compile errors live"
DESCRIPTION = """\
Subscribe to the daemon and print one line per build with its timings. Compile errors
are printed as cargo prints them. With --json, print every event exactly as the daemon
sends it, one JSON object per line (the protocol is described in docs/protocol.md).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from daemon.cli.commands._socket_option import add_socket_option

    parser.add_argument("--json", action="store_true", help="print the raw events, one JSON object per line")
    parser.add_argument("--workspace", metavar="DIR", help="only events about this workspace root")
    parser.add_argument("-v", "--verbose", action="store_true", help="also print a line when a build starts")
    add_socket_option(parser)


def run(args: argparse.Namespace) -> int:
    import os

    import anyio

    from daemon.socket.client import DaemonUnavailable, RequestFailed, connect

    workspace = os.path.realpath(args.workspace) if args.workspace else None

    async def watch() -> str | None:
        async with connect(args.socket) as client:
            await client.subscribe(workspace)
            if not args.json:
                print(f"watching thinpatch daemon (pid {client.hello.get('pid')}); Ctrl-C to stop", file=sys.stderr)
            async for event in client.events():
                if args.json:
                    line = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
                    print(line, flush=True)
                    continue
                if event.get("type") == "build-started" and not args.verbose:
                    continue
                for text in render_event(event):
                    print(text, flush=True)
            return client.disconnect_reason

    try:
        reason = anyio.run(watch)
    except (RequestFailed, DaemonUnavailable, ConnectionError) as exc:
        print(f"thinpatch: {exc}", file=sys.stderr)
        return 1
    print("thinpatch: the daemon closed the connection" + (f": {reason}" if reason else ""), file=sys.stderr)
    return 1


def render_event(event: dict[str, Any], now: float | None = None) -> list[str]:
    """Human-readable lines for one event (pure)."""
    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    prefix = f"{stamp} " + ("(current) " if event.get("replayed") else "")
    kind = event.get("type")
    crate = event.get("crate", "?")
    if kind == "build-started":
        files = event.get("files") or []
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        return [f"{prefix}building {crate}" + (f" ({shown})" if shown else "")]
    if kind == "patch-ready":
        t = event.get("timings") or {}
        target = f" for pid {event['for_pid']}" if event.get("for_pid") else _program(event)
        lines = [
            f"{prefix}patch {event.get('id')} ready: {crate}{target} in {_ms(t.get('total_ms'))} "
            f"(rustc {_ms(t.get('rustc_ms'))}, link {_ms(t.get('link_ms'))}, "
            f"verify {_ms(t.get('verify_ms'))}) -> {event.get('lib')}"
        ]
        if event.get("subscribers") == 0 and not event.get("replayed"):
            name = (event.get("program") or {}).get("name", "the program")
            lines.append(
                f"  no running process of {name} is subscribed: nothing was patched. Start it with "
                "`thinpatch run`, or add thinpatch-client to it (`thinpatch init`)."
            )
        elif event.get("subscribers"):
            n = event["subscribers"]
            lines.append(f"  sent to {n} process{'es' if n != 1 else ''}")
        return lines
    if kind == "patch-result":
        if event.get("applied"):
            return [f"{prefix}patch {event.get('id')} applied in pid {event.get('pid')}{_program(event)}"]
        return [f"{prefix}patch {event.get('id')} FAILED in pid {event.get('pid')}{_program(event)}: {event.get('message')}"]
    if kind == "not-patchable":
        who = f"pid {event['for_pid']}" if event.get("for_pid") else "a subscribed process"
        return [f"{prefix}{who} can't be patched ({event.get('reason')}): {event.get('message')}"]
    if kind == "build-failed":
        lines = [f"{prefix}build of {crate} failed: {event.get('message')}"]
        for diagnostic in event.get("diagnostics") or []:
            lines.append(_render_diagnostic(diagnostic))
        return lines
    if kind == "patch-rejected":
        lines = [f"{prefix}patch for {crate} rejected: {event.get('reason')}"]
        missing = event.get("missing_symbols") or []
        if missing:
            lines.append(f"  missing symbols: {', '.join(missing[:5])}" + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        if event.get("action"):
            lines.append(f"  {event['action']}")
        return lines
    if kind == "full-rebuild-required":
        files = ", ".join(event.get("files") or [])
        return [f"{prefix}full rebuild required in {event.get('workspace')}: {event.get('reason')}" + (f" ({files})" if files else "")]
    if kind == "session-reset":
        return [f"{prefix}new session for {event.get('workspace')}: {event.get('reason')}"]
    if kind == "error":
        return [f"{prefix}daemon error: {event.get('message')}"]
    return [f"{prefix}{kind}: {json.dumps(event, sort_keys=True)}"]


def _program(event: dict[str, Any]) -> str:
    program = event.get("program") or {}
    return f" for {program['name']} ({program.get('scope')})" if program.get("name") else ""


def _render_diagnostic(diagnostic: dict[str, Any]) -> str:
    rendered = diagnostic.get("rendered")
    if rendered:
        return rendered.rstrip("\n")
    location = ""
    for span in diagnostic.get("spans") or []:
        if span.get("is_primary", True):
            location = f"\n --> {span.get('file_name')}:{span.get('line_start')}:{span.get('column_start')}"
            break
    return f"{diagnostic.get('level', 'error')}: {diagnostic.get('message')}{location}"


def _ms(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "? ms"
    return f"{value:.0f} ms"
