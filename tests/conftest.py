"""Shared fixtures: fixture workspaces copied to temp dirs, and captured builds shared per session.

Every copy lives under a directory whose name contains a space, so the whole suite also checks
that paths with spaces survive capture, replay and linking.

Before any test runs, the session gets XDG directories of its own (tests/support/isolation.py),
so nothing the suite starts writes to the user's real state, runtime, cache or config
directories.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.support import isolation
from tests.support.daemon_process import DaemonProcess
from tests.support.fixtures import copy_fixture_tree

FIXTURES = Path(__file__).parent / "fixtures"


def pytest_configure(config):
    # In os.environ, first thing: every capture shim and daemon a test starts inherits it.
    isolation.isolate()


def pytest_unconfigure(config):
    isolation.restore()


def copy_fixture(name: str, dest_parent: Path) -> Path:
    """Copy ``tests/fixtures/<name>`` into ``dest_parent/"<name> copy"`` (without any target dir)."""
    return copy_fixture_tree(FIXTURES / name, dest_parent / f"{name} copy")


@pytest.fixture
def fixture_copy(tmp_path):
    """Function-scoped: ``fixture_copy("single_bin")`` -> a fresh copy in a path with a space."""
    parent = tmp_path / "with space"
    parent.mkdir()
    return lambda name: copy_fixture(name, parent)


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    """A socket path in the test's own directory, short enough for a Unix socket."""
    from tests.support.protocol_harness import short_socket_path

    return short_socket_path(tmp_path)


class Served(NamedTuple):
    daemon: DaemonProcess
    workspace: Path
    capture_root: Path
    env: dict[str, str]  # for commands: the daemon's state directory and socket


@pytest.fixture
def served(tmp_path):
    """A real daemon serving one workspace with a planted capture of this user's (its compiler
    is a script that leaves a marker: no cargo needed), with a state directory of its own."""
    from tests.support.other_user import plant_capture_as_self

    os.chmod(tmp_path, 0o700)
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "Cargo.toml").write_text('[package]\nname = "app"\n')
    (ws / "src" / "main.rs").write_text("fn main() {}\n")
    root = plant_capture_as_self(ws, tmp_path / "rustc.sh", tmp_path / "compiler-ran", recorded_at=time.time() + 3600)
    env = dict(os.environ, THINPATCH_STATE_DIR=str(tmp_path / "state"))
    (tmp_path / "d").mkdir(mode=0o700)
    daemon = DaemonProcess(tmp_path / "d" / "thinpatch.sock", [ws], env=env)
    daemon.wait_watching(ws)
    yield Served(daemon, ws, root, dict(env, THINPATCH_SOCKET=str(daemon.socket_path)))
    daemon.terminate()


@pytest.fixture(scope="session")
def capture_state_dir(tmp_path_factory):
    """A private per-user registry for the session, so tests never touch the real one."""
    path = tmp_path_factory.mktemp("thinpatch state")
    old = os.environ.get("THINPATCH_STATE_DIR")
    os.environ["THINPATCH_STATE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("THINPATCH_STATE_DIR", None)
    else:
        os.environ["THINPATCH_STATE_DIR"] = old


def captured_fixture_copy(name: str, parent: Path) -> Path:
    """A copy of ``tests/fixtures/<name>`` under ``parent``, captured with `thinpatch capture`."""
    from daemon.cli.capture_run import run_capture

    workspace = copy_fixture(name, parent)
    result = run_capture(workspace)
    assert result.exit_code == 0, f"capture of {name} failed: {result}"
    return workspace


def _capture_copy(tmp_path_factory, name: str, **kwargs):
    from daemon.cli.capture_run import run_capture

    workspace = copy_fixture(name, tmp_path_factory.mktemp(f"captured {name}"))
    result = run_capture(workspace, **kwargs)
    assert result.exit_code == 0, f"capture of {name} failed: {result}"
    return result


@pytest.fixture(scope="session")
def captured_single_bin(tmp_path_factory, capture_state_dir):
    """CaptureResult of `thinpatch capture` on tests/fixtures/single_bin."""
    return _capture_copy(tmp_path_factory, "single_bin")


@pytest.fixture(scope="session")
def captured_workspace(tmp_path_factory, capture_state_dir):
    """CaptureResult of `thinpatch capture -- -j2` on tests/fixtures/workspace (bin, lib, build.rs, proc-macro)."""
    return _capture_copy(tmp_path_factory, "workspace", cargo_args=["-j2"])


@pytest.fixture(scope="session")
def captured_debian(tmp_path_factory, capture_state_dir):
    """CaptureResult for tests/fixtures/debian_deps (serde_json + regex from Debian's registry).

    Built with the shim as RUSTC_WRAPPER, so every registry crate also passes through it (and is
    skipped); the bin's record is the same as under RUSTC_WORKSPACE_WRAPPER.
    """
    return _capture_copy(tmp_path_factory, "debian_deps", wrapper="all")
