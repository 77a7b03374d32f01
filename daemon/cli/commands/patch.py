"""`thinpatch patch`: one thin rebuild from the captures, without a daemon."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "rebuild the current source into one verified patch library, once (by the daemon if one runs)"
DESCRIPTION = """\
Replays the captured rustc invocation of the edited crate (and every workspace crate
between it and the program), links one shared library into the session cache, checks
that it will load into the captured program, and computes the jump table in subsecond's
format. Prints the library path and timings; --json prints the whole result, the same
object the daemon sends in `patch-ready` events.

The patch is for one captured program: one bin, one profile, one target. When several
are captured, choose with --bin, --release/--profile and --target, as with cargo.

When a running daemon serves the program, it builds the patch (warm caches, no start-up
cost) and every subscriber of that program gets it too; --no-daemon builds here instead.

Each changed function is listed with its verdict: carried (a running process runs it on its
next hot call), needs-restart (a type's layout or a static's initial value changed, or no hot
entry point reaches it) or unknown. A patch with a needs-restart change is not sent to
running processes, and the exit status is 1. Without a running process (--no-daemon), reach
is unknown: only a process reports its hot entry points.

examples:
  thinpatch patch                          patch the program's own crate
  thinpatch patch --crate mylib            an edit in a workspace library crate
  thinpatch patch --bin server --release   one of several captured programs
  thinpatch patch --json > patch.json      the JumpTable and report, for a client
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from daemon.cli.commands._socket_option import add_socket_option

    parser.add_argument(
        "--workspace", metavar="DIR", default=None, help="workspace directory (default: current directory)"
    )
    parser.add_argument("--crate", metavar="NAME", default=None, help="the edited crate (default: the program's crate)")
    parser.add_argument(
        "--bin", metavar="NAME", default=None, help="the program to patch, when several bins are captured"
    )
    parser.add_argument("-r", "--release", action="store_true", help="patch the release build's program")
    parser.add_argument("--profile", metavar="NAME", default=None, help="patch the program of this cargo profile")
    parser.add_argument("--target", metavar="TRIPLE", default=None, help="patch the program built for this target")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    parser.add_argument(
        "--no-daemon", action="store_true", help="build here even when a running daemon serves the program"
    )
    add_socket_option(parser)


def run(args: argparse.Namespace) -> int:
    import anyio

    from daemon.build.crate_plans import resolve_crate
    from daemon.build.errors import CompileError, RebuildError
    from daemon.cli.capture_run import profile_dir_name
    from daemon.cli.daemon_patch import patch_through_daemon
    from daemon.service.patcher import PatchRejected, open_patcher
    from daemon.service.programs import ProgramChoiceError, choose_program, read_programs
    from daemon.service.workspaces import NoCapture, find_captured_workspace

    profile = None
    if args.release or args.profile:
        profile = profile_dir_name(args.release, ["--profile", args.profile] if args.profile else [])
    try:
        found = find_captured_workspace(args.workspace)
        programs, skipped, _ = read_programs(str(found.workspace), found.capture_root)
        if not programs:
            notes = "".join(f"\n  {s.reason}" for s in skipped)
            return _fail(args, "missing-capture", f"no program is captured in {found.workspace}.{notes}\n"
                         "Run `thinpatch capture` there first.")
        program = choose_program(programs, bin_name=args.bin, profile=profile, target=args.target)
        if not args.no_daemon:
            event = anyio.run(patch_through_daemon, socket_path(args), found.workspace, program, args.crate)
            if event is not None:
                return _print_daemon_outcome(args, event, program)
        patcher = open_patcher(found.workspace, found.capture_root, scope=program.scope, top=program.crate)
        edited = [resolve_crate(patcher.captures, args.crate).key] if args.crate else []
        result = anyio.run(lambda: patcher.patch(edited, rendered_ansi=sys.stderr.isatty() and not args.json))
    except ProgramChoiceError as exc:
        _fail(args, "choose-program", str(exc))
        return 2
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
        data = result.to_json()
        data["program"] = program.describe()
        if program.build_id:
            data["for_build_id"] = program.build_id
        json.dump(data, sys.stdout)
        sys.stdout.write("\n")
    elif result.verdict.verdict == "needs-restart":  # decided before the link: no library
        t = result.timings
        print(
            f"no patch of {result.edited_crate} for {program.label}: only a restart runs this save; "
            f"rustc {t['rustc_ms']:.0f} ms, total {t['total_ms']:.0f} ms",
            file=sys.stderr,
        )
        _print_verdict(result.to_json())
    else:
        t = result.timings
        print(result.lib)
        print(
            f"built a patch of {result.edited_crate} for {program.label}: {result.report.mapped} functions mapped; "
            f"rustc {t['rustc_ms']:.0f} ms, link {t['link_ms']:.0f} ms, verify {t['verify_ms']:.0f} ms, "
            f"total {t['total_ms']:.0f} ms",
            file=sys.stderr,
        )
        for warning in result.report.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        _print_verdict(result.to_json())
    return 1 if result.verdict.verdict == "needs-restart" else 0


