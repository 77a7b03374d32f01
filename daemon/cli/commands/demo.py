"""`thinpatch demo`: watch a live Rust process get patched, in one command."""

from __future__ import annotations

import argparse
import sys

HELP = "watch a running Rust program get hot-patched, step by step (needs only cargo)"
DESCRIPTION = """\
Copies a small example app (a counter, standard library only) into a temp dir, builds it
once under capture, starts the daemon inside this process and launches the app, which
subscribes to the daemon over its socket and applies patches the way subsecond does, through
thinpatch-client: the crate `thinpatch init` adds to your own program.

Then it edits the app's src/scene.rs like an editor would (write a temp file, rename it
over), one step at a time, and shows each step as it lands: what was edited, the patch
timings (rustc, link, verify, total) and the app's next output line, whose counter keeps
going because the process is never restarted:
  1. a changed string
  2. a changed formula
  3. a call into std APIs the app never used (BTreeMap, std::env::var)
  4. a compile error: reported with file and line, the app keeps running
  5. the fix: patched again

Ends with a summary table and the next step: the same on your own project. Exits 0 when
every step was observed, 1 otherwise (with what went wrong and how to fix it). The app and
the daemon are always stopped, and the temp dir is removed unless --keep. The demo uses its
own socket and capture registry: a daemon you already run is not affected.

--interactive runs the steps, then leaves the app and the daemon running and prints the
file to edit: every save patches the app. Ctrl-C stops both and cleans up.

examples:
  thinpatch demo
  thinpatch demo --interactive
  thinpatch demo --json > demo.json        progress on stderr, summary as JSON on stdout
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interactive", action="store_true",
        help="after the scripted steps, keep the app and daemon running for your own edits until Ctrl-C",
    )
    from daemon.cli.terminal import add_color_option

    add_color_option(parser)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (the app's source, build and patches)")
    parser.add_argument(
        "--json", action="store_true", help="print the summary as JSON on stdout (progress goes to stderr)"
    )
    parser.add_argument("--tick-ms", type=int, default=300, metavar="MS", help="the app's tick period (default: 300)")
    parser.add_argument(
        "--step-timeout", type=float, default=120.0, metavar="S",
        help="how long to wait for the daemon's answer to one edit (default: 120)",
    )


def run(args: argparse.Namespace) -> int:
    import json

    from daemon.cli.demo import DemoOptions, run_demo
    from daemon.cli.demo_script import final_message, next_step, summary_table
    from daemon.cli.logging_setup import configure_logging
    from daemon.cli.terminal import Style, wants_color

    progress = sys.stderr if args.json else sys.stdout
    style = Style(wants_color(args.color, progress))
    configure_logging("warning")  # the demo shows the daemon's events itself
    options = DemoOptions(
        interactive=args.interactive,
        keep=args.keep,
        tick_ms=max(20, args.tick_ms),
        step_timeout_s=args.step_timeout,
        progress=progress,
        style=style,
    )
    report = run_demo(options)
    if any(s.status != "not run" for s in report.steps):
        print("\n" + summary_table(report.steps, style), file=progress)
    print("\n" + final_message(report, style), file=progress)
    if report.kept and report.directory:
        print(f"kept: {report.directory}", file=progress)
    if report.ok:
        print("\n" + next_step(style), file=progress)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    return 0 if report.ok else 1
