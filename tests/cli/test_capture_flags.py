"""`thinpatch capture` takes cargo's selection flags directly, and still `-- <cargo args>`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from capture import store
from daemon.cli.capture_run import cargo_build_command, profile_dir_name
from daemon.cli.commands.capture import cargo_selection_args
from daemon.cli.main import build_parser


def cargo_command(*argv: str) -> tuple[list[str], str]:
    """The `cargo build` command and the capture scope `thinpatch capture ARGV` runs."""
    args = build_parser().parse_args(["capture", *argv])
    extra = list(args.cargo_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    cargo_args = cargo_selection_args(args) + extra
    scope = store.scope_name(args.target, profile_dir_name(args.release, cargo_args))
    return cargo_build_command(args.release, args.target, cargo_args), scope


def test_selection_flags_go_to_cargo_as_cargo_spells_them():
    command, scope = cargo_command(
        "--bin", "editor", "-p", "game", "--package", "tools", "--profile", "dev-fast",
        "--features", "a,b", "-F", "c", "--no-default-features",
    )
    assert command == [
        "cargo", "build", "--bin", "editor", "--package", "game", "--package", "tools",
        "--profile", "dev-fast", "--features", "a,b", "--features", "c", "--no-default-features",
    ]
    assert scope == store.scope_name(None, "dev-fast")


def test_release_target_and_all_features():
    command, scope = cargo_command("-r", "--target", "x86_64-unknown-linux-gnu", "--all-features")
    assert command == [
        "cargo",
        "build",
        "--release",
        "--target",
        "x86_64-unknown-linux-gnu",
        "--all-features",
    ]
    assert scope == store.scope_name("x86_64-unknown-linux-gnu", "release")


def test_arguments_after_a_double_dash_still_reach_cargo():
    command, scope = cargo_command("--release", "--", "--profile", "dev-fast", "--locked")
    assert command == ["cargo", "build", "--release", "--profile", "dev-fast", "--locked"]
    assert scope == store.scope_name(None, "dev-fast")
    assert cargo_command()[0] == ["cargo", "build"]  # no wider than `cargo build` in that directory


@pytest.mark.cargo
def test_capture_with_a_custom_profile_and_a_bin_builds_that_bin_in_that_profile(tmp_path: Path):
    project = tmp_path / "game"
    subprocess.run(["cargo", "new", "--quiet", "--bin", "--vcs", "none", str(project)], check=True)
    (project / "src" / "bin").mkdir()
    (project / "src" / "bin" / "editor.rs").write_text('fn main() { println!("editor"); }\n')
    manifest = project / "Cargo.toml"
    manifest.write_text(
        manifest.read_text() + '\n[features]\ndefault = ["fancy"]\nfancy = []\n\n[profile.dev-fast]\ninherits = "dev"\n'
    )
    env = dict(os.environ, THINPATCH_STATE_DIR=str(tmp_path / "state"))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon",
            "capture",
            "--profile",
            "dev-fast",
            "--bin",
            "editor",
            "--no-default-features",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert (project / "target" / "dev-fast" / "editor").exists()
    assert not (project / "target" / "dev-fast" / "game").exists()  # only the chosen bin
    assert (project / "target" / "thinpatch" / "captures" / store.scope_name(None, "dev-fast")).is_dir()
