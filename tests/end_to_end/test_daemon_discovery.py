"""The daemon finds workspaces through the capture registry, with no --workspace and no restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.support.daemon_process import DaemonProcess

pytestmark = pytest.mark.cargo


def status(daemon) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "daemon", "status", "--json", "--socket", str(daemon.socket_path)],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_new_capture_is_served_without_a_restart(fixture_copy, tmp_path):
    from daemon.cli.capture_run import run_capture

    state = tmp_path / "state"
    env = dict(os.environ, THINPATCH_STATE_DIR=str(state))
    daemon = DaemonProcess(tmp_path / "d.sock", [], env=env)
    try:
        assert status(daemon)["workspaces"] == []
        workspace = fixture_copy("single_bin")
        assert run_capture(workspace, env=env).exit_code == 0
        deadline = time.monotonic() + 20
        served = []
        while time.monotonic() < deadline and not served:
            served = [w for w in status(daemon)["workspaces"] if w["workspace"] == os.path.realpath(workspace)]
            time.sleep(0.2)
        assert served, daemon.log()
        daemon.wait_watching(workspace.resolve())
    finally:
        daemon.terminate()


def test_an_edit_made_while_no_daemon_ran_is_patched_when_it_starts(fixture_copy, tmp_path):
    import anyio

    from daemon.cli.capture_run import run_capture
    from daemon.socket.client import connect

    state = tmp_path / "state"
    env = dict(os.environ, THINPATCH_STATE_DIR=str(state))
    workspace = fixture_copy("single_bin")
    assert run_capture(workspace, env=env).exit_code == 0
    main_rs = workspace / "src" / "main.rs"
    time.sleep(0.01)
    main_rs.write_text(main_rs.read_text() + "\n// edited before the daemon started\n")

    async def first_outcome(daemon) -> dict:
        async with connect(daemon.socket_path) as client:
            await client.subscribe()
            with anyio.fail_after(30):
                async for event in client.events():
                    if event["type"] in ("patch-ready", "build-failed", "patch-rejected"):
                        return event

    daemon = DaemonProcess(tmp_path / "d.sock", [workspace], env=env)
    try:
        event = anyio.run(first_outcome, daemon)
        assert event["type"] == "patch-ready", event
    finally:
        daemon.terminate()
