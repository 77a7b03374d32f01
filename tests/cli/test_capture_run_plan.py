"""Pure parts of `thinpatch capture`: cargo command, profile dir, environment, messages, summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capture import store
from capture.store import CrateKey
from daemon.cli.capture_run import (
    CaptureResult,
    binaries_from_messages,
    capture_env,
    cargo_build_command,
    crate_roots_to_touch,
    format_summary,
    parse_host_triple,
    profile_dir_name,
)


@pytest.mark.parametrize(
    "release, args, expected",
    [
        (False, [], "debug"),
        (True, [], "release"),
        (False, ["--release"], "release"),
        (False, ["--profile", "dev"], "debug"),
        (False, ["--profile=bench"], "release"),
        (False, ["--profile", "fast"], "fast"),
    ],
)
def test_profile_dir_name(release, args, expected):
    assert profile_dir_name(release, args) == expected


@pytest.mark.parametrize(
    "release, target, args, expected",
    [
        (False, None, [], ["cargo", "build"]),
        (
            True,
            "aarch64-apple-darwin",
            ["-j2"],
            ["cargo", "build", "--release", "--target", "aarch64-apple-darwin", "-j2"],
        ),
        (False, None, ["-p", "app"], ["cargo", "build", "-p", "app"]),
        (False, None, ["--bin=app"], ["cargo", "build", "--bin=app"]),
    ],
)
def test_cargo_build_command(release, target, args, expected):
    assert cargo_build_command(release, target, args) == expected


def test_capture_env_replaces_other_wrappers():
    base = {"PATH": "/bin", "RUSTC_WRAPPER": "sccache", "RUSTC_WORKSPACE_WRAPPER": "other"}
    env = capture_env(
        base,
        rustc_shim="/v/thinpatch-rustc",
        capture_root=Path("/w/target/thinpatch"),
        workspace=Path("/w"),
        host_triple="x86_64-unknown-linux-gnu",
    )
    assert env["RUSTC_WORKSPACE_WRAPPER"] == "/v/thinpatch-rustc" and "RUSTC_WRAPPER" not in env
    assert env[store.ENV_CAPTURE_ROOT] == "/w/target/thinpatch" and env[store.ENV_WORKSPACE] == "/w"
    assert env[store.ENV_HOST_TRIPLE] == "x86_64-unknown-linux-gnu" and env["PATH"] == "/bin"
    all_crates = capture_env(
        base,
        rustc_shim="/v/thinpatch-rustc",
        capture_root=Path("/r"),
        workspace=Path("/w"),
        host_triple="t",
        wrapper="all",
    )
    assert all_crates["RUSTC_WRAPPER"] == "/v/thinpatch-rustc" and "RUSTC_WORKSPACE_WRAPPER" not in all_crates


def test_parse_host_triple():
    assert (
        parse_host_triple("rustc 1.95.0\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\n") == "x86_64-unknown-linux-gnu"
    )


def test_crate_roots_to_touch_skips_tests_and_build_scripts():
    members = [
        {
            "targets": [
                {"kind": ["bin"], "src_path": "/w/app/src/main.rs"},
                {"kind": ["custom-build"], "src_path": "/w/app/build.rs"},
                {"kind": ["test"], "src_path": "/w/app/tests/t.rs"},
            ]
        },
        {"targets": [{"kind": ["proc-macro"], "src_path": "/w/m/src/lib.rs"}]},
    ]
    assert crate_roots_to_touch(members) == [Path("/w/app/src/main.rs"), Path("/w/m/src/lib.rs")]


def test_binaries_from_messages():
    lines = [
        json.dumps(
            {
                "reason": "compiler-artifact",
                "target": {"kind": ["lib"]},
                "filenames": ["/t/libx.rlib"],
                "executable": None,
            }
        ),
        json.dumps(
            {
                "reason": "compiler-artifact",
                "target": {"kind": ["bin"]},
                "filenames": ["/t/app"],
                "executable": "/t/app",
            }
        ),
        json.dumps(
            {
                "reason": "compiler-artifact",
                "target": {"kind": ["cdylib"]},
                "filenames": ["/t/libp.so"],
                "executable": None,
            }
        ),
        json.dumps({"reason": "build-finished", "success": True}),
        "not json",
    ]
    assert binaries_from_messages(lines) == [Path("/t/app"), Path("/t/libp.so")]


def test_format_summary():
    result = CaptureResult(
        workspace=Path("/w"),
        target_dir=Path("/w/target"),
        capture_root=Path("/w/target/thinpatch"),
        scope="host-debug",
        host_triple="x86_64-unknown-linux-gnu",
        exit_code=0,
        cargo_command=["cargo", "build"],
        started_at=0.0,
        duration=1.25,
        captured=[CrateKey("corelib", "lib"), CrateKey("app", "bin")],
        binaries=[Path("/w/target/debug/app")],
    )
    text = format_summary(result)
    assert "captured 2 crate invocation(s) in 1.2s" in text or "in 1.3s" in text
    assert "crates:  app.bin, corelib.lib" in text
    assert "binary:  /w/target/debug/app" in text
    assert "capture: /w/target/thinpatch/captures/host-debug" in text
