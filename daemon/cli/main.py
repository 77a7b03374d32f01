"""The `thinpatch` command line."""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from typing import NoReturn

from daemon import __version__

# Subcommands in the order `--help` lists them: the order a newcomer uses them.
COMMANDS = [
    "demo",
    "init",
    "run",
    "restart",
    "capture",
    "patch",
    "serve",
    "token",
    "status",
    "watch",
    "rebuild",
    "stop",
    "service",
]

EPILOG = """\
typical session:
  thinpatch demo                     watch a bundled Rust app get patched live (about 10 s)
  thinpatch init                     add the client crate to your program (once)
  thinpatch run                      run your program; every save patches it while it runs
  thinpatch watch                    (another terminal) follow builds, timings and errors

by hand, step by step:
  thinpatch capture                  build your workspace once, recording how cargo built it
  thinpatch serve                    watch sources; every save becomes a patch for subscribers
  ./target/debug/<your-app>          run the binary that capture built

Run `thinpatch <command> --help` for the details of each command.
"""


class Parser(argparse.ArgumentParser):
    """Usage errors in two lines: what is wrong, and where the usage is. Exit code 2."""

    def error(self, message: str) -> NoReturn:
        name = self.prog
        help_hint = f"`{name} --help`" if name != "thinpatch" else "`thinpatch help`"
        self.exit(2, f"{name}: {message}\nRun {help_hint} for the usage.\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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


def unknown_command(word: str) -> str:
    """The message for a command thinpatch doesn't have, with the nearest one it has."""
    near = difflib.get_close_matches(word, [*COMMANDS, "help"], n=1, cutoff=0.6)
    hint = f" Did you mean `thinpatch {near[0]}`?" if near else ""
    return f"thinpatch: unknown command {word!r}.{hint}\nRun `thinpatch help` for the list of commands.\n"


def innermost(exc: BaseException) -> BaseException:
    """The first real error inside task-group wrappers (exception groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:1] == ["help"]:
        topic = argv[1:2]
        if topic and topic[0] not in COMMANDS:
            sys.stderr.write(unknown_command(topic[0]))
            return 2
        argv = [*topic, "--help"]
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        sys.stderr.write(unknown_command(argv[0]))
        return 2
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "_run", None):
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        parser.print_help()
        return 2
    if extra:
        sys.stderr.write(
            f"thinpatch {args.command}: unrecognized arguments: {' '.join(extra)}\n"
            f"Run `thinpatch {args.command} --help` for the usage.\n"
        )
        return 2
    try:
        from daemon.cli.logging_setup import configure_logging

        # Commands that log set their own level later; until then, warnings only, and
        # never structlog's default renderer (its tracebacks print locals).
        configure_logging("warning")
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # here, so a closed pipe is reported as one, not at interpreter exit
        return code
    except BaseException as exc:
        return _report_crash(args.command, exc)


def _report_crash(command: str, exc: BaseException) -> int:
    """Every failure a command did not turn into a message becomes one line, never a
    traceback (a traceback's frames can hold a recorded build environment)."""
    error = innermost(exc)
    if isinstance(error, KeyboardInterrupt):
        return 130
    if isinstance(error, SystemExit):
        return error.code if isinstance(error.code, int) else 1
    if isinstance(error, BrokenPipeError):
        # The reader went away (`thinpatch patch --json | head`): stop quietly, as `cat` would.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 141
    if os.environ.get("THINPATCH_DEBUG"):
        raise exc
    from daemon.cli.environment_errors import environment_message

    message = environment_message(error)
    if message is not None:  # the machine's problem, not a bug: say what and the fix
        sys.stderr.write(f"thinpatch {command}: {message}\n")
        return 1
    sys.stderr.write(
        f"thinpatch {command}: internal error: {type(error).__name__}: {error}\n"
        "This is a bug in thinpatch; run again with THINPATCH_DEBUG=1 to see where it happened.\n"
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
