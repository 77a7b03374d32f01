"""The shims never change what cargo and the user see: exit codes, messages, stdout, probes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cargo

WRAPPER_VARS = ("RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER")


def shim(name: str) -> str:
    return (
        str(Path(sys.executable).parent / name) if (Path(sys.executable).parent / name).exists() else shutil.which(name)
    )


def clean_env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in WRAPPER_VARS and not k.startswith("THINPATCH_")}
    env.update(extra)
    return env


def real_rustc() -> str:
    out = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout.strip()
    return str(Path(out) / "bin" / "rustc")


def break_source(workspace: Path) -> None:
    main = workspace / "src" / "main.rs"
    main.write_text(main.read_text().replace('format!("hello, {name}")', 'let n: u32 = "not a number"; format!("{n}")'))


def json_build(workspace: Path, target_dir: Path, env: dict[str, str]):
    env = dict(env, CARGO_TARGET_DIR=str(target_dir))
    return subprocess.run(
        ["cargo", "build", "--message-format=json"], cwd=workspace, env=env, capture_output=True, text=True
    )


def rendered_messages(stdout: str) -> list[str]:
    messages = [json.loads(line) for line in stdout.splitlines()]  # every stdout line is cargo JSON
    return [m["message"]["rendered"] for m in messages if m.get("reason") == "compiler-message"]


def test_compile_error_passes_through_unchanged(fixture_copy, tmp_path):
    ws = fixture_copy("single_bin")
    break_source(ws)
    plain = json_build(ws, tmp_path / "plain", clean_env())
    wrapped = json_build(
        ws,
        tmp_path / "wrapped",
        clean_env(RUSTC_WORKSPACE_WRAPPER=shim("thinpatch-rustc"), THINPATCH_CAPTURE_ROOT=str(tmp_path / "captures")),
    )
    assert plain.returncode == wrapped.returncode == 101
    assert rendered_messages(wrapped.stdout) == rendered_messages(plain.stdout)
    assert any("error[E0308]" in m for m in rendered_messages(plain.stdout))
    # The failing crate's invocation is still recorded (it is the one to replay after a fix).
    assert list((tmp_path / "captures").rglob("single_bin.bin.json"))


def test_capture_command_exit_code_and_clean_stdout(fixture_copy):
    ws = fixture_copy("single_bin")
    break_source(ws)
    proc = subprocess.run(
        [shim("thinpatch"), "capture", "--workspace", str(ws)], capture_output=True, text=True, env=clean_env()
    )
    assert proc.returncode == 101
    assert "error[E0308]" in proc.stderr and "mismatched types" in proc.stderr
    assert "cargo build failed (exit 101)" in proc.stderr
    assert proc.stdout == ""


def test_capture_command_success_summary(fixture_copy):
    ws = fixture_copy("single_bin")
    proc = subprocess.run(
        [shim("thinpatch"), "capture", "--workspace", str(ws)], capture_output=True, text=True, env=clean_env()
    )
    assert proc.returncode == 0, proc.stderr
    assert "single_bin.bin" in proc.stderr
    assert f"binary:  {ws / 'target' / 'debug' / 'single_bin'}" in proc.stderr
    assert str(ws / "target" / "thinpatch" / "captures" / "host-debug") in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "args, stdin",
    [
        (["-vV"], ""),
        (
            ["-", "--crate-name", "___", "--print=file-names", "--crate-type", "bin", "--print=sysroot", "--print=cfg"],
            "",
        ),
        (["--bogus-flag"], ""),  # rustc's own error and exit code
    ],
)
def test_probes_are_not_recorded_and_output_is_identical(tmp_path, args, stdin):
    rustc = real_rustc()
    env = clean_env(THINPATCH_CAPTURE_ROOT=str(tmp_path / "root"), THINPATCH_STATE_DIR=str(tmp_path / "state"))
    direct = subprocess.run([rustc, *args], input=stdin, capture_output=True, text=True, env=env)
    wrapped = subprocess.run(
        [shim("thinpatch-rustc"), rustc, *args], input=stdin, capture_output=True, text=True, env=env
    )
    assert (wrapped.returncode, wrapped.stdout, wrapped.stderr) == (direct.returncode, direct.stdout, direct.stderr)
    assert not (tmp_path / "root").exists()
    assert not (tmp_path / "state").exists()


def test_signal_exit_passes_through(tmp_path):
    """The shim execs rustc, so a rustc killed by a signal looks the same to cargo."""
    fake = tmp_path / "fake-rustc"
    fake.write_text("#!/bin/sh\nkill -TERM $$\n")
    fake.chmod(0o755)
    proc = subprocess.run([shim("thinpatch-rustc"), str(fake), "-vV"], env=clean_env())
    assert proc.returncode == -15
