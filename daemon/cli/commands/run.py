"""`thinpatch run`: like `cargo run`, and every save patches the running program."""

from __future__ import annotations

import argparse
import sys

HELP = "run your program and patch it live on every save (like `cargo run`)"
DESCRIPTION = """\
Builds your program under capture when there is no capture of it or a file it was built
from changed since, starts the thinpatch daemon if none is running, runs the program, and
patches it on every save while it keeps running. Its input and output are your terminal's;
thinpatch's own lines start with [thinpatch].

The program applies patches through thinpatch-client: add it once with `thinpatch init`.
A Cargo.toml or build.rs change can't be patched: `run` rebuilds the program and restarts
it by itself once that build succeeds; a build that fails leaves the old program running
(--no-restart turns this off). So does a save whose change no patch can carry (`main`, a
struct's layout, code no hot function reaches): the line before it says why. A program that
exits or crashes starts again on the next save that builds, rebuilt first when its sources
changed since its build.

To restart sooner, `run` can start a save's capture build as the daemon starts the patch,
held before it compiles anything until the daemon decides: a save a patch carries calls it
off, leaving the capture and the program's binary as they were. --early-build=auto (the
default) does so on a machine with 2 or more CPUs, and on one CPU after a save that needed a
restart; always / never choose for yourself.
Ctrl-C stops the program, and the daemon if `run` started it.

With --listen ADDR:PORT the daemon also serves programs on other hosts over a WebSocket,
and the program `run` starts takes its patches that way too (THINPATCH_ADDR and
THINPATCH_TOKEN in its environment).

One `run` per project: a second is refused, naming the first one's pid. `thinpatch
restart` (or SIGUSR1 to `run`) rebuilds afresh and restarts the program; the old one
stops only once the build succeeded.

examples:
  thinpatch run
  thinpatch run --bin server --release -- --port 8080
  thinpatch run -p game --features debug-overlay
  thinpatch run --listen 0.0.0.0:9876    also patch copies running on other hosts (docs/remote.md)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from daemon.cli.commands._listen_option import add_listen_option
    from daemon.cli.commands._socket_option import add_socket_option
    from daemon.cli.commands.capture import add_cargo_selection_options
    from daemon.cli.terminal import add_color_option

    parser.add_argument(
        "--workspace", metavar="DIR", default=".", help="your cargo project or workspace (default: current directory)"
    )
    add_cargo_selection_options(parser)
    parser.add_argument(
        "--no-restart",
        action="store_true",
        help="on a Cargo.toml/build.rs change, say so instead of rebuilding and restarting",
    )
    parser.add_argument(
        "--early-build",
        choices=("auto", "always", "never"),
        default="auto",
        help="start each save's capture build beside its patch, held until the verdict (default: auto, "
        "with 2+ CPUs or after a restart)",
    )
    add_color_option(parser)
    add_socket_option(parser)
    add_listen_option(parser)
    parser.add_argument("program_args", nargs=argparse.REMAINDER, metavar="-- ARGS", help="arguments for your program")


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    import anyio

    from daemon.cli.commands.capture import cargo_selection_args
    from daemon.cli.run_session import RunError, RunOptions, Selection, run_session
    from daemon.socket.socket_paths import default_socket_path

    if len(args.bin) > 1:
        print("thinpatch run: name one program with --bin (it runs one program, as `cargo run` does)", file=sys.stderr)
        return 2
    program_args = list(args.program_args)
    if program_args and program_args[0] == "--":
        program_args = program_args[1:]
    workspace = Path(os.path.realpath(args.workspace))
    if not workspace.is_dir():
        print(f"thinpatch run: --workspace {args.workspace} is not a directory. Name your cargo project "
              "(the directory with Cargo.toml), or run `thinpatch run` inside it.", file=sys.stderr)
        return 2
    from daemon.cli.workspace_root import WorkspaceRefused, workspace_root

    try:
        root = workspace_root(workspace)  # checks what cargo would read before it runs
    except WorkspaceRefused as exc:
        print(f"thinpatch run: {exc}", file=sys.stderr)
        return 1
    options = RunOptions(
        workspace=root,
        selection=Selection(
            bin=args.bin[0] if args.bin else None, release=args.release, profile=args.profile,
            target=args.target, cargo_args=tuple(cargo_selection_args(args)),
        ),
        program_args=program_args,
        socket_path=Path(args.socket) if args.socket else default_socket_path(),
        restart_on_rebuild=not args.no_restart,
        early_builds=args.early_build,
        colour=args.color,
        listen=args.listen,
    )
    try:
        return anyio.run(run_session, options)
    except BaseException as exc:
        from daemon.cli.environment_errors import first_of

        error = first_of(exc, RunError)  # raised inside the session's task groups, it arrives in a group
        if error is None:
            raise
        print(f"thinpatch run: {error}", file=sys.stderr)
        return 1
