"""Every failure the environment can cause, through the real command line: the command exits
non-zero with a line that says what to do, never "internal error" and never a traceback."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli.environment_errors import environment_message
from tests.support.other_user import nobody_ids

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (another user's files, a small tmpfs)")


def thinpatch(*args: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )


def assert_plain_failure(done: subprocess.CompletedProcess, *says: str) -> str:
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "internal error" not in output and "Traceback" not in output, output
    for text in says:
        assert text in output, output
    return output


@pytest.fixture
def project(tmp_path, capture_state_dir, monkeypatch):
    """A captured copy of single_bin, with runtime and state directories of its own."""
    from daemon.cli.capture_run import run_capture
    from tests.conftest import copy_fixture

    monkeypatch.delenv("CARGO_TARGET_DIR", raising=False)
    os.chmod(tmp_path, 0o700)
    workspace = copy_fixture("single_bin", tmp_path)
    assert run_capture(workspace).exit_code == 0
    return workspace


@pytest.fixture
def env(tmp_path):
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
    environment = {k: v for k, v in os.environ.items() if k not in ("THINPATCH_SOCKET", "CARGO_TARGET_DIR")}
    environment["XDG_RUNTIME_DIR"] = str(runtime)
    return environment


def captured_binary(workspace: Path) -> Path:
    deps = workspace / "target" / "debug" / "deps"
    return next(p for p in deps.iterdir() if p.name.startswith("single_bin-") and "." not in p.name)


@as_root
def test_run_with_a_runtime_directory_another_user_owns(project, env):
    squatted = Path(env["XDG_RUNTIME_DIR"]) / "thinpatch"
    squatted.mkdir(mode=0o777)
    os.chown(squatted, *nobody_ids())
    done = thinpatch("run", cwd=project, env=env)
    assert_plain_failure(done, f"{squatted} belongs to uid {nobody_ids()[0]}", "Remove it or set THINPATCH_SOCKET")


def test_run_with_a_binary_that_is_not_a_program(project, env):
    binary = captured_binary(project)
    binary.write_text("#!/bin/sh\necho not a build\n")
    done = thinpatch("run", cwd=project, env=env)
    assert_plain_failure(done, "not an ELF or Mach-O executable", "thinpatch capture")
    assert "not a build" not in done.stdout


def test_run_with_a_binary_in_a_directory_others_can_write(project, env):
    deps = captured_binary(project).parent
    os.chmod(deps, 0o777)
    done = thinpatch("run", cwd=project, env=env)
    assert_plain_failure(done, f"refusing to run {captured_binary(project)}", "chmod go-w")


@as_root
def test_capture_with_a_capture_root_another_user_owns(project, env):
    root = project / "target" / "thinpatch"
    uid, gid = nobody_ids()
    for directory, _, files in os.walk(root):
        os.chown(directory, uid, gid)
        for name in files:
            os.chown(os.path.join(directory, name), uid, gid)
    (project / "src" / "main.rs").touch()
    for command in ("capture", "run"):
        done = thinpatch(command, cwd=project, env=env)
        assert_plain_failure(done, str(root), f"belongs to uid {uid}")


def test_capture_without_cargo_on_the_path(project, env):
    env = dict(env, PATH=os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not shutil.which("cargo", path=p)))
    env.pop("CARGO", None)
    (project / "src" / "main.rs").touch()
    for command in ("capture", "run"):
        done = thinpatch(command, cwd=project, env=env)
        assert_plain_failure(done, "cannot run `cargo`", "Install the Rust toolchain")


def test_run_with_an_unreadable_cargo_toml(tmp_path, env):
    workspace = tmp_path / "broken"
    (workspace / "src").mkdir(parents=True)
    (workspace / "src" / "main.rs").write_text("fn main() {}\n")
    (workspace / "Cargo.toml").mkdir()  # a directory: reading it fails, whoever runs the test
    done = thinpatch("run", cwd=workspace, env=env)
    assert_plain_failure(done, str(workspace / "Cargo.toml"), "run `thinpatch run` again")


def test_a_failed_capture_build(project, env):
    (project / "src" / "main.rs").write_text("fn main() { this is not rust }\n")
    done = thinpatch("run", cwd=project, env=env)
    assert_plain_failure(done, "the build failed", "fix it")


@as_root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_capture_on_a_full_disk(project, env):
    """cargo builds, but the disk holding the capture records is full (a private tmpfs: a
    1777 one is refused before anything is written)."""
    records = project / "target" / "thinpatch"
    shutil.rmtree(records)
    records.mkdir()
    script = (
        f'mount -t tmpfs -o size=64k,mode=0700 tmpfs "{records}" && '
        f'(dd if=/dev/zero of="{records}/fill" bs=4k 2>/dev/null; '
        f'exec "{sys.executable}" -m daemon capture)'
    )
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script], cwd=project, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=120,
    )
    assert_plain_failure(done, "nothing was captured", "capture.log", "is full", "free some space")


# --------------------------------------------------------------------------- the classification


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        (errno.ENOSPC, "Free some space"),
        (errno.EDQUOT, "Free some space"),
        (errno.EROFS, "writable directory"),
        (errno.EACCES, "owner and mode"),
        (errno.ELOOP, "Remove the link"),
        (errno.EMFILE, "ulimit -n"),
        (errno.EISDIR, "Remove or rename it"),
        (errno.ENOENT, "thinpatch capture"),
        (errno.ECONNREFUSED, "run the command again"),
    ],
)
def test_each_os_error_is_a_line_naming_the_file_and_the_fix(code, fix):
    message = environment_message(OSError(code, os.strerror(code), "/some/file"))
    assert message is not None and fix in message and "/some/file" in message


def test_a_bug_is_not_taken_for_the_environment():
    assert environment_message(KeyError("x")) is None
    assert environment_message(AssertionError("x")) is None
