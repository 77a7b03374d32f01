"""The capture shims' launchers: Python started without site, written privately, and the
console scripts whenever a launcher can't be made."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from daemon.cli.capture_run import find_shim
from daemon.cli.shim_launchers import (
    SHIM_ENTRY_POINTS,
    capture_import_root,
    ensure_launchers,
    launcher_text,
    launchers_dir,
)
from tests.capture.test_capture_passthrough import real_rustc

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def state_env(tmp_path: Path) -> dict[str, str]:
    return {"THINPATCH_STATE_DIR": str(tmp_path / "state")}


def test_the_launchers_start_what_pyproject_declares() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    declared = {name: target.split(":")[0] for name, target in scripts.items() if target.endswith(":main")}
    assert {name: declared.get(name) for name in SHIM_ENTRY_POINTS} == SHIM_ENTRY_POINTS


@pytest.mark.parametrize("python", ["python3", "/opt/my python/bin/python3", "/" + "p" * 130 + "/python3"])
def test_no_launcher_where_a_shebang_cannot_name_python(python: str) -> None:
    assert launcher_text(python, "/x", "capture.rustc_shim") is None


def test_a_launcher_runs_its_shim_isolated_and_without_site(state_env: dict[str, str]) -> None:
    directory = ensure_launchers(state_env)
    assert directory == launchers_dir(sys.executable, capture_import_root(), state_env)
    for name in SHIM_ENTRY_POINTS:
        info = (directory / name).stat()
        assert info.st_mode & 0o777 == 0o700 and info.st_uid == os.geteuid()
    assert (directory.stat().st_mode & 0o777) == 0o700
    first_line = (directory / "thinpatch-rustc").read_text().splitlines()[0]
    assert first_line == f"#!{sys.executable} -IS"
    # A probe passes straight to rustc: the shim imported and ran from the launcher.
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")}
    launcher = str(directory / "thinpatch-rustc")
    done = subprocess.run([launcher, real_rustc(), "-vV"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("rustc "), done.stderr


def test_a_launcher_changed_on_disk_is_written_again(state_env: dict[str, str]) -> None:
    directory = ensure_launchers(state_env)
    assert directory is not None
    launcher = directory / "thinpatch-rustc"
    launcher.write_text("#!/bin/sh\nexit 1\n")
    before = launcher.stat().st_ino
    assert ensure_launchers(state_env) == directory
    assert launcher.read_text().startswith(f"#!{sys.executable} -IS") and launcher.stat().st_ino != before
    untouched = launcher.stat().st_ino
    ensure_launchers(state_env)
    assert launcher.stat().st_ino == untouched  # unchanged text: not rewritten


def test_a_linked_launchers_directory_falls_back_to_the_console_script(
    state_env: dict[str, str], tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    target = launchers_dir(sys.executable, capture_import_root(), state_env)
    target.parent.mkdir(parents=True, mode=0o700)
    target.symlink_to(elsewhere)
    shim = find_shim("thinpatch-rustc", state_env)
    assert Path(shim).parent == Path(sys.executable).parent and Path(shim).name == "thinpatch-rustc"
    assert list(elsewhere.iterdir()) == []  # nothing written through the link


def test_captures_use_the_launchers(state_env: dict[str, str]) -> None:
    shim = find_shim("thinpatch-rustc", state_env)
    assert Path(shim).parent == launchers_dir(sys.executable, capture_import_root(), state_env)


def test_a_relative_state_dir_still_names_the_launcher_absolutely(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    shim = find_shim("thinpatch-rustc", {"THINPATCH_STATE_DIR": "state"})
    assert shim == str(tmp_path / launchers_dir(sys.executable, capture_import_root(), {"THINPATCH_STATE_DIR": "state"})
                       / "thinpatch-rustc")
