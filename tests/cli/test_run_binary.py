"""Which binaries `thinpatch run` starts: every directory from the binary's up to the
workspace root must be one only this user can write, and the file must be ELF or Mach-O."""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

import pytest

from daemon.cli.run_binary import binary_refusal, directories_to_check


def test_the_directories_checked_run_from_the_binary_up_to_the_workspace_root():
    assert directories_to_check("/w/target/debug/deps/app-1", "/w") == [
        "/w/target/debug/deps", "/w/target/debug", "/w/target", "/w"
    ]
    assert directories_to_check("/shared/target/debug/app", "/w") == ["/shared/target/debug"]


@pytest.fixture
def workspace(tmp_path) -> Path:
    os.chmod(tmp_path, 0o700)
    deps = tmp_path / "ws" / "target" / "debug" / "deps"
    deps.mkdir(parents=True)
    for d in (deps, *list(deps.parents)[:3]):
        os.chmod(d, 0o755)
    shutil.copyfile("/bin/true", deps / "app-1")
    os.chmod(deps / "app-1", 0o755)
    return tmp_path / "ws"


def binary(workspace: Path) -> str:
    return str(workspace / "target" / "debug" / "deps" / "app-1")


def test_a_binary_only_its_owner_can_replace_may_run(workspace):
    assert binary_refusal(binary(workspace), str(workspace)) is None


@pytest.mark.parametrize("writable", ["target/debug/deps", "target/debug", "target", "."])
def test_a_directory_others_can_write_up_to_the_workspace_root_is_refused(workspace, writable):
    directory = (workspace / writable).resolve()
    os.chmod(directory, 0o777)
    refusal = binary_refusal(binary(workspace), str(workspace))
    assert refusal is not None and f"{directory}" in refusal and "writable by other users" in refusal
    assert f"chmod go-w {shlex.quote(str(directory))}" in refusal


def test_a_binary_others_can_write_is_refused(workspace):
    os.chmod(binary(workspace), 0o757)
    refusal = binary_refusal(binary(workspace), str(workspace))
    assert refusal is not None and "writable by other users" in refusal


def test_a_script_in_place_of_the_binary_is_a_plain_message(workspace):
    Path(binary(workspace)).write_text("#!/bin/sh\necho hi\n")
    refusal = binary_refusal(binary(workspace), str(workspace))
    assert refusal is not None and "not an ELF or Mach-O executable" in refusal
    assert "thinpatch capture" in refusal


def test_a_missing_binary_says_to_build_it_again(workspace):
    os.unlink(binary(workspace))
    refusal = binary_refusal(binary(workspace), str(workspace))
    assert refusal is not None and "thinpatch capture" in refusal
