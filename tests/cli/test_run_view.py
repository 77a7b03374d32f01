"""`thinpatch run`'s decisions and status lines, on data."""

from __future__ import annotations

from pathlib import Path

from capture.store import CaptureRecord, Captures, CrateKey
from daemon.cli.run_session import (
    BuildFailed,
    RunError,
    RunView,
    already_built,
    build_digests,
    describe_exit,
    manifest_files,
    name_files,
    relaunch_reason,
    restart_failure,
    stale_reason,
)
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


def test_a_manifest_or_source_saved_after_the_build_read_it_makes_the_capture_stale() -> None:
    assert stale_reason(None, {}, {}, "/w") == "no capture of this program yet"
    read_at = {"/w/Cargo.toml": 100.0, "/w/Cargo.lock": 100.0, "/w/build.rs": 100.0, "/w/src/main.rs": 90.0}
    as_built = {"/w/Cargo.toml": 99.0, "/w/Cargo.lock": 100.0, "/w/src/main.rs": 89.5}  # no build.rs
    assert stale_reason(PROGRAM, read_at, as_built, "/w") is None
    assert stale_reason(PROGRAM, read_at, {**as_built, "/w/Cargo.toml": 101.0, "/w/Cargo.lock": 102.0}, "/w") == (
        "Cargo.lock, Cargo.toml changed since the capture"
    )
    # a source saved after rustc read it: the capture's binary is not the current code
    assert stale_reason(PROGRAM, read_at, {**as_built, "/w/src/main.rs": 95.0}, "/w") == (
        "src/main.rs changed since the capture"
    )
    # a file the build did not read is no reason (another program's, a test's)
    assert stale_reason(PROGRAM, read_at, {**as_built, "/w/tests/it.rs": 500.0}, "/w") is None


def test_changed_files_are_named_from_the_workspace_a_few_at_a_time() -> None:
    assert name_files(["/w/src/main.rs"], "/w") == "src/main.rs"
    assert name_files(["/w/b.rs", "/elsewhere/a.rs", "/w/a.rs"], "/w") == "/elsewhere/a.rs, a.rs, b.rs"
    many = [f"/w/src/m{i}.rs" for i in range(5)]
    assert name_files(many, "/w") == "src/m0.rs, src/m1.rs, src/m2.rs and 2 more"
    assert name_files(["/wx/a.rs"], "/w") == "/wx/a.rs"  # beside the workspace, not in it


def test_a_stopped_program_is_rebuilt_unless_its_binary_is_the_current_sources_build() -> None:
    assert relaunch_reason(PROGRAM, PROGRAM, True, None) is None  # start it as it is
    stale = "src/main.rs changed since the capture"
    assert relaunch_reason(PROGRAM, PROGRAM, True, stale) == stale
    assert relaunch_reason(PROGRAM, PROGRAM, False, None) == "its binary is gone"
    recaptured = Program("/w", "host-debug", CrateKey("game", "bin"), "game", "/w/target/debug/deps/game-1", "n3w")
    assert relaunch_reason(PROGRAM, recaptured, True, None) == "the capture changed since it started"
    assert relaunch_reason(PROGRAM, None, True, None) == "the capture changed since it started"
    assert relaunch_reason(PROGRAM, None, False, None) == "its binary is gone"


def test_a_stopped_program_starts_again_when_a_save_of_its_sources_may_build() -> None:
    v = view()
    v.pid = None  # it stopped
    ready = {"type": "patch-ready", "id": 3, "program": MINE, "subscribers": 0}
    rejected = {"type": "patch-rejected", "id": 4, "program": MINE, "reason": "layout changed"}
    error = {"level": "error", "message": "expected `;`", "rendered": "error: expected `;`\n"}
    broken = {"type": "build-failed", "id": 5, "program": MINE, "message": "does not compile", "diagnostics": [error]}
    other = {"type": "build-failed", "id": 6, "program": MINE, "message": "the linker crashed", "diagnostics": []}
    started = {"type": "build-started", "id": 7, "crate": "game", "files": ["/w/src/main.rs"], "program": MINE}
    for event, starts in [(ready, True), (rejected, True), (broken, False), (other, True), (started, False),
                          ({**ready, "program": OTHER}, False), ({**ready, "replayed": True}, False)]:
        v.lines(event)
        assert v.save_built(event) is starts, event
    # while it is stopped, a failed build says what happens next, not that it keeps running
    assert v.lines(broken)[-1] == "[thinpatch] build failed (1 error); game starts again once a save builds"


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


