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

Exits with cargo's exit code. It takes cargo's selection flags as cargo does; any other
`cargo build` arguments go after `--`.

examples:
  thinpatch capture
  thinpatch capture --release --features fast
  thinpatch capture --profile dev-fast -p game --bin editor
  thinpatch capture --workspace ~/src/game --target x86_64-unknown-linux-gnu
  thinpatch capture -- --locked
"""


def add_cargo_selection_options(parser: argparse.ArgumentParser) -> None:
    """cargo's flags that choose what to build and how, spelled as cargo spells them."""
    group = parser.add_argument_group("cargo options (as for `cargo build`)")
    group.add_argument("--bin", metavar="NAME", action="append", default=[], help="build only this binary")
    group.add_argument("-p", "--package", metavar="SPEC", action="append", default=[], help="build only this package")
    group.add_argument("-r", "--release", action="store_true", help="build with the release profile")
    group.add_argument("--profile", metavar="NAME", default=None, help="build with this profile")
    group.add_argument("--target", metavar="TRIPLE", default=None, help="target triple to build for")
    group.add_argument("-F", "--features", metavar="FEATURES", action="append", default=[], help="features to activate")
    group.add_argument("--all-features", action="store_true", help="activate every feature")
    group.add_argument("--no-default-features", action="store_true", help="do not activate the default feature")


def cargo_selection_args(args: argparse.Namespace) -> list[str]:
    """The cargo arguments for the selection flags in ``args`` (without --release/--target,
    which are passed on their own)."""
    out: list[str] = []
    for name in args.bin:
        out += ["--bin", name]
    for spec in args.package:
        out += ["--package", spec]
    if args.profile:
        out += ["--profile", args.profile]
    for features in args.features:
        out += ["--features", features]
    if args.all_features:
        out.append("--all-features")
    if args.no_default_features:
        out.append("--no-default-features")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workspace", metavar="DIR", default=None, help="workspace directory (default: current directory)"
    )
    add_cargo_selection_options(parser)
    parser.add_argument(
        "cargo_args", nargs=argparse.REMAINDER, metavar="-- CARGO_ARGS", help="other arguments for `cargo build`"
    )


def run(args: argparse.Namespace) -> int:
    from daemon.cli.capture_run import CaptureError, CaptureUsageError, format_summary, run_capture

    extra = list(args.cargo_args)
    if extra and extra[0] == "--":
        extra = extra[1:]
    cargo_args = cargo_selection_args(args) + extra
    try:
        result = run_capture(args.workspace, release=args.release, target=args.target, cargo_args=cargo_args)
    except CaptureError as exc:
        print(f"thinpatch capture: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, CaptureUsageError) else 1
    # The summary goes to stderr with cargo's own progress; stdout stays free for scripts.
    print(format_summary(result), file=sys.stderr)
    return result.exit_code
