"""The `thinpatch` command line."""

from __future__ import annotations

import argparse
import importlib
import sys

from daemon import __version__

# Subcommands in the order `--help` lists them: the order a newcomer uses them.
COMMANDS = [
    "demo",
    "init",
    "capture",
    "patch",
    "serve",
    "status",
    "watch",
    "rebuild",
    "stop",
    "service",
]

EPILOG = """\
typical session:
  thinpatch demo                     watch a bundled Rust app get patched live (about 10 s)
  thinpatch capture                  build your workspace once, recording how cargo built it
  ./target/debug/<your-app> &        run the binary that capture built
  thinpatch serve                    watch sources; every save becomes a patch for subscribers
  thinpatch watch                    follow builds, timings and compile errors live

Run `thinpatch <command> --help` for the details of each command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thinpatch",
        description=(
            "Hot-patch running Rust programs. thinpatch records how cargo built your program "
            "once, then on every save rebuilds only the changed code into a small shared "
            "library and tells the running program (through subsecond) to jump to it."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"thinpatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"daemon.cli.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"daemon.cli.commands.{name}":
                continue  # not built yet
            raise
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
