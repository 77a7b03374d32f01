"""Programs and subscriber identity, on capture records as data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from capture.store import CaptureRecord, Captures, CrateKey, LinkRecord
from daemon.service.programs import (
    Program,
    ProgramChoiceError,
    choose_program,
    identify,
    program_crates,
    programs_of,
)

TARGET = "/ws/target/debug"


def rustc(
    name: str, kind: str, crate_types: list[str], externs: dict[str, str] | None = None, top: bool = False
) -> CaptureRecord:
    args = ["--crate-name", name, "--edition=2021", "src/lib.rs", "-C", "extra-filename=-1111"]
    for dep, path in (externs or {}).items():
        args += ["--extern", f"{dep}={path}"]
    data = {
        "format": 1,
        "crate_name": name,
        "kind": kind,
        "crate_types": crate_types,
        "rustc": "rustc",
        "args": args,
        "cwd": "/ws",
        "env": {},
        "recorded_at": 1.0,
        "scope": "host-debug",
        "is_top": top,
    }
    return CaptureRecord.from_json(data, Path(f"/c/{name}.{kind}.json"))


def link(name: str, output: str) -> LinkRecord:
    data = {"format": 1, "linker": "cc", "args": [], "output": output, "crate_name": name, "recorded_at": 1.0}
    return LinkRecord.from_json(data, Path(f"/c/link/{name}.json"))


def captures(scope: str = "host-debug") -> Captures:
    shared = rustc("shared", "lib", ["lib"])
    lib_path = f"{TARGET}/deps/libshared-1111.rlib"
    records = {
        CrateKey("shared", "lib"): shared,
        CrateKey("alpha", "bin"): rustc("alpha", "bin", ["bin"], {"shared": lib_path}, top=True),
        CrateKey("beta", "bin"): rustc("beta", "bin", ["bin"], {}, top=True),
        CrateKey("plugin", "lib"): rustc("plugin", "lib", ["cdylib"], {"shared": lib_path}, top=True),
    }
    links = {
        "alpha": link("alpha", f"{TARGET}/deps/alpha-aaaa"),
        "beta": link("beta", f"{TARGET}/deps/beta-bbbb"),
        "plugin": link("plugin", f"{TARGET}/deps/libplugin.so"),
    }
    return Captures(Path("/ws/target/thinpatch"), scope, records, links, [])


def test_every_bin_is_a_program_and_a_cdylib_is_not() -> None:
    build_ids = {f"{TARGET}/deps/alpha-aaaa": "a1", f"{TARGET}/deps/beta-bbbb": "b1"}
    programs, skipped = programs_of("/ws", captures(), build_ids)
    assert [(p.name, p.crate, p.build_id, p.key) for p in programs] == [
        ("alpha", CrateKey("alpha", "bin"), "a1", "host-debug/alpha.bin"),
        ("beta", CrateKey("beta", "bin"), "b1", "host-debug/beta.bin"),
    ]
    assert [s.crate for s in skipped] == [CrateKey("plugin", "lib")]
    assert "not a program" in skipped[0].reason and "main" in skipped[0].reason


def test_a_library_belongs_to_the_programs_that_link_it() -> None:
    c = captures()
    assert program_crates(c, CrateKey("alpha", "bin")) == {CrateKey("alpha", "bin"), CrateKey("shared", "lib")}
    assert program_crates(c, CrateKey("beta", "bin")) == {CrateKey("beta", "bin")}


def program(name: str, scope: str = "host-debug", build_id: str | None = None) -> Program:
    return Program(
        "/ws", scope, CrateKey(name, "bin"), name, f"/ws/target/{scope}/deps/{name}-x", build_id or f"{name}-{scope}"
    )


EVERY = [program("alpha"), program("beta"), program("alpha", "host-release")]


def test_choosing_a_program_needs_bin_and_profile_only_when_ambiguous() -> None:
    assert choose_program(EVERY, bin_name="beta") == EVERY[1]
    assert choose_program(EVERY, bin_name="alpha", profile="release") == EVERY[2]
    assert choose_program(EVERY, bin_name="alpha", profile="debug", target=None) == EVERY[0]
    with pytest.raises(
        ProgramChoiceError, match="no captured program matches --bin alpha --target aarch64-apple-darwin"
    ):
        choose_program(EVERY, bin_name="alpha", target="aarch64-apple-darwin")
    with pytest.raises(ProgramChoiceError, match=r"several captured programs match: .*Choose one with --bin NAME"):
        choose_program(EVERY)
    with pytest.raises(ProgramChoiceError, match=r"--release, --profile NAME or --target TRIPLE"):
        choose_program(EVERY, bin_name="alpha")
    with pytest.raises(
        ProgramChoiceError, match=r"no captured program matches --bin gamma; captured: alpha \(host-debug\)"
    ):
        choose_program(EVERY, bin_name="gamma")


def test_a_process_of_a_captured_binary_is_matched_to_its_program() -> None:
    who = identify(pid=7, build_id="beta-host-debug", executable="/ws/target/debug/beta", programs=EVERY, retired={})
    assert who.program == EVERY[1] and who.reason is None


def test_a_binary_replaced_by_cargo_build_is_refused_with_the_fix() -> None:
    who = identify(pid=7, build_id="f00d" * 5, executable="/ws/target/debug/alpha", programs=EVERY, retired={})
    assert who.program is None and who.reason == "replaced"
    assert "plain `cargo build`" in who.message and "thinpatch run" in who.message


def test_an_earlier_sessions_binary_must_restart() -> None:
    old = program("alpha", build_id="old")
    who = identify(pid=7, build_id="old", executable="/ws/target/debug/alpha", programs=EVERY, retired={"old": old})
    assert who.reason == "old-session" and "earlier capture" in who.message


def test_unknown_and_unreadable_binaries_say_what_to_do() -> None:
    other = identify(pid=7, build_id="beef", executable="/usr/bin/python3", programs=EVERY, retired={})
    assert other.reason == "not-captured" and "thinpatch did not capture" in other.message
    unreadable = identify(pid=7, build_id=None, executable=None, programs=EVERY, retired={})
    assert unreadable.reason == "unidentified" and "build_id" in unreadable.message


def test_a_running_capture_holds_the_daemon_back_until_it_ends(tmp_path: Path) -> None:
    from daemon.cli.capture_run import hold_capture_lock
    from daemon.service.engine import capture_in_progress

    assert not capture_in_progress(tmp_path)  # never captured
    lock = hold_capture_lock(tmp_path)
    assert lock is not None
    try:
        assert capture_in_progress(tmp_path)
    finally:
        os.close(lock)
    assert not capture_in_progress(tmp_path)
