"""`thinpatch capture` when something is wrong: a failed build keeps the last good capture,
and mistakes in the command line or the toolchain are one message naming the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from capture import store


def thinpatch(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def records(capture_root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(capture_root)): p.read_bytes() for p in (capture_root / "captures").rglob("*.json")}


def assert_message(out: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert out.returncode == code, out
    assert "Traceback" not in out.stderr and out.stdout == ""
    for needle in needles:
        assert needle in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2, out.stderr


@pytest.mark.cargo
def test_a_failed_capture_keeps_the_last_good_one(fixture_copy, capture_state_dir):
    ws = fixture_copy("single_bin")
    good = thinpatch("capture", "--workspace", str(ws))
    assert good.returncode == 0, good.stderr
    root = ws / "target" / "thinpatch"
    before = records(root)
    assert any(k.endswith("single_bin.bin.json") for k in before)

    main = ws / "src" / "main.rs"
    main.write_text(main.read_text().replace('format!("hello, {name}")', 'let n: u32 = "nope"; format!("{n}")'))
    failed = thinpatch("capture", "--workspace", str(ws))
    assert failed.returncode == 101
    assert "cargo build failed (exit 101); nothing new was captured" in failed.stderr
    assert "kept the last good capture" in failed.stderr and "binary:" not in failed.stderr
    assert records(root) == before  # the records a daemon serves are still the good build's
    assert not (root / "last-good").exists() or not any((root / "last-good").iterdir())


@pytest.mark.cargo
def test_a_first_capture_that_fails_leaves_no_capture(fixture_copy, capture_state_dir):
    ws = fixture_copy("single_bin")
    main = ws / "src" / "main.rs"
    main.write_text(main.read_text().replace('format!("hello, {name}")', 'let n: u32 = "nope"; format!("{n}")'))
    failed = thinpatch("capture", "--workspace", str(ws))
    assert failed.returncode == 101
    assert records(ws / "target" / "thinpatch") == {}
    assert store.load_captures(ws / "target" / "thinpatch").rustc == {}


def test_capture_of_a_missing_directory(tmp_path):
    assert_message(
        thinpatch("capture", "--workspace", str(tmp_path / "nope")), 2, "does not exist", "--workspace"
    )


def test_capture_of_a_file(tmp_path):
    (tmp_path / "main.rs").write_text("fn main() {}\n")
    assert_message(thinpatch("capture", "--workspace", str(tmp_path / "main.rs")), 2, "is not a directory")


@pytest.mark.parametrize("problem", ["missing", "not-executable"])
def test_capture_with_a_broken_rustc(fixture_copy, tmp_path, problem):
    ws = fixture_copy("single_bin")
    rustc = tmp_path / "rustc-broken"
    if problem == "not-executable":
        rustc.write_text("#!/bin/sh\n")
        os.chmod(rustc, 0o644)
    env = dict(os.environ, RUSTC=str(rustc))
    reason = "not found" if problem == "missing" else "Permission denied"
    assert_message(thinpatch("capture", "--workspace", str(ws), env=env), 1, f"cannot run {rustc}", reason, "$RUSTC")
