"""`thinpatch service install`: run the daemon at login."""

from __future__ import annotations

import argparse
import sys

HELP = "install the daemon as a user service (systemd or launchd)"
DESCRIPTION = """\
install    write systemd user units (~/.config/systemd/user/thinpatch.socket and
           thinpatch.service) on Linux, or a launchd agent
           (~/Library/LaunchAgents/dev.thinpatch.daemon.plist) on macOS, pointing at this
           thinpatch, then print how to enable them. Nothing is enabled for you.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    install = actions.add_parser("install", help="write the service files for this OS")
    install.add_argument("--dry-run", action="store_true", help="print the files instead of writing them")
    install.add_argument(
        "--manager",
        choices=("systemd", "launchd"),
        help="service manager to write files for (default: the one this OS uses)",
    )


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from daemon.cli import service_files

    try:
        kind = args.manager or service_files.platform_kind()
        executable = service_files.find_executable()
        files = service_files.install_plan(
            kind, Path.home(), executable, os.environ.get("PATH"), dict(os.environ)
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"thinpatch: {exc}", file=sys.stderr)
        return 1
    if args.dry_run:
        for item in files:
            print(f"# would write {item.path}")
            print(item.content.rstrip("\n"))
            print()
    else:
        try:
            results = service_files.write_files(files)
        except OSError as exc:
            print(f"thinpatch: cannot write service files: {exc}", file=sys.stderr)
            return 1
        for item, outcome in results:
            print(f"{outcome} {item.path}")
    print(service_files.enable_instructions(kind, files))
    return 0
