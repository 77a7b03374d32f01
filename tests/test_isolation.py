"""The suite leaves the user's own thinpatch files alone.

tests/conftest.py gives the session XDG directories of its own (tests/support/isolation.py).
Here a real `thinpatch capture` and a real `thinpatch serve`, run with the suite's environment
and thinpatch's default locations, leave the user's real state and runtime directories (as the
environment pytest started with names them) exactly as they were. And, so that this check can
fail: the same capture without the suite's directories writes its registry entry into
``~/.local/state/thinpatch``, and the same snapshot sees it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capture.store import registry_entry_path, state_dir
from daemon.socket.socket_paths import default_socket_path
from tests.conftest import copy_fixture
from tests.support import isolation

pytestmark = pytest.mark.cargo


def snapshot(directory: Path) -> dict[str, tuple[str, int, int]] | None:
    """Every entry under ``directory`` (itself included): kind, size and mtime; None if absent."""
    if not os.path.lexists(directory):
        return None
    entries = {}
    for path in [directory, *sorted(directory.rglob("*"))]:
        info = path.lstat()
        kind = "dir" if path.is_dir() and not path.is_symlink() else "other"
        entries[str(path.relative_to(directory))] = (kind, info.st_size, info.st_mtime_ns)
    return entries


def real_directories() -> list[Path]:
    """The user's state directory and socket directory, as the environment pytest started with names them."""
    original = isolation.original_environ()
    return [state_dir(original), default_socket_path(original).parent]


def thinpatch(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon", *args], capture_output=True, text=True, env=env, **kwargs)


def test_the_suite_uses_directories_of_its_own():
    root = isolation.suite_root()
    assert Path(os.environ["XDG_RUNTIME_DIR"]).is_relative_to(root)
    assert os.stat(os.environ["XDG_RUNTIME_DIR"]).st_mode & 0o777 == 0o700
    assert default_socket_path().is_relative_to(root)
    for var in ("XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        assert Path(os.environ[var]).is_relative_to(root), var
    for real in real_directories():
        assert not real.is_relative_to(root)
        assert not state_dir().is_relative_to(real) and not default_socket_path().is_relative_to(real)


def test_a_capture_and_a_daemon_leave_the_users_real_directories_alone(tmp_path):
    real = real_directories()
    real_before = [snapshot(d) for d in real]
    ours = state_dir()
    ours_before = snapshot(ours)
    workspace = copy_fixture("single_bin", tmp_path)

    capture = thinpatch("capture", cwd=workspace, timeout=300)
    assert capture.returncode == 0, capture.stderr
    entry = registry_entry_path(workspace)
    assert entry.is_relative_to(ours) and entry.exists()

    log = open(tmp_path / "daemon.log", "wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "daemon", "serve", "--workspace", str(workspace)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert serve.poll() is None, (tmp_path / "daemon.log").read_text()
            status = thinpatch("status", "--json", timeout=30)  # the default socket, like a user's
            if status.returncode == 0 and any(
                w["workspace"] == str(workspace) and w.get("watching") for w in json.loads(status.stdout)["workspaces"]
            ):
                break
            assert time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()
            time.sleep(0.1)
        assert default_socket_path().exists()
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)
        log.close()

    # The capture did register the workspace, in the suite's state directory: the snapshot sees it...
    ours_after = snapshot(ours)
    assert ours_after != ours_before
    assert str(entry.relative_to(ours)) in set(ours_after) - set(ours_before or {})
    # ... and the user's real directories are as they were.
    assert [snapshot(d) for d in real] == real_before, real


def test_without_the_suites_directories_a_capture_writes_to_the_home_directory(tmp_path):
    """What the suite did before it set its own directories: a capture registers its workspace
    in ``~/.local/state/thinpatch``. Here that home is a temporary one (the toolchain stays where
    it is installed), and the snapshot shows the entry the capture added."""
    home = tmp_path / "home"
    home.mkdir()
    real_home = Path(isolation.original_environ().get("HOME") or Path.home())
    env = {k: v for k, v in os.environ.items() if k not in (*isolation.XDG_DIRS, *isolation.THINPATCH_LOCATIONS)}
    env["HOME"] = str(home)
    env.setdefault("RUSTUP_HOME", str(real_home / ".rustup"))
    env.setdefault("CARGO_HOME", str(real_home / ".cargo"))
    registry_home = home / ".local" / "state" / "thinpatch"
    before = snapshot(registry_home)
    workspace = copy_fixture("single_bin", tmp_path)

    capture = thinpatch("capture", cwd=workspace, env=env, timeout=300)
    assert capture.returncode == 0, capture.stderr

    after = snapshot(registry_home)
    assert after != before
    added = set(after) - set(before or {})
    entry = registry_entry_path(workspace, {"THINPATCH_STATE_DIR": str(registry_home)})
    assert str(entry.relative_to(registry_home)) in added, added
    assert any(p.startswith("workspaces/") and p.endswith(".json") for p in added), added
