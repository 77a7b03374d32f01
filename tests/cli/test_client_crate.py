"""The bundled thinpatch-client crate as users get it: no dependencies, a stated minimum Rust
version, and a clean build under edition 2024 as well as its own 2021. (Its behaviour is
tested by its own `cargo test`, which tests/run runs.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

CRATE = Path(__file__).parents[2] / "daemon" / "data" / "thinpatch-client"
README = (Path(__file__).parents[2] / "README.md").read_text()


def test_the_crate_has_no_dependencies_and_states_its_minimum_rust_version():
    manifest = tomllib.loads((CRATE / "Cargo.toml").read_text())
    assert manifest.get("dependencies", {}) == {} and "dev-dependencies" not in manifest
    assert manifest["lib"]["name"] == "thinpatch_client"
    msrv = manifest["package"]["rust-version"]
    assert re.fullmatch(r"1\.\d+", msrv)
    assert f"minimum Rust version is {msrv}" in README


@pytest.mark.cargo
def test_the_crate_builds_without_warnings_under_edition_2024(tmp_path):
    copy = tmp_path / "thinpatch-client"
    shutil.copytree(CRATE, copy, ignore=shutil.ignore_patterns("target", "Cargo.lock"))
    manifest = (copy / "Cargo.toml").read_text()
    # Edition 2024 needs Rust 1.85; that is the only other change.
    edited = re.sub(
        r'rust-version = "[^"]+"', 'rust-version = "1.85"', manifest.replace('edition = "2021"', 'edition = "2024"')
    )
    assert edited.count('edition = "2024"') == 1
    (copy / "Cargo.toml").write_text(edited)
    env = dict(os.environ, CARGO_TARGET_DIR=str(tmp_path / "target"))
    out = subprocess.run(
        ["cargo", "check", "--offline", "--all-targets", "--message-format", "short"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "warning" not in out.stderr, out.stderr


def test_the_readme_hotfn_example_is_the_one_the_crate_compiles_in_a_loop():
    """The README's HotFn call is the line a doctest compiles and runs inside a loop that
    passes `&mut` state (the crate's `cargo test` runs its doctests)."""
    example = README.split("Functions with\narguments go through `HotFn`:", 1)[1].split("```rust\n", 1)[1]
    example = example.split("```", 1)[0]
    call = next(line.strip() for line in example.splitlines() if "HotFn::current(update).call(" in line)
    assert "loop {" in example
    doctests = (CRATE / "src" / "hot.rs").read_text()
    assert f"///     {call}" in doctests
    assert "for _ in 0..3 {" in doctests

