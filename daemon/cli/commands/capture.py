"""`thinpatch capture`: build the workspace once while recording how cargo built it."""

from __future__ import annotations

import argparse
import sys

HELP = "build the workspace once, recording how cargo ran rustc and the linker"
DESCRIPTION = """\
Runs `cargo build` with thinpatch's rustc wrapper (RUSTC_WORKSPACE_WRAPPER=thinpatch-rustc).
Every workspace crate's rustc invocation and the binary's link line are recorded under
<target-dir>/thinpatch/, and the binary is built so that patches can load into it
(its symbols are exported dynamically). Run that binary: it is the one patches apply to.

The workspace's crate roots are marked as changed for the duration of the build, so cargo
recompiles and relinks them even when they are up to date; their file times are restored.

Exits with cargo's exit code. Arguments after `--` go to `cargo build`.

examples:
  thinpatch capture
  thinpatch capture --release -- --features fast
  thinpatch capture --workspace ~/src/game --target x86_64-unknown-linux-gnu
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", metavar="DIR", default=None, help="workspace directory (default: current directory)")
    parser.add_argument("--release", action="store_true", help="build with the release profile")
    parser.add_argument("--target", metavar="TRIPLE", default=None, help="target triple to build for")
    parser.add_argument("cargo_args", nargs=argparse.REMAINDER, metavar="-- CARGO_ARGS", help="extra arguments for `cargo build`")


def run(args: argparse.Namespace) -> int:
    from daemon.cli.capture_run import CaptureError, format_summary, run_capture

    cargo_args = list(args.cargo_args)
    if cargo_args and cargo_args[0] == "--":
        cargo_args = cargo_args[1:]
    try:
        result = run_capture(args.workspace, release=args.release, target=args.target, cargo_args=cargo_args)
    except CaptureError as exc:
        print(f"thinpatch capture: {exc}", file=sys.stderr)
        return 1
    # The summary goes to stderr with cargo's own progress; stdout stays free for scripts.
    print(format_summary(result), file=sys.stderr)
    return result.exit_code
