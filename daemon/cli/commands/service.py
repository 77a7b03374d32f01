"""`thinpatch service install|uninstall`: run the daemon at login, or stop doing so."""

from __future__ import annotations

import argparse
import sys

HELP = "install or uninstall the daemon as a user service (systemd or launchd)"
DESCRIPTION = """\
install    write systemd user units (~/.config/systemd/user/thinpatch.socket and
           thinpatch.service) on Linux, or a launchd agent
           (~/Library/LaunchAgents/dev.thinpatch.daemon.plist) on macOS, pointing at this
           thinpatch, then print how to enable them. Nothing is enabled for you.
uninstall  stop and disable the service (`systemctl --user stop` and `disable`, or
           `launchctl bootout`), then remove the files install wrote and the links that
           enabled them. The files are removed even when the service manager can't be
           reached (say, outside a login session).
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
    uninstall = actions.add_parser("uninstall", help="stop the service and remove its files")
    uninstall.add_argument("--dry-run", action="store_true", help="print what would be done instead of doing it")
    uninstall.add_argument(
        "--manager",
        choices=("systemd", "launchd"),
        help="service manager to remove the files of (default: the one this OS uses)",
    )


def run(args: argparse.Namespace) -> int:
    if args.action == "uninstall":
        return uninstall(args)
    return install(args)


def install(args: argparse.Namespace) -> int:
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


def uninstall(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from daemon.cli import service_files

    try:
        kind = args.manager or service_files.platform_kind()
    except ValueError as exc:
        print(f"thinpatch: {exc}", file=sys.stderr)
        return 1
    env = dict(os.environ)
    directory = service_files.service_directory(kind, Path.home(), env)
    plan = service_files.uninstall_plan(kind, Path.home(), env, service_files.list_service_directory(directory))
    if not plan.files:
        print(f"nothing to remove: no thinpatch service files in {directory}")
        return 0
    if args.dry_run:
        for command in plan.stop:
            print(f"would run: {' '.join(command)}")
        for path in plan.files:
            print(f"would remove {path}")
        for command in plan.reload:
            print(f"would run: {' '.join(command)}")
        return 0
    for command in plan.stop:
        problem = service_files.run_manager(command)
        if problem is None:
            print(f"ran: {' '.join(command)}")
        else:
            print(f"skipped `{' '.join(command)}`: {problem}")
    try:
        removed = service_files.remove_files(plan.files)
    except OSError as exc:
        print(f"thinpatch: cannot remove the service files: {exc}", file=sys.stderr)
        return 1
    for path in removed:
        print(f"removed {path}")
    for command in plan.reload:
        if service_files.run_manager(command) is None:
            print(f"ran: {' '.join(command)}")
    print("The daemon no longer starts by itself; `thinpatch serve` still runs it by hand.")
    return 0
