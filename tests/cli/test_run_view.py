"""`thinpatch run`'s decisions and status lines, on data."""

from __future__ import annotations

from pathlib import Path

from capture.store import CaptureRecord, Captures, CrateKey
from daemon.cli.run_session import RunView, describe_exit, manifest_files, stale_reason
from daemon.cli.terminal import Style
from daemon.service.programs import Program

PROGRAM = Program("/w", "host-debug", CrateKey("game", "bin"), "game", "/w/target/debug/deps/game-1", "b1d")
OTHER = {"name": "tool", "scope": "host-debug", "binary": "/w/target/debug/deps/tool-1", "build_id": "0th"}
MINE = PROGRAM.describe()


def view() -> RunView:
    v = RunView(PROGRAM, Style(False))
    v.pid = 41
    return v


def test_run_takes_cargo_runs_flags() -> None:
    from daemon.cli.main import build_parser

    args = build_parser().parse_args(
        ["run", "--bin", "game", "-p", "core", "--release", "-F", "a", "--", "--level", "3"]
    )
    assert (args.bin, args.package, args.release, args.features) == (["game"], ["core"], True, ["a"])
    assert args.program_args == ["--", "--level", "3"]


def test_a_manifest_changed_after_the_capture_makes_it_stale_but_a_source_edit_does_not() -> None:
    assert stale_reason(None, 0.0, {}) == "no capture of this program yet"
    assert stale_reason(PROGRAM, 100.0, {"/w/Cargo.toml": 99.0, "/w/build.rs": 50.0}) is None
    assert stale_reason(PROGRAM, 100.0, {"/w/Cargo.toml": 101.0, "/w/Cargo.lock": 102.0}) == (
        "Cargo.lock, Cargo.toml changed since the capture"
    )


def test_manifest_files_are_each_crates_manifest_and_build_script() -> None:
    data = {
        "format": 1,
        "crate_name": "game",
        "kind": "bin",
        "crate_types": ["bin"],
        "rustc": "rustc",
        "args": [],
        "cwd": "/w",
        "env": {},
        "recorded_at": 1.0,
        "manifest_dir": "/w/game",
    }
    captures = Captures(
        Path("/w/target/thinpatch"),
        "host-debug",
        {CrateKey("game", "bin"): CaptureRecord.from_json(data, Path("/r"))},
        {},
        [],
    )
    assert manifest_files(captures, Path("/w")) == {
        "/w/Cargo.toml",
        "/w/Cargo.lock",
        "/w/game/Cargo.toml",
        "/w/game/build.rs",
    }


def test_only_this_programs_builds_are_shown() -> None:
    v = view()
    started = {"type": "build-started", "id": 3, "crate": "game", "files": ["/w/game/src/main.rs"], "program": MINE}
    assert v.lines(started) == ["[thinpatch] building game (main.rs)"]
    assert v.lines({**started, "program": OTHER}) == []
    assert v.lines({**started, "replayed": True}) == []


def test_patched_is_said_only_when_this_process_applied_it() -> None:
    v = view()
    ready = {"type": "patch-ready", "id": 3, "program": MINE, "subscribers": 1, "timings": {"total_ms": 212.4}}
    assert v.lines(ready) == []
    applied = {"type": "patch-result", "id": 3, "pid": 41, "applied": True}
    assert v.lines(applied) == ["[thinpatch] patched in 212 ms: game (pid 41) runs the new code"]
    assert v.lines({**applied, "pid": 99}) == []
    failed = {**applied, "applied": False, "message": "dlopen: undefined symbol x"}
    assert v.lines(failed) == ["[thinpatch] patch failed in game: dlopen: undefined symbol x"]
    lonely = v.lines({**ready, "subscribers": 0})
    assert "game is not listening" in lonely[0] and "thinpatch init" in lonely[0]


def test_compile_errors_as_cargo_renders_them_with_a_count() -> None:
    error = {"level": "error", "message": "expected `;`", "rendered": "error: expected `;`\n --> src/main.rs:4:5\n"}
    warning = {"level": "warning", "message": "unused variable", "rendered": "warning: unused variable\n"}
    summary = {"level": "error", "message": "aborting due to 1 previous error", "rendered": "error: aborting\n"}
    lines = view().lines(
        {
            "type": "build-failed",
            "id": 4,
            "program": MINE,
            "message": "does not compile",
            "diagnostics": [error, warning, summary],
        }
    )
    assert lines == [
        "error: expected `;`\n --> src/main.rs:4:5",
        "[thinpatch] build failed (1 error, 1 warning); game keeps running the last good code",
    ]



def test_the_view_knows_whether_this_programs_last_build_failed() -> None:
    """`thinpatch restart` is not tried while the sources don't compile."""
    v = view()
    error = {"level": "error", "message": "expected `;`", "rendered": "error: expected `;`\n"}
    failed = {"type": "build-failed", "id": 5, "program": MINE, "message": "does not compile", "diagnostics": [error]}
    ready = {"type": "patch-ready", "id": 6, "program": MINE, "subscribers": 1, "timings": {"total_ms": 90.0}}
    assert not v.failing
    v.lines({**failed, "program": OTHER})
    assert not v.failing  # another program's build says nothing about this one
    v.lines(failed)
    assert v.failing
    v.lines(ready)
    assert not v.failing
    v.lines({**failed, "diagnostics": [], "message": "the captured program is gone; capture again"})
    assert not v.failing  # not the code's fault: a fresh build is the cure, and restart may try it

def test_exits_are_described_plainly() -> None:
    assert describe_exit("game", 3) == "game exited with status 3; it starts again on the next save"
    assert describe_exit("game", -9) == "game was killed by SIGKILL; it starts again on the next save"


def test_run_on_a_directory_that_does_not_exist_says_so(tmp_path: Path, capsys) -> None:
    from daemon.cli.main import main

    assert main(["run", "--workspace", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "is not a directory" in err and "Cargo.toml" in err and "Traceback" not in err