def test_every_build_line_counts_the_builds_warnings() -> None:
    v = view()
    unused = {"level": "warning", "message": "unused variable: `x`", "rendered": "warning: unused variable"}
    summary = {"level": "warning", "message": "1 warning emitted", "spans": []}
    report = {"compiler_warnings": [unused, summary]}
    ready = {"type": "patch-ready", "id": 7, "program": MINE, "subscribers": 1, "timings": {"total_ms": 96.0},
             "report": report}
    assert v.lines(ready) == []
    applied = {"type": "patch-result", "id": 7, "pid": 41, "applied": True}
    assert v.lines(applied) == ["[thinpatch] patched in 96 ms (1 warning): game (pid 41) runs the new code"]
    lonely = v.lines({**ready, "id": 8, "subscribers": 0})
    assert lonely[0].startswith("[thinpatch] patch built in 96 ms (1 warning), but game is not listening")
    error = {"level": "error", "message": "expected `;`", "rendered": "error: expected `;`"}
    failed = {"type": "build-failed", "id": 9, "program": MINE, "diagnostics": [error, unused, unused]}
    assert v.lines(failed)[-1] == (
        "[thinpatch] build failed (1 error, 2 warnings); game keeps running the last good code"
    )


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
    assert not v.code_broken
    v.lines({**failed, "program": OTHER})
    assert not v.code_broken  # another program's build says nothing about this one
    v.lines(failed)
    assert v.code_broken
    v.lines(ready)
    assert not v.code_broken
    v.lines({**failed, "diagnostics": [], "message": "the captured program is gone; capture again"})
    assert not v.code_broken  # not the code's fault: a fresh build is the cure, and restart may try it

def failed_build(*diagnostics: dict) -> dict:
    return {"type": "build-failed", "id": 4, "program": MINE, "message": "does not compile",
            "diagnostics": list(diagnostics)}


def located(message: str, file: str, line: int) -> dict:
    span = {"file_name": file, "line_start": line, "is_primary": True}
    return {"level": "error", "message": message, "rendered": f"error: {message}\n", "spans": [span]}


def test_the_failure_summary_names_the_count_and_the_first_errors_place() -> None:
    one = view().lines(failed_build(located("expected `;`", "src/main.rs", 4)))
    assert one[-1] == "[thinpatch] build failed (1 error at src/main.rs:4); game keeps running the last good code"
    two = view().lines(failed_build(located("a", "/w/src/lib.rs", 9), located("b", "src/main.rs", 1)))
    assert two[-1].startswith("[thinpatch] build failed (2 errors, the first at src/lib.rs:9);")


def test_after_a_failed_build_its_summary_stays_the_last_line_until_a_build_succeeds() -> None:
    v = view()
    summary = v.lines(failed_build(located("expected `;`", "src/main.rs", 4)))[-1]
    started = {"type": "build-started", "id": 5, "crate": "game", "files": ["/w/game/src/main.rs"], "program": MINE}
    assert v.lines(started) == ["[thinpatch] building game (main.rs)", summary]
    assert v.lines({"type": "build-started", "program": OTHER}) == []  # nothing said: nothing repeated
    assert v.lines({"type": "patch-ready", "id": 5, "program": MINE, "subscribers": 1}) == []
    assert v.lines(started) == ["[thinpatch] building game (main.rs)"]
    # a failed restart build is summarised the same way, and stays until a restart build succeeds
    v.fail("[thinpatch] rebuild failed after the Cargo.toml change: ...")
    assert v.lines(started)[-1] == "[thinpatch] rebuild failed after the Cargo.toml change: ..."
    v.lines({"type": "patch-ready", "id": 6, "program": MINE, "subscribers": 1})
    assert v.lines(started)[-1] == "[thinpatch] rebuild failed after the Cargo.toml change: ..."


