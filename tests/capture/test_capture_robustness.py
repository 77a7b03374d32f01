"""Long link lines through @response files, unwritable capture dirs, concurrent writers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from capture import store
from daemon.cli.capture_run import run_capture

pytestmark = pytest.mark.cargo


def shim(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else shutil.which(name)


def test_long_link_line_goes_through_response_file_and_is_expanded(fixture_copy, tmp_path, capture_state_dir):
    """rustc switches to an @file when the link line exceeds ARG_MAX; the record holds it expanded.

    rustc reads its own arguments from an argument file here, so only the LINK line is too long.
    """
    ws = fixture_copy("single_bin")
    arg_max = os.sysconf("SC_ARG_MAX")
    pad = "x" * 200
    count = arg_max // 200 + 500
    # Harmless linker options: library search dirs that do not exist (one with a space and a
    # backslash). Passed with -Wl, because gcc forwards those to collect2 through its own @file.
    link_args = [f"-Wl,-L/thinpatch-nonexistent/{pad}/{i}" for i in range(count)]
    link_args.append("-Wl,-L/thinpatch nonexistent/with space/and\\backslash")
    argfile = tmp_path / "rustc-args"
    argfile.write_text("".join(f"-C\nlink-arg={a}\n" for a in link_args))
    env = dict(os.environ, CARGO_ENCODED_RUSTFLAGS=f"@{argfile}")
    result = run_capture(ws, env=env)
    assert result.exit_code == 0
    link = result.captures.link_for("single_bin")
    assert link is not None
    raw = link.to_json()["raw_args"]
    assert len(raw) == 1 and raw[0].startswith("@")  # rustc really used a response file
    assert link.to_json()["response_files"] == [raw[0][1:]]
    assert raw[0][1:] in link.to_json()["temporaries"] and not Path(raw[0][1:]).exists()
    args = link.args
    assert all(a in args for a in link_args[:3])
    assert link_args[-1] in args  # escaping of space and backslash read back exactly
    assert sum(a.startswith("-Wl,-L/thinpatch-nonexistent/") for a in args) == count
    assert "-o" in args and link.output == args[args.index("-o") + 1]
    assert subprocess.run([str(result.binaries[0])], capture_output=True, text=True).stdout.startswith("hello")


def test_unwritable_capture_dir_still_builds(fixture_copy, tmp_path):
    """The capture root is a plain file (unwritable even for root): the build works, the log says why."""
    ws = fixture_copy("single_bin")
    (ws / "target").mkdir()
    (ws / "target" / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    (ws / "target" / "thinpatch").write_text("not a directory\n")
    state = tmp_path / "state"
    env = dict(os.environ, THINPATCH_STATE_DIR=str(state))
    result = run_capture(ws, env=env)
    # cargo's build works; the capture reports that it recorded nothing, and fails.
    assert result.exit_code == 1 and result.recorded_nothing
    assert result.captured == []
    out = subprocess.run([str(ws / "target" / "debug" / "single_bin")], capture_output=True, text=True)
    assert out.returncode == 0 and "hello, thinpatch" in out.stdout
    log = (state / store.LOG_NAME).read_text()
    assert "thinpatch-rustc: could not record single_bin" in log
    assert "thinpatch-linker: could not record link line" in log
    assert any("no crate was recorded" in w and str(state / store.LOG_NAME) in w for w in result.warnings)


def test_parallel_build_records_are_intact(captured_workspace):
    """The workspace fixture is captured with -j2: every record parses and no temp file is left."""
    base = store.captures_dir(captured_workspace.capture_root)
    for path in base.rglob("*"):
        assert not path.name.endswith(".tmp"), path
        if path.suffix == ".json":
            json.loads(path.read_text())
    assert len(captured_workspace.captures.rustc) == 4


def test_concurrent_writers_of_one_key_never_tear(tmp_path):
    """Eight shims compiling the same crate at once: one whole record wins."""
    src = tmp_path / "lib.rs"
    src.write_text("pub fn f() -> u32 { 1 }\n")
    root = tmp_path / "root"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("THINPATCH_") and k not in ("RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER")
    }
    env.update(
        RUSTC_WORKSPACE_WRAPPER=shim("thinpatch-rustc"),
        THINPATCH_CAPTURE_ROOT=str(root),
        THINPATCH_WORKSPACE=str(tmp_path),
        THINPATCH_STATE_DIR=str(tmp_path / "state"),
    )
    procs = []
    for i in range(8):
        out = tmp_path / "debug" / f"deps{i}"  # one profile ("debug"), so one scope and one key
        out.mkdir(parents=True)
        cmd = [
            shim("thinpatch-rustc"),
            "rustc",
            "--crate-name",
            "same",
            "--crate-type",
            "lib",
            "--out-dir",
            str(out),
            str(src),
        ]
        procs.append(subprocess.Popen(cmd, env=env))
    assert all(p.wait() == 0 for p in procs)
    records = list(root.rglob("*.json"))
    assert [p.name for p in records] == ["same.lib.json"]
    data = json.loads(records[0].read_text())
    assert data["crate_name"] == "same" and data["out_dir"].startswith(str(tmp_path / "debug" / "deps"))
    assert not list(root.rglob("*.tmp"))


def defined_functions(path: Path) -> set[str]:
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as fh:
        symtab = ELFFile(fh).get_section_by_name(".symtab")
        return {
            s.name for s in symtab.iter_symbols() if s["st_info"]["type"] == "STT_FUNC" and s["st_shndx"] != "SHN_UNDEF"
        }


@pytest.mark.parametrize("edits", ["no-gc-sections", "no-gc-sections,whole-archive-rlibs"])
def test_fat_link_edits_change_the_link_but_not_the_record(fixture_copy, captured_single_bin, edits):
    """THINPATCH_FAT_LINK makes the linker shim edit the line it runs; the record keeps the original."""
    ws = fixture_copy("single_bin")
    result = run_capture(ws, env=dict(os.environ, THINPATCH_FAT_LINK=edits))
    assert result.exit_code == 0
    link = result.captures.link_for("single_bin").to_json()
    assert link["link_edits"] == edits.split(",")
    assert "-Wl,--gc-sections" in link["args"]  # the original line, as rustc gave it
    assert "-Wl,--whole-archive" not in link["args"]
    assert result.captures.crate("single_bin").to_json()["linker_chain"]["link_edits"] == edits.split(",")
    assert captured_single_bin.captures.link_for("single_bin").to_json()["link_edits"] == ["whole-archive-rlibs"]
    out = subprocess.run([str(result.binaries[0])], capture_output=True, text=True)
    assert out.returncode == 0 and "calls = 2" in out.stdout
    default_functions = defined_functions(captured_single_bin.binaries[0])
    edited_functions = defined_functions(result.binaries[0])
    assert default_functions <= edited_functions
    if edits == "no-gc-sections":
        # Without --gc-sections the linker keeps functions the program never references.
        assert len(edited_functions) > len(default_functions)
