"""`thinpatch patch`: one thin rebuild from the captures, without a daemon."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "rebuild the current source into one verified patch library (no daemon)"
DESCRIPTION = """\
Replays the captured rustc invocation of the edited crate (and every workspace crate
between it and the program), links one shared library into the session cache, checks
that it will load into the captured program, and computes the jump table in subsecond's
format. Prints the library path and timings; --json prints the whole result, the same
object the daemon sends in `patch-ready` events.

examples:
  thinpatch patch                          patch the program's own crate
  thinpatch patch --crate mylib            an edit in a workspace library crate
  thinpatch patch --json > patch.json      the JumpTable and report, for a client
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", metavar="DIR", default=None, help="workspace directory (default: current directory)")
    parser.add_argument("--crate", metavar="NAME", default=None, help="the edited crate (default: the program's crate)")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")


def run(args: argparse.Namespace) -> int:
    import anyio

    from daemon.service.patcher import Patcher, PatchRejected
    from daemon.build.rebuild import CompileError, RebuildError
    from daemon.service.workspaces import NoCapture, find_captured_workspace

    try:
        found = find_captured_workspace(args.workspace)
        patcher = Patcher(found.workspace, found.capture_root)
        result = anyio.run(lambda: patcher.patch(args.crate, rendered_ansi=sys.stderr.isatty() and not args.json))
    except NoCapture as exc:
        return _fail(args, "missing-capture", str(exc))
    except PatchRejected as exc:
        return _fail(args, "patch-rejected", str(exc), missing_symbols=exc.missing_symbols, action=exc.action)
    except CompileError as exc:
        if not args.json:
            for d in exc.diagnostics.errors:
                print(d.rendered or d.summary(), file=sys.stderr)
        return _fail(
            args, "build-failed", str(exc), diagnostics=[d.to_dict() for d in exc.diagnostics.diagnostics]
        )
    except RebuildError as exc:
        return _fail(args, type(exc).__name__, str(exc))
    if args.json:
        json.dump(result.to_json(), sys.stdout)
        sys.stdout.write("\n")
    else:
        t = result.timings
        print(result.lib)
        print(
            f"patched {result.edited_crate} into {result.crate}: {result.report.mapped} functions mapped; "
            f"rustc {t['rustc_ms']:.0f} ms, link {t['link_ms']:.0f} ms, verify {t['verify_ms']:.0f} ms, "
            f"total {t['total_ms']:.0f} ms",
            file=sys.stderr,
        )
        for warning in result.report.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def _fail(args: argparse.Namespace, kind: str, message: str, **extra) -> int:
    if args.json:
        json.dump({"error": kind, "message": message, **extra}, sys.stdout)
        sys.stdout.write("\n")
    print(f"thinpatch patch: {message}", file=sys.stderr)
    return 1
