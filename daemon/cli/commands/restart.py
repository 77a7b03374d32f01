"""`thinpatch restart`: make this project's `thinpatch run` rebuild and restart its program."""

from __future__ import annotations

import argparse
import sys

HELP = "make this project's `thinpatch run` rebuild and restart the program"
DESCRIPTION = """\
Tells the `thinpatch run` of this project (the cargo workspace containing the current
directory, or --workspace) to build the program afresh under capture and restart it: for
when you want a clean start rather than a patch (the program's state reset, a change a
patch can't carry, or a capture you no longer trust). The build comes first; the old
program is stopped only once it succeeded, so a failed build leaves it running. Its
terminal shows the build and the new pid.

There is one `thinpatch run` per project; this finds it through its lock file,
<target>/thinpatch/run.lock. With no `run` active it says so and exits with status 1.

examples:
  thinpatch restart
  thinpatch restart --workspace ~/src/my-game
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workspace", metavar="DIR", default=".", help="your cargo project or workspace (default: current directory)"
    )


def run(args: argparse.Namespace) -> int:
    import os
    import signal
    from pathlib import Path

    from daemon.cli import run_lock
    from daemon.cli.workspace_root import WorkspaceRefused, workspace_root

    directory = Path(os.path.realpath(args.workspace))
    if not directory.is_dir():
        print(f"thinpatch restart: --workspace {args.workspace} is not a directory. Name your cargo project "
              "(the directory with Cargo.toml), or run `thinpatch restart` inside it.", file=sys.stderr)
        return 2
    try:
        workspace = workspace_root(directory)
    except WorkspaceRefused as exc:
        print(f"thinpatch restart: {exc}", file=sys.stderr)
        return 1
    try:
        pid = run_lock.holder(run_lock.capture_root_of(workspace))
    except run_lock.RunLockError as exc:
        print(f"thinpatch restart: {exc}", file=sys.stderr)
        return 1
    if pid is None:
        print(f"thinpatch restart: no thinpatch run is active in {workspace}; start one with `thinpatch run`",
              file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        print(f"thinpatch restart: thinpatch run (pid {pid}) has just ended; start one with `thinpatch run`",
              file=sys.stderr)
        return 1
    except PermissionError:
        print(f"thinpatch restart: the lock file names pid {pid}, which is not yours; nothing was sent",
              file=sys.stderr)
        return 1
    print(f"asked thinpatch run (pid {pid}) to rebuild {workspace.name} and restart it; its terminal shows the build")
    return 0
