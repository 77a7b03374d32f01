"""Which files a captured program was built from, and when its build read them: the rule
`thinpatch run` uses to start only a binary of the current sources."""

from __future__ import annotations

import os
from pathlib import Path

from capture.store import CaptureRecord, Captures, CrateKey, LinkRecord
from daemon.cli.run_sources import build_inputs, changed_since_build, file_mtimes, sources_read
from daemon.service.programs import Program


def record(name: str, kind: str, at: float, **more: object) -> CaptureRecord:
    data = {
        "format": 1, "crate_name": name, "kind": kind, "crate_types": [kind], "rustc": "rustc",
        "args": [], "cwd": "/w", "env": {}, "recorded_at": at, **more,
    }
    return CaptureRecord.from_json(data, Path("/r"))


def test_sources_are_what_rustc_read_except_generated_files_and_manifests() -> None:
    game = record("game", "bin", 200.0, src="/w/src/main.rs")
    deps = {game.key: ["/w/src/main.rs", "/w/src/world.rs", "/w/assets/level.txt",
                       "/w/target/debug/build/game-1/out/gen.rs", "/w/build.rs", "/w/Cargo.toml"]}
    assert sources_read([game], deps, "/w/target") == {
        "/w/src/main.rs": 200.0, "/w/src/world.rs": 200.0, "/w/assets/level.txt": 200.0,
    }


def test_a_crate_without_dep_info_counts_its_root_file() -> None:
    lib = record("core_lib", "lib", 150.0, src="/w/core/src/lib.rs")
    assert sources_read([lib], {}, "/w/target") == {"/w/core/src/lib.rs": 150.0}
    assert sources_read([record("bare", "lib", 1.0)], {}, "/w/target") == {}


def test_a_file_two_crates_read_counts_from_the_earlier_read() -> None:
    """A save between the two reads is missing from the crate compiled first."""
    a, b = record("a", "lib", 100.0), record("b", "lib", 300.0)
    shared = "/w/shared/common.rs"
    assert sources_read([b, a], {a.key: [shared], b.key: [shared]}, "/w/target") == {shared: 100.0}


def test_a_file_counts_as_changed_only_when_saved_after_the_build_read_it() -> None:
    read_at = {"/w/a.rs": 100.0, "/w/b.rs": 100.0, "/w/c.rs": 100.0, "/w/gone.rs": 100.0}
    mtimes = {"/w/a.rs": 100.0, "/w/b.rs": 100.5, "/w/c.rs": 40.0, "/w/unread.rs": 900.0}
    assert changed_since_build(read_at, mtimes) == ["/w/b.rs"]


def test_build_inputs_are_the_programs_own_crates_sources_and_the_manifests(tmp_path: Path) -> None:
    """From the dep-info files rustc wrote, for the crates the binary links: another program's
    sources in the same workspace are not this one's."""
    ws = tmp_path / "w"
    target = ws / "target"
    deps_dir = target / "debug" / "deps"
    deps_dir.mkdir(parents=True)
    (deps_dir / "game-1.d").write_text(
        f"{deps_dir}/game-1: src/main.rs src/world.rs\n\nsrc/main.rs:\nsrc/world.rs:\n"
    )
    (deps_dir / "core_lib-abc.d").write_text(f"{deps_dir}/libcore_lib-abc.rlib: core/src/lib.rs\n")
    (deps_dir / "tool-2.d").write_text(f"{deps_dir}/tool-2: src/bin/tool.rs\n")
    rlib = f"{deps_dir}/libcore_lib-abc.rlib"
    game = record("game", "bin", 200.0, cwd=str(ws), args=["--extern", f"core_lib={rlib}"],
                  dep_info=str(deps_dir / "game-1.d"), is_top=True)
    lib = record("core_lib", "lib", 150.0, cwd=str(ws), extra_filename="-abc",
                 dep_info=str(deps_dir / "core_lib-abc.d"))
    tool = record("tool", "bin", 210.0, cwd=str(ws), dep_info=str(deps_dir / "tool-2.d"), is_top=True)
    link = LinkRecord("cc", (), f"{deps_dir}/game-1", 230.0, crate_name="game")
    captures = Captures(target / "thinpatch", "host-debug", {r.key: r for r in (game, lib, tool)},
                        {"game": link}, [])
    program = Program(str(ws), "host-debug", CrateKey("game", "bin"), "game", f"{deps_dir}/game-1", "b1d")
    manifests = [f"{ws}/Cargo.toml", f"{ws}/Cargo.lock"]
    assert build_inputs(captures, program, manifests) == {
        f"{ws}/Cargo.toml": 230.0,
        f"{ws}/Cargo.lock": 230.0,
        f"{ws}/src/main.rs": 200.0,
        f"{ws}/src/world.rs": 200.0,
        f"{ws}/core/src/lib.rs": 150.0,
    }


def test_file_mtimes_leave_out_files_that_are_gone(tmp_path: Path) -> None:
    there = tmp_path / "main.rs"
    there.write_text("fn main() {}\n")
    os.utime(there, (1000.0, 1234.5))
    assert file_mtimes([str(there), str(tmp_path / "gone.rs")]) == {str(there): 1234.5}