def _print_verdict(data: dict) -> None:
    from daemon.cli.change_lines import located

    """Each change and whether a patch carries it into a running process."""
    for change in data.get("changes") or []:
        why = f": {change['why']}" if change.get("why") and change.get("verdict") != "carried" else ""
        print(f"  {change.get('verdict')}: {located(change)}{why}", file=sys.stderr)
    if data.get("verdict") == "needs-restart":
        print(f"needs a restart: {data.get('reason')}. A patch can't carry this change: "
              "restart the program (`thinpatch run` restarts it for you)", file=sys.stderr)
    elif data.get("verdict") == "unknown" and data.get("reason"):
        print(f"not sure a running process runs all of it: {data['reason']}", file=sys.stderr)


def socket_path(args: argparse.Namespace):
    from pathlib import Path

    from daemon.socket.socket_paths import default_socket_path

    return Path(args.socket) if args.socket else default_socket_path()


def _print_daemon_outcome(args: argparse.Namespace, event: dict, program) -> int:
    """The daemon's outcome event, printed as a local build's result would be."""
    kind = event["type"]
    if kind == "build-failed":
        if not args.json:
            for d in event.get("diagnostics") or []:
                if d.get("level") == "error":
                    print((d.get("rendered") or d.get("message") or "").rstrip("\n"), file=sys.stderr)
        return _fail(args, "build-failed", event.get("message", ""), diagnostics=event.get("diagnostics") or [])
    if kind == "patch-rejected":
        return _fail(args, "patch-rejected", event.get("reason", ""), missing_symbols=event.get("missing_symbols", []),
                     action=event.get("action"))
    if kind == "restart-required":
        if not args.json:
            _print_verdict({**event, "verdict": "needs-restart"})
        return _fail(args, "restart-required", f"needs a restart: {event.get('reason')}",
                     changes=event.get("changes") or [])
    data = {k: v for k, v in event.items() if k not in ("type", "seq", "re", "time")}
    data["built_by"] = "daemon"
    if args.json:
        json.dump(data, sys.stdout)
        sys.stdout.write("\n")
    else:
        t = event.get("timings") or {}
        print(event.get("lib"))
        print(
            f"built a patch of {event.get('edited_crate')} for {program.label} (by the running daemon): "
            f"{(event.get('report') or {}).get('mapped', '?')} functions mapped; total {t.get('total_ms', 0):.0f} ms",
            file=sys.stderr,
        )
        for warning in (event.get("report") or {}).get("warnings", []):
            print(f"warning: {warning}", file=sys.stderr)
        _print_verdict({**event, "reason": event.get("verdict_reason")})
    return 0


def _fail(args: argparse.Namespace, kind: str, message: str, **extra) -> int:
    # The message first: if stdout's reader has gone away, the user still reads why.
    print(f"thinpatch patch: {message}", file=sys.stderr)
    if args.json:
        json.dump({"error": kind, "message": message, **extra}, sys.stdout)
        sys.stdout.write("\n")
    return 1
