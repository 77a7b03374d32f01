"""A second, unprivileged user (nobody) plants links where thinpatch writes: in a shared
target dir, as the capture root, inside a session cache. thinpatch never writes through
them, never changes the mode of a directory it did not make, and a refused session is an
event for its workspace while the daemon goes on serving the others."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.cli.capture_run import run_capture
from tests.conftest import copy_fixture
from tests.support.daemon_process import DaemonProcess
from tests.support.faults import assert_nothing_lost, outcome_of, run, set_greeting
from tests.support.other_user import nobody_ids, run_as_nobody

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root"),
    pytest.mark.cargo,
]


def thinpatch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon", *args], capture_output=True, text=True, env=env, timeout=120)


def victim_env(private: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "THINPATCH_SOCKET")}
    env["THINPATCH_STATE_DIR"] = str(private / "state")
    env.update(extra)
    return env


def test_links_planted_in_a_shared_target_dir_are_not_written_through(shared, private):
    """Another user made the shared CARGO_TARGET_DIR first, with capture.lock and capture.log
    linking to files of the victim's choosing-to-be."""
    target = shared / "target"
    lock_target, log_target = private / "made-by-the-lock", private / "made-by-the-log"
    run_as_nobody(
        "import os, sys; t, lock, log = sys.argv[1:]; os.makedirs(t + '/thinpatch', 0o755);"
        "os.symlink(lock, t + '/thinpatch/capture.lock'); os.symlink(log, t + '/thinpatch/capture.log')",
        str(target), str(lock_target), str(log_target),
    )
    workspace = copy_fixture("single_bin", private)
    out = thinpatch("capture", "--workspace", str(workspace), env=victim_env(private, CARGO_TARGET_DIR=str(target)))
    assert out.returncode != 0, out
    assert "refusing to use" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not lock_target.exists() and not log_target.exists()
    assert sorted(p.name for p in (target / "thinpatch").iterdir()) == ["capture.lock", "capture.log"]


def test_a_capture_root_linked_to_a_shared_directory_leaves_its_mode_alone(shared, private):
    workspace = copy_fixture("single_bin", private)
    (workspace / "target").mkdir()
    (workspace / "target" / "thinpatch").symlink_to(shared)  # root's own 1777 directory, like /tmp
    out = thinpatch("capture", "--workspace", str(workspace), env=victim_env(private))
    assert out.returncode != 0, out
    assert "symbolic link" in out.stderr and f"rm {workspace / 'target' / 'thinpatch'}" in out.stderr, out.stderr
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
    assert list(shared.iterdir()) == []


def test_a_session_subdirectory_linked_to_another_users_directory_is_refused(captured, daemon, host, source, shared):
    """The other user would rename their library over each new patch before it is loaded."""
    patches = captured.capture_root / "sessions" / "host-debug" / "patches"
    theirs = shared / "theirs"
    run_as_nobody("import os, sys; os.mkdir(sys.argv[1], 0o755)", str(theirs))
    aside = patches.with_name("patches.aside")

    def link_then_edit() -> None:  # once no build runs: each build checks the session as it starts
        os.rename(patches, aside)
        patches.symlink_to(theirs)
        set_greeting(source, "LINKED")

    try:
        events = run(outcome_of, daemon.socket_path, captured.workspace, link_then_edit)
        failed = events[-1]
        assert failed["type"] == "build-failed", failed
        assert f"{patches}: it is a symbolic link" in failed["message"] and f"rm {patches}" in failed["message"]
        assert "internal error" not in failed["message"], failed
        assert daemon.proc.poll() is None, daemon.log()
        assert list(theirs.iterdir()) == []
    finally:
        if patches.is_symlink():
            patches.unlink()
        if aside.exists():
            os.rename(aside, patches)
    assert_nothing_lost(host, source, "UNLINKED")


def test_a_linked_session_root_is_an_event_while_other_workspaces_are_served(shared, private):
    env = victim_env(private)
    refused, healthy = (copy_fixture("single_bin", private / name) for name in ("refused", "healthy"))
    for workspace in (refused, healthy):
        assert run_capture(workspace, env=env).ok
    theirs = shared / "theirs"
    run_as_nobody("import os, sys; os.mkdir(sys.argv[1], 0o755)", str(theirs))
    session = refused / "target" / "thinpatch" / "sessions" / "host-debug"
    session.parent.mkdir(parents=True, exist_ok=True)
    session.symlink_to(theirs)
    (private / "d").mkdir(mode=0o700)
    daemon = DaemonProcess(private / "d" / "thinpatch.sock", [refused, healthy], env=env)
    try:
        daemon.wait_watching(healthy)
        time.sleep(1.0)  # a discovery round after both were tried
        assert daemon.proc.poll() is None, daemon.log()
        out = thinpatch("status", "--json", "--socket", str(daemon.socket_path), env=env)
        status = json.loads(out.stdout)
        assert [w["workspace"] for w in status["workspaces"]] == [str(healthy)], status
        [problem] = [p for p in status["problems"] if p["workspace"] == str(refused)]
        assert f"{session}: it is a symbolic link" in problem["message"], problem
        assert "internal error" not in daemon.log()
    finally:
        daemon.terminate()
    assert list(theirs.iterdir()) == [] and os.stat(theirs).st_uid == nobody_ids()[0]
