"""The attacks of a second, unprivileged user (nobody), run for real: a capture planted above
or inside a project, a workspace deleted and re-created by someone else, and a squatted or
impersonated socket. In each, the attacker's program must never run, and the victim gets a
message naming what was refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import pytest

from capture import store
from daemon.socket.client import DaemonNotTrusted, connect
from tests.support.daemon_process import DaemonProcess
from tests.support.other_user import (
    PLANT_CAPTURE,
    SYSTEM_PYTHON,
    FakeDaemon,
    nobody_ids,
    plant_capture_as_nobody,
    run_as_nobody,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")


def thinpatch(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def victim_env(private: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "THINPATCH_SOCKET")}
    env["THINPATCH_STATE_DIR"] = str(private / "state")
    env.update(extra)
    return env


def make_project(directory: Path, manifest: str = '[package]\nname = "app"\nversion = "0.1.0"\n') -> Path:
    (directory / "src").mkdir(parents=True, exist_ok=True)
    (directory / "Cargo.toml").write_text(manifest)
    (directory / "src" / "main.rs").write_text("fn main() {}\n")
    return directory


def status_json(socket_path: Path, env: dict[str, str]) -> dict:
    out = thinpatch("status", "--json", "--socket", str(socket_path), env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# --------------------------------------------------------------------------- planted captures


def test_a_capture_planted_above_the_project_is_never_used(shared, private):
    marker = shared / "ran-as"
    plant_capture_as_nobody(shared, shared / "evil.sh", marker)
    assert os.stat(shared / "target").st_uid == nobody_ids()[0]
    project = make_project(shared / "project")  # the victim's, with no capture of its own
    env = victim_env(private)

    out = thinpatch("patch", "--workspace", str(project), env=env)
    assert out.returncode == 1, out
    assert "no capture found" in out.stderr and "Traceback" not in out.stderr
    assert "thinpatch capture" in out.stderr

    daemon = DaemonProcess(private / "d.sock", [project], env=env)
    try:
        time.sleep(2.5)  # two discovery rounds
        status = status_json(daemon.socket_path, env)
        assert status["workspaces"] == []
        assert any("no capture found" in p["message"] for p in status["problems"]), status
    finally:
        daemon.terminate()
    assert not marker.exists(), f"the attacker's program ran as uid {marker.read_text()}"


def test_a_capture_planted_inside_a_shared_workspace_is_refused(shared, private):
    """The victim's workspace is itself a directory others may write in (a shared team dir):
    the attacker's capture root there belongs to them, so it is refused, by name."""
    marker = shared / "ran-as"
    make_project(shared)
    root = plant_capture_as_nobody(shared, shared / "evil.sh", marker)
    env = victim_env(private)

    out = thinpatch("patch", "--workspace", str(shared), env=env)
    assert out.returncode == 1, out
    assert f"ignored {root}" in out.stderr and f"belongs to uid {nobody_ids()[0]}" in out.stderr
    assert "Traceback" not in out.stderr

    daemon = DaemonProcess(private / "d.sock", [shared], env=env)
    try:
        time.sleep(2.5)
        status = status_json(daemon.socket_path, env)
        assert status["workspaces"] == []
        assert any(f"ignored {root}" in p["message"] for p in status["problems"]), status
    finally:
        daemon.terminate()
    assert not marker.exists(), f"the attacker's program ran as uid {marker.read_text()}"


def test_a_workspace_recreated_by_another_user_is_not_served(shared, private):
    workspace = make_project(shared / "ws")
    # The victim's own capture: a compiler that would only leave its own mark, recorded
    # after the sources so that serving it starts no build.
    own_marker = private / "victim-compiler-ran"
    subprocess.run(
        [SYSTEM_PYTHON, "-c", PLANT_CAPTURE, str(workspace / "target" / "thinpatch"),
         str(private / "own.sh"), str(own_marker), str(time.time() + 3600)],
        check=True,
    )
    env = victim_env(private)
    store.register_workspace(workspace, workspace / "target" / "thinpatch", env)
    entry = store.registry_entry_path(workspace, env)
    daemon = DaemonProcess(private / "d.sock", [], env=env)
    try:
        daemon.wait_watching(workspace)
        # The victim deletes the workspace; another user makes the same path again, with a
        # capture recorded before its sources (so a daemon serving it would build at once).
        shutil.rmtree(workspace)
        marker = shared / "ran-as"
        run_as_nobody(
            "import os, sys; d = sys.argv[1]; os.makedirs(d + '/src');"
            "open(d + '/Cargo.toml', 'w').write('[package]\\nname = \"app\"\\n');"
            "open(d + '/src/main.rs', 'w').write('fn main() {}\\n')",
            str(workspace),
        )
        plant_capture_as_nobody(workspace, shared / "evil.sh", marker, recorded_at=0.0)
        time.sleep(3.5)  # three discovery rounds
        status = status_json(daemon.socket_path, env)
        assert status["workspaces"] == [], status
        assert not entry.exists()
        assert "workspace no longer registered" in daemon.log()
    finally:
        daemon.terminate()
    assert not marker.exists(), f"the attacker's program ran as uid {marker.read_text()}"
    assert not own_marker.exists()


