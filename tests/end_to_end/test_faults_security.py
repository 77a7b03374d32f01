"""Security of the real daemon: file modes, other users, what a client message can make it do,
and recorded environments kept out of its logs."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from daemon.socket.client import RequestFailed, connect
from tests.support.daemon_process import DaemonProcess
from tests.support.faults import (
    assert_nothing_lost,
    is_outcome,
    outcome_of,
    run,
    save_like_an_editor,
    set_greeting,
)
from tests.support.other_user import connect_as_nobody

pytestmark = pytest.mark.cargo
is_root = os.geteuid() == 0


@pytest.fixture(scope="module")
def run_dir():
    """Like $XDG_RUNTIME_DIR: every user may traverse it, so only the daemon's own
    directory and socket modes (and its peer check) decide who gets in."""
    base = Path(tempfile.mkdtemp(prefix="tp-sec-", dir="/tmp"))
    os.chmod(base, 0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(captured, run_dir):
    """At debug log level, so the secret check sees everything the daemon would log. Its
    socket directory starts out too open (0755, holding the log): the daemon tightens it."""
    (run_dir / "thinpatch").mkdir(mode=0o755)
    os.chmod(run_dir / "thinpatch", 0o755)
    d = DaemonProcess(
        run_dir / "thinpatch" / "thinpatch.sock", [captured.workspace], "--log-level", "debug"
    )
    d.wait_watching(captured.workspace)
    yield d
    d.kill()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --------------------------------------------------------------------------- file modes


def test_socket_directory_socket_and_capture_records_are_private(captured, daemon):
    assert mode(daemon.socket_path.parent) == 0o700
    assert stat.S_ISSOCK(os.lstat(daemon.socket_path).st_mode)
    assert mode(daemon.socket_path) == 0o600
    root = captured.capture_root
    dirs = [root, root / "captures", *[p for p in (root / "captures").rglob("*") if p.is_dir()]]
    records = list((root / "captures").rglob("*.json"))
    assert len(records) >= 3 and len(dirs) >= 5  # livehost.bin, counterlib.lib, the link line
    assert {str(d): mode(d) for d in dirs} == {str(d): 0o700 for d in dirs}
    assert {str(r): mode(r) for r in records} == {str(r): 0o600 for r in records}
    # what the daemon writes beside them: symbol cache and session cache
    for cache_dir in (root / "symbols", root / "sessions"):
        if cache_dir.exists():
            assert mode(cache_dir) == 0o700, cache_dir
    for entry in (root / "symbols").glob("*"):
        assert mode(entry) == 0o600, entry


# --------------------------------------------------------------------------- other users


@pytest.mark.skipif(not is_root, reason="dropping to another uid needs root")
def test_a_client_of_another_uid_is_refused(daemon):
    # With the promised modes it cannot even reach the socket.
    assert connect_as_nobody(daemon.socket_path) == b"CONNECT-FAILED errno=13"
    # With the door opened by hand, the daemon's peer check still refuses it.
    os.chmod(daemon.socket_path.parent, 0o755)
    os.chmod(daemon.socket_path, 0o666)
    try:
        received = connect_as_nobody(daemon.socket_path)
    finally:
        os.chmod(daemon.socket_path, 0o600)
        os.chmod(daemon.socket_path.parent, 0o700)
    lines = [json.loads(line) for line in received.splitlines()]
    assert [m["type"] for m in lines] == ["error"], received
    nobody = pwd.getpwnam("nobody").pw_uid
    assert f"runs as uid {nobody}" in lines[0]["message"] and "permission denied" in lines[0]["message"]
    assert daemon.proc.poll() is None
    assert "refused a client of another user" in daemon.log()


# --------------------------------------------------------------------------- what messages can do


def _tree(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, int]]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        for name in filenames:
            path = Path(dirpath, name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            found[str(path)] = (info.st_size, info.st_mtime_ns)
    return found


def test_no_message_runs_a_chosen_command_or_writes_outside_the_session_cache(captured, daemon, tmp_path):
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    ws = str(captured.workspace)
    cache = (captured.capture_root / "sessions", captured.capture_root / "symbols")
    before = _tree(captured.workspace, cache)
    bad_requests = [
        {"type": "rebuild", "workspace": ws, "crate": "../../etc"},
        {"type": "rebuild", "workspace": ws, "crate": "/etc/passwd"},
        {"type": "rebuild", "workspace": ws, "crate": f"x; {command}"},
        {"type": "rebuild", "workspace": ws, "crate": "$(" + command + ")"},
        {"type": "rebuild", "workspace": "../../etc", "crate": "livehost"},
        {"type": "rebuild", "workspace": "/etc"},
        {"type": "rebuild", "workspace": str(tmp_path)},
        {"type": "rebuild", "workspace": ws + "/../../.."},
        {"type": "exec", "command": command},
        {"type": "shell", "argv": ["sh", "-c", command]},
    ]
    # Valid request types with extra fields naming a command, a compiler or an output path:
    # the daemon ignores what it does not know.
    harmless = [
        {"type": "status", "command": command, "rustc": "/bin/sh"},
        {"type": "ping", "argv": ["sh", "-c", command]},
        {"type": "subscribe", "workspace": "../../etc", "lib": str(marker), "rustc": "/bin/sh"},
    ]

    async def main():
        async with connect(daemon.socket_path) as client:
            for request in bad_requests:
                with pytest.raises(RequestFailed) as info:
                    await client.request(request)
                assert info.value.reply["type"] == "error" and info.value.reply["message"], request
            for request in harmless:
                try:
                    await client.request(request)
                except RequestFailed as exc:
                    assert exc.reply["message"]
            return await client.request({"type": "status"})

    status = run(main)
    assert status["workspaces"][0]["busy"] is False
    assert not marker.exists()
    after = _tree(captured.workspace, cache)
    assert after == before
    assert not list(Path("/etc").glob("*patch-*.so"))


# --------------------------------------------------------------------------- secrets in logs


def test_recorded_environment_never_appears_in_logs(captured, daemon, host, source):
    record = captured.capture_root / "captures" / "host-debug" / "rustc" / "livehost.bin.json"
    assert captured.secret in record.read_text()  # the capture did record it
    original = source.read_text()
    seen: list[dict] = []
    # A good build, a compile error, a missing compiler, a crashing compiler.
    seen += run(outcome_of, daemon.socket_path, captured.workspace, lambda: set_greeting(source, "SECRET OK", original))
    broken = original.replace("format!(\"app v1 #{} calls={}\", n, calls)", "format!(\"broken {}\", n calls)")
    seen += run(outcome_of, daemon.socket_path, captured.workspace, lambda: save_like_an_editor(source, broken))
    assert seen[-1]["type"] == "build-failed"
    captured.toolchain.remove("rustc")
    try:
        seen += run(
            outcome_of, daemon.socket_path, captured.workspace,
            lambda: set_greeting(source, "SECRET NO RUSTC", original),
        )
    finally:
        captured.toolchain.restore("rustc")
    captured.toolchain.replace_with_script("rustc", 'echo "error: the compiler unexpectedly panicked" >&2\nexit 101\n')
    try:
        seen += run(
            outcome_of, daemon.socket_path, captured.workspace, lambda: set_greeting(source, "SECRET CRASH", original)
        )
    finally:
        captured.toolchain.restore("rustc")
    outcomes = [e["type"] for e in seen if is_outcome(e)]
    assert outcomes == ["patch-ready", "build-failed", "build-failed", "build-failed"], outcomes
    log = daemon.log()
    assert '"level": "debug"' in log  # debug lines were written, and checked
    assert captured.secret not in log
    assert captured.secret not in json.dumps(seen)  # nor in what subscribers receive
    assert_nothing_lost(host, source, "AFTER SECRETS", base=original)
