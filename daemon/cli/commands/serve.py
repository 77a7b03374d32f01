"""`thinpatch serve`: the daemon."""

from __future__ import annotations

import argparse
import sys

from daemon.cli.commands._listen_option import add_listen_option
from daemon.cli.commands._socket_option import add_socket_option

# The watcher's default (daemon.service.watcher.DEFAULT_DEBOUNCE_MS), spelled out so that
# building the parser imports no watcher; a test keeps the two equal.
DEBOUNCE_MS = 5


def _at_least_one(text: str) -> int:
    """A count or a duration in ms: 0 would make the watcher spin or prune the patch just built."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


HELP = "run the daemon: watch captured workspaces and send patches to subscribers"
DESCRIPTION = """\
Watches the source files of every captured workspace (the files rustc's dep-info lists,
plus Cargo.toml, Cargo.lock and build.rs). On each save it rebuilds only the edited
crate into a patch library, checks that it will load into the captured program, and
sends `patch-ready` (or `build-failed`, `patch-rejected`, `full-rebuild-required`) to
every subscriber on the Unix socket. Workspaces are found through the registry that
`thinpatch capture` writes; a new capture is picked up without a restart.

With --listen ADDR:PORT it also serves programs on other hosts (a container, a VM, a
phone) over a WebSocket at ws://ADDR:PORT/thinpatch, sending each patch's bytes; they
present the token `thinpatch token` prints (docs/remote.md).

Stops cleanly on SIGTERM/SIGINT or `thinpatch stop`. Under systemd it accepts a
socket-activated listener and reports readiness (see `thinpatch service install`).

examples:
  thinpatch serve                         serve every captured workspace
  thinpatch serve --workspace ~/src/game  serve just this one
  thinpatch serve --on-busy queue --debounce-ms 100
  thinpatch serve --listen 127.0.0.1:9876 and a device reaching it through `ssh -R` or `adb reverse`
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_socket_option(parser)
    add_listen_option(parser)
    parser.add_argument(
        "--workspace", metavar="DIR", action="append", default=None,
        help="serve this workspace (repeatable; default: every workspace `thinpatch capture` registered)",
    )
    parser.add_argument(
        "--debounce-ms", type=_at_least_one, default=DEBOUNCE_MS, metavar="MS",
        help=f"quiet time after a save before building (default: {DEBOUNCE_MS})",
    )
    parser.add_argument(
        "--on-busy", choices=("restart", "queue"), default="restart",
        help="an edit during a build: restart the build on the newest content (default) or queue behind it",
    )
    parser.add_argument(
        "--keep",
        type=_at_least_one,
        default=16,
        metavar="N",
        help="patch libraries to keep in the session cache (default: 16)",
    )
    parser.add_argument(
        "--no-warm-up", action="store_true",
        help="don't compile each program once when its session starts (the first save then pays for it)",
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def run(args: argparse.Namespace) -> int:
    from functools import partial
    from pathlib import Path

    import anyio

    from daemon.cli.logging_setup import configure_logging
    from daemon.cli.serve_loop import serve_forever
    from daemon.service.engine import EngineOptions
    from daemon.socket.listen_address import exposure_warning
    from daemon.socket.remote_token import TokenError
    from daemon.socket.single_instance import DaemonAlreadyRunning
    from daemon.socket.socket_paths import SocketPathError
    from daemon.socket.websocket import ListenError

    configure_logging(args.log_level)
    for workspace in args.workspace or []:
        if not Path(workspace).is_dir():
            print(
                f"thinpatch serve: --workspace {workspace} is not a directory. "
                "Name a cargo workspace directory (the one with Cargo.toml).",
                file=sys.stderr,
            )
            return 2
    _say_what_is_not_captured(args.workspace)
    options = EngineOptions(
        debounce_ms=args.debounce_ms, on_busy=args.on_busy, keep_patches=args.keep, warm_up=not args.no_warm_up
    )
    if args.listen is not None and (warning := exposure_warning(args.listen)) is not None:
        print(f"thinpatch serve: warning: {warning}", file=sys.stderr)
    try:
        anyio.run(
            partial(serve_forever, listen=args.listen),
            Path(args.socket) if args.socket else None,
            args.workspace,
            options,
        )
    except BaseException as exc:  # task groups wrap start-up errors in exception groups
        known = _first(exc, (DaemonAlreadyRunning, SocketPathError, ListenError, TokenError))
        if known is None:
            raise
        print(f"thinpatch serve: {known}", file=sys.stderr)
        return 2 if isinstance(known, SocketPathError) and args.socket else 1
    return 0


def _first(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    if isinstance(exc, kinds):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first(inner, kinds)
            if found is not None:
                return found
    return None


def _say_what_is_not_captured(workspaces: list[str] | None) -> None:
    """Serving nothing is allowed (a capture is picked up later), but never in silence."""
    from daemon.service.workspaces import NoCapture, find_captured_workspace, registered_workspaces

    if not workspaces:
        if not registered_workspaces():
            print(
                "thinpatch serve: no captured workspace yet. Run `thinpatch capture` in one; "
                "the daemon serves it without a restart.",
                file=sys.stderr,
            )
        return
    for workspace in workspaces:
        try:
            find_captured_workspace(workspace)
        except NoCapture as exc:
            print(f"thinpatch serve: {exc}\nThe daemon serves it once it is captured.", file=sys.stderr)
