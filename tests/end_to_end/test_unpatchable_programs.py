"""Programs a patch can't work for are refused by `thinpatch patch`, in plain words naming
the fix, instead of "patching" and changing nothing. Real captures of a tiny bin crate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cargo


def capture(workspace: Path) -> list[str]:
    """Capture; return the capture's warnings (what `thinpatch capture` prints under it)."""
    from daemon.cli.capture_run import run_capture

    result = run_capture(workspace)
    assert result.exit_code == 0, result
    return result.warnings


def patch_json(workspace: Path) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "daemon", "patch", "--json", "--workspace", str(workspace)],
        capture_output=True, text=True, timeout=300,
    )
    return proc.returncode, json.loads(proc.stdout)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def with_profile(workspace: Path, setting: str) -> None:
    manifest = workspace / "Cargo.toml"
    manifest.write_text(manifest.read_text() + f"\n[profile.dev]\n{setting}\n")


def no_library_left(workspace: Path) -> bool:
    return not list((workspace / "target" / "thinpatch").rglob("*-patch-*.so"))


def test_lto_is_refused_before_building(fixture_copy, capture_state_dir):
    ws = fixture_copy("single_bin")
    with_profile(ws, 'lto = "thin"')
    warnings = capture(ws)
    assert any("single_bin can't be hot-patched" in w and "`lto = false`" in w for w in warnings), warnings
    edit(ws / "src" / "main.rs", "hello, {name}", "hi, {name}")
    code, result = patch_json(ws)
    assert code == 1 and "link-time optimisation" in result["message"], result
    assert "`lto = false`" in result["message"] and "[profile.dev]" in result["message"]
    assert no_library_left(ws)


def test_strip_true_is_refused(fixture_copy, capture_state_dir):
    ws = fixture_copy("single_bin")
    with_profile(ws, "strip = true")
    warnings = capture(ws)
    assert any("can't be hot-patched" in w and "`strip = false`" in w for w in warnings), warnings
    code, result = patch_json(ws)
    assert code == 1 and "`strip = false`" in result["message"], result


def test_thread_local_in_the_bin_crate_and_a_program_stripped_after_linking(fixture_copy, capture_state_dir):
    ws = fixture_copy("single_bin")
    main = ws / "src" / "main.rs"
    edit(main, "static CALLS: AtomicUsize = AtomicUsize::new(0);",
         "static CALLS: AtomicUsize = AtomicUsize::new(0);\n\nthread_local! {\n"
         "    static SEEN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };\n}")
    edit(main, '    format!("hello, {name}")', '    SEEN.with(|s| s.set(s.get() + 1));\n    format!("hello, {name}")')
    capture(ws)
    edit(main, "hello, {name}", "hi, {name}")
    code, result = patch_json(ws)
    assert code == 1, result
    message = result["message"]
    assert "`single_bin::SEEN`" in message and "Move the thread-local into a library crate" in message, message
    assert "-nodefaultlibs" not in message  # not the whole link line

    # A linker that strips (mold 1.x given --strip-debug) leaves no .symtab: refused too,
    # before anything is built.
    binary = ws / "target" / "debug" / "single_bin"
    subprocess.run(["strip", "--strip-all", str(binary)], check=True)
    code, result = patch_json(ws)
    # (the link record names target/debug/deps/single_bin-<hash>, the same inode)
    assert code == 1 and "no symbol table" in result["message"] and "/single_bin" in result["message"], result