# --------------------------------------------------------------------------- squatted sockets


@pytest.fixture
def squatted(shared):
    """With XDG_RUNTIME_DIR unset, the socket falls back to <tmp>/thinpatch-<uid>/: the
    attacker made that directory first and runs a fake daemon in it."""
    fallback = shared / f"thinpatch-{os.getuid()}"
    run_as_nobody("import os, sys; os.mkdir(sys.argv[1], 0o755)", str(fallback))
    fake = FakeDaemon(fallback / "thinpatch.sock", shared / "requests.log", str(shared / "libevil.so"))
    yield fake
    fake.stop()


@pytest.fixture
def impersonated():
    """The socket directory and file are the victim's, but the process listening on it runs
    as another user: only the peer's credentials give it away."""
    base = Path(tempfile.mkdtemp(prefix="tp-peer-", dir="/tmp"))
    os.chmod(base, 0o711)
    directory = base / "thinpatch"
    directory.mkdir(mode=0o700)
    log = base / "requests.log"
    log.touch()
    os.chmod(log, 0o666)
    fake = FakeDaemon(directory / "thinpatch.sock", log, str(base / "libevil.so"), bind_as_root=True)
    assert os.stat(directory / "thinpatch.sock").st_uid == os.getuid()
    yield fake, directory / "thinpatch.sock"
    fake.stop()
    shutil.rmtree(base, ignore_errors=True)


def assert_refused(out: subprocess.CompletedProcess, reason: str) -> None:
    assert out.returncode == 1, out
    assert "refusing to talk to" in out.stderr and reason in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    if "--json" in out.args and "status" in out.args:
        assert json.loads(out.stdout)["running"] is False
    else:
        assert out.stdout == ""


def test_status_and_watch_refuse_a_squatted_socket_directory(shared, private, squatted):
    env = victim_env(private, TMPDIR=str(shared))
    reason = f"belongs to uid {nobody_ids()[0]}"
    assert_refused(thinpatch("status", env=env), reason)
    assert_refused(thinpatch("status", "--json", env=env), reason)
    assert_refused(thinpatch("watch", env=env, timeout=20), reason)
    assert_refused(thinpatch("watch", "--json", env=env, timeout=20), reason)
    # The real daemon refuses to start there too, and says why.
    serve = thinpatch("serve", env=env, timeout=20)
    assert serve.returncode != 0 and "belongs to uid" in serve.stderr and "Traceback" not in serve.stderr
    assert squatted.requests() == []


def test_python_client_refuses_a_squatted_socket_directory(shared, squatted, monkeypatch):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("THINPATCH_SOCKET", raising=False)
    monkeypatch.setenv("TMPDIR", str(shared))
    tempfile.tempdir = None  # re-read TMPDIR

    async def main():
        async with connect() as client:
            await client.subscribe()

    try:
        with pytest.raises(DaemonNotTrusted, match=f"belongs to uid {nobody_ids()[0]}"):
            anyio.run(main)
    finally:
        tempfile.tempdir = None
    assert squatted.requests() == []


def test_clients_refuse_a_daemon_of_another_user_by_its_credentials(private, impersonated):
    fake, socket_path = impersonated
    reason = f"the daemon runs as uid {nobody_ids()[0]}"

    async def main():
        async with connect(socket_path) as client:
            await client.subscribe()

    with pytest.raises(DaemonNotTrusted, match=reason):
        anyio.run(main)
    env = victim_env(private, THINPATCH_SOCKET=str(socket_path))
    assert_refused(thinpatch("status", env=env), reason)
    assert_refused(thinpatch("watch", env=env, timeout=20), reason)
    assert fake.requests() == []
