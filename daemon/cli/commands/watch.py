"""`thinpatch watch`: follow builds live."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from daemon.build.diagnostics import is_summary_dict
from daemon.cli.change_lines import changed_names, located, uncertain, what_changed
from daemon.cli.terminal import PLAIN, Style, colour_rendered

HELP = "follow builds, timings and compile errors live"
DESCRIPTION = """\
Subscribe to the daemon and print one line per build: patched (with its timings and which
processes applied it), or the compile errors and warnings as cargo prints them. When the
daemon restarts, watch says so and reconnects by itself; Ctrl-C quits.

Colour is used on a terminal unless NO_COLOR is set; --color always|never overrides it.
With --json, print every event exactly as the daemon sends it, one JSON object per line
(the protocol is described in docs/protocol.md).
"""

# Waits between reconnection attempts once the daemon has gone away.
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from daemon.cli.commands._socket_option import add_socket_option
    from daemon.cli.terminal import add_color_option

    parser.add_argument("--json", action="store_true", help="print the raw events, one JSON object per line")
    parser.add_argument("--workspace", metavar="DIR", help="only events about this workspace root")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also print builds as they start, and patch library paths"
    )
    parser.add_argument(
        "--no-reconnect", action="store_true", help="exit when the daemon stops instead of waiting for it"
    )
    add_color_option(parser)
    add_socket_option(parser)


def run(args: argparse.Namespace) -> int:
    import os

    import anyio

    from daemon.cli.terminal import wants_color
    from daemon.socket.client import DaemonNotTrusted, DaemonUnavailable, RequestFailed, connect

    workspace = os.path.realpath(args.workspace) if args.workspace else None
    style = Style(wants_color(args.color, sys.stdout))
    note_style = Style(wants_color(args.color, sys.stderr))

    def note(text: str) -> None:
        print(note_style.quiet(text), file=sys.stderr, flush=True)

    def show(event: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(event, separators=(",", ":"), ensure_ascii=False), flush=True)
            return
        for text in render_event(event, style, verbose=args.verbose):
            print(text, flush=True)

    async def follow() -> int:
        connected_before = False
        delay = RETRY_FIRST_S
        while True:
            try:
                async with connect(args.socket) as client:
                    await client.subscribe(workspace)
                    pid = client.hello.get("pid")
                    if connected_before:
                        note(f"reconnected to the thinpatch daemon (pid {pid})")
                    else:
                        note(f"watching the thinpatch daemon (pid {pid}); Ctrl-C to stop")
                    connected_before = True
                    delay = RETRY_FIRST_S
                    async for event in client.events():
                        show(event)
                    reason = client.disconnect_reason
            except DaemonNotTrusted:
                raise  # never wait for an impostor to become trustworthy
            except (DaemonUnavailable, ConnectionError):
                if not connected_before:
                    raise
                # Still away (or restarting): keep waiting quietly.
            else:
                why = f": {reason}" if reason else ""
                if args.no_reconnect:
                    note(f"the daemon closed the connection{why}")
                    return 1
                note(f"the daemon closed the connection{why}; reconnecting when it is back (Ctrl-C to stop)")
            await anyio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    try:
        return anyio.run(follow)
    except (RequestFailed, DaemonUnavailable, ConnectionError) as exc:
        print(f"thinpatch: {exc}", file=sys.stderr)
        return 1


def render_event(
    event: dict[str, Any], style: Style = PLAIN, *, verbose: bool = False, clock: Callable[[], float] = time.time
) -> list[str]:
    """Human-readable lines for one event (pure but for the clock, used for events
    from daemons that do not stamp them). An empty list: nothing to show."""
    kind = event.get("type")
    if kind == "build-started" and not verbose:
        return []
    when = event.get("time")
    stamp = time.strftime("%H:%M:%S", time.localtime(when if isinstance(when, (int, float)) else clock()))
    prefix = style.quiet(stamp) + " " + ("(current) " if event.get("replayed") else "")
    renderer = _RENDERERS.get(str(kind))
    if renderer is None:
        return [f"{prefix}{kind}: {json.dumps(event, sort_keys=True)}"]
    return renderer(event, prefix, style, verbose)


def _build_started(event: dict[str, Any], prefix: str, style: Style, verbose: bool) -> list[str]:
    files = [_short(f, event) for f in event.get("files") or []]
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return [f"{prefix}building {_what(event)}" + (f" ({shown})" if shown else "")]


def _patch_ready(event: dict[str, Any], prefix: str, style: Style, verbose: bool) -> list[str]:
    t = event.get("timings") or {}
    new = what_changed(event)
    names = changed_names(event)
    analysis = f", analysis {_ms(t.get('analysis_ms'))}" if "analysis_ms" in t else ""
    lines = [
        f"{prefix}{style.ok('patched')} {names + ' of ' if names else ''}{_what(event)} in {_ms(t.get('total_ms'))} "
        + style.quiet(
            f"(rustc {_ms(t.get('rustc_ms'))}, link {_ms(t.get('link_ms'))}, verify {_ms(t.get('verify_ms'))}"
            f"{analysis}; patch {event.get('id')})"
        )
    ]
    if verbose:
        lines += [f"  changed: {located(c)}" for c in new]
    for change in uncertain(event):
        lines.append(f"  {style.warn('may still run old code')}: {located(change)}: {change.get('why')}")
    if event.get("verdict") == "unknown" and not uncertain(event) and event.get("verdict_reason"):
        lines.append(f"  {style.warn('not checked')}: {event['verdict_reason']}")
    if verbose and event.get("lib"):
        lines.append(f"  library: {event['lib']}")
    report = event.get("report") or {}
    for warning in report.get("warnings") or []:
        lines.append(f"  {style.paint('warning', 'bold', 'yellow')}: {warning}")
    for diagnostic in report.get("compiler_warnings") or []:
        # In full with -v; otherwise one line each, since they repeat on every save.
        if verbose:
            lines.append(_render_diagnostic(diagnostic, style))
        else:
            lines.append(f"  {style.paint('warning', 'bold', 'yellow')}: {_one_line(diagnostic, event)}")
    if event.get("replayed"):
        return lines
    subscribers = event.get("subscribers")
    if event.get("for_pid"):
        lines.append(f"  sent to pid {event['for_pid']}")
    elif subscribers == 0:
        name = (event.get("program") or {}).get("name") or "the program"
        lines.append(
            "  " + style.warn("no process subscribed: nothing was patched.")
            + f" Start {name} with `thinpatch run`, or add thinpatch-client to it (`thinpatch init`)."
        )
    elif subscribers:
        lines.append(style.quiet(f"  sent to {_count(subscribers, 'process', 'processes')}"))
    return lines


def _patch_result(event: dict[str, Any], prefix: str, style: Style, verbose: bool) -> list[str]:
    who = f"pid {event.get('pid')}" + _program_name(event)
    if event.get("applied"):
        return [f"{prefix}  {style.ok('applied')} patch {event.get('id')} in {who}"]
    message = event.get("message") or "no reason given"
    return [f"{prefix}  {style.bad('failed')} to apply patch {event.get('id')} in {who}: {message}"]


def _not_patchable(event: dict[str, Any], prefix: str, style: Style, verbose: bool) -> list[str]:
    who = f"pid {event['for_pid']}" if event.get("for_pid") else "a subscribed process"
    return [f"{prefix}{style.warn(f'{who} cannot be patched')}: {event.get('message')}"]


def _build_failed(event: dict[str, Any], prefix: str, style: Style, verbose: bool) -> list[str]:
    # rustc's closing counts repeat the headline's.
    diagnostics = [d for d in event.get("diagnostics") or [] if not is_summary_dict(d)]
    if not diagnostics:
        head, *rest = str(event.get("message") or "no reason given").split("\n")
        return [f"{prefix}{style.bad('build failed')}: {_what(event)}: {head}", *(f"  {line}" for line in rest)]
    errors = sum(1 for d in diagnostics if str(d.get("level", "")).startswith("error"))
    warnings = sum(1 for d in diagnostics if d.get("level") == "warning")
    counts = _count(errors, "error", "errors") + (f", {_count(warnings, 'warning', 'warnings')}" if warnings else "")
    # The headline counts; each diagnostic's own headline comes once, in cargo's rendering.
    lines = [f"{prefix}{style.bad('build failed')}: {_what(event)} does not compile ({counts})"]
    for diagnostic in diagnostics:
        lines += [_render_diagnostic(diagnostic, style), ""]  # blank lines between, as cargo
    return lines[:-1]


def _patch_rejected(event: dict[str, Any], prefix: str, style: Style, verbose: bool) -> list[str]:
    lines = [f"{prefix}{style.bad('patch rejected')}: {_what(event)}: {event.get('reason')}"]
    missing = event.get("missing_symbols") or []
    if missing and verbose:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        lines.append(f"  missing symbols: {', '.join(missing[:5])}{more}")
    if event.get("action"):
        lines.append(f"  {event['action']}")
    return lines


def _restart_required(event: dict[str, Any], prefix: str, style: Style, verbose: bool) -> list[str]:
    lines = [f"{prefix}{style.warn('needs a restart')}: {_what(event)}: {event.get('reason')}"]
    for change in event.get("changes") or []:
        if change.get("verdict") == "needs-restart" and (verbose or change.get("decisive")):
            lines.append(f"  {located(change)}: {change.get('why')}")
    return lines


def _full_rebuild(event: dict[str, Any], prefix: str, style: Style, verbose: bool) -> list[str]:
    files = ", ".join(_short(f, event) for f in event.get("files") or [])
    where = f" ({files})" if files else ""
    return [f"{prefix}{style.warn('full rebuild required')}{where}: {event.get('reason')}"]


def _session_reset(event: dict[str, Any], prefix: str, style: Style, verbose: bool) -> list[str]:
    return [f"{prefix}{style.code('new capture')} of {event.get('workspace')}: {event.get('reason')}"]


def _error(event: dict[str, Any], prefix: str, style: Style, verbose: bool) -> list[str]:
    return [f"{prefix}{style.bad('daemon error')}: {event.get('message')}"]


_RENDERERS: dict[str, Callable[[dict[str, Any], str, Style, bool], list[str]]] = {
    "build-started": _build_started,
    "patch-ready": _patch_ready,
    "patch-result": _patch_result,
    "not-patchable": _not_patchable,
    "build-failed": _build_failed,
    "patch-rejected": _patch_rejected,
    "restart-required": _restart_required,
    "full-rebuild-required": _full_rebuild,
    "session-reset": _session_reset,
    "error": _error,
}


def _what(event: dict[str, Any]) -> str:
    """The program a build is for (`demo (host-debug)`), else its crate."""
    program = event.get("program") or {}
    if program.get("name"):
        return f"{program['name']} ({program.get('scope')})" if program.get("scope") else program["name"]
    return str(event.get("crate", "?"))


def _program_name(event: dict[str, Any]) -> str:
    program = event.get("program") or {}
    return f" ({program['name']})" if program.get("name") else ""


def _short(path: str, event: dict[str, Any]) -> str:
    """A path relative to the event's workspace when it lies inside it."""
    root = str(event.get("workspace") or "").rstrip("/")
    if root and path.startswith(root + "/"):
        return path[len(root) + 1 :]
    return path


def _one_line(diagnostic: dict[str, Any], event: dict[str, Any]) -> str:
    where = ""
    for span in diagnostic.get("spans") or []:
        if span.get("is_primary", True):
            file = _short(str(span.get("file_name")), event)
            where = f" ({file}:{span.get('line_start')}:{span.get('column_start')})"
            break
    return f"{diagnostic.get('message')}{where}"


def _render_diagnostic(diagnostic: dict[str, Any], style: Style) -> str:
    rendered = diagnostic.get("rendered")
    if rendered:
        return colour_rendered(rendered.rstrip("\n"), style)
    location = ""
    for span in diagnostic.get("spans") or []:
        if span.get("is_primary", True):
            location = f"\n  --> {span.get('file_name')}:{span.get('line_start')}:{span.get('column_start')}"
            break
    return colour_rendered(f"{diagnostic.get('level', 'error')}: {diagnostic.get('message')}{location}", style)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _ms(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "? ms"
    return f"{value:.0f} ms"