def test_a_manifest_change_our_own_build_made_or_saw_is_no_reason_to_rebuild() -> None:
    before = {"/w/Cargo.toml": "t1", "/w/Cargo.lock": "l1", "/w/build.rs": None}
    after = {"/w/Cargo.toml": "t2", "/w/Cargo.lock": "l2", "/w/build.rs": None}
    # the build answered Cargo.toml as it found it, and Cargo.lock as it left it
    built = build_digests(before, after)
    assert built == {"/w/Cargo.toml": "t1", "/w/Cargo.lock": "l2", "/w/build.rs": None}
    # cargo rewrote Cargo.lock during our build: no second restart
    assert already_built(["/w/Cargo.lock"], built, {"/w/Cargo.lock": "l2"})
    # Cargo.toml saved again while the build ran, or since: a real change
    assert not already_built(["/w/Cargo.toml"], built, {"/w/Cargo.toml": "t2"})
    assert not already_built(["/w/Cargo.lock", "/w/Cargo.toml"], built, {"/w/Cargo.lock": "l2", "/w/Cargo.toml": "t3"})
    # a file the build did not know, or no files at all, is never taken as built
    assert not already_built(["/w/other/Cargo.toml"], built, {"/w/other/Cargo.toml": None})
    assert not already_built([], built, {})


def test_a_failed_restart_build_is_shown_once_then_summed_up_in_a_line() -> None:
    failed = BuildFailed("the build failed (see cargo's output above); fix it and run `thinpatch run` again")
    assert restart_failure(failed) == (None, "the build failed; cargo's output is above")
    manifest = RunError("`cargo metadata` failed (101):\nerror: invalid basic string\n --> Cargo.toml:3:17\n")
    assert restart_failure(manifest) == (str(manifest).rstrip(), "see above")
    assert restart_failure(RunError("the daemon stopped.")) == (None, "the daemon stopped")


def test_exits_are_described_plainly() -> None:
    again = "it starts again on the next save that builds, from the current sources"
    assert describe_exit("game", 3) == f"game exited with status 3; {again}"
    assert describe_exit("game", -9) == f"game was killed by SIGKILL; {again}"


def test_run_on_a_directory_that_does_not_exist_says_so(tmp_path: Path, capsys) -> None:
    from daemon.cli.main import main

    assert main(["run", "--workspace", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "is not a directory" in err and "Cargo.toml" in err and "Traceback" not in err


def test_a_build_failure_raised_inside_the_session_is_a_plain_message(tmp_path: Path, capsys, monkeypatch) -> None:
    """Raised in the session's task group, it arrives wrapped in an exception group."""
    import daemon.cli.run_session as session
    import daemon.cli.workspace_root as workspace_root
    from daemon.cli.main import main

    async def fails(options) -> int:
        raise BaseExceptionGroup("task group", [BuildFailed("the build failed (see cargo's output above)")])

    monkeypatch.setattr(session, "run_session", fails)
    monkeypatch.setattr(workspace_root, "workspace_root", lambda directory: directory)
    assert main(["run", "--workspace", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == "thinpatch run: the build failed (see cargo's output above)\n"


def test_not_patchable_is_shown_only_for_the_running_process() -> None:
    v = view()
    for_process = {"type": "not-patchable", "for_pid": 41, "reason": "replaced", "message": "rebuilt it"}
    assert v.lines(for_process) == ["[thinpatch] not patchable: rebuilt it"]
    # about an earlier binary (no process named), seen after the program stopped
    for_binary = {"type": "not-patchable", "for_build_id": "0ld", "reason": "old-session", "message": "earlier"}
    assert v.lines(for_binary) == []
    v.pid = None
    assert v.lines(for_binary) == [] and v.lines(for_process) == []
