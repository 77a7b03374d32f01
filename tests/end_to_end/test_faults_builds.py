"""Build faults against a real daemon: a broken or missing toolchain, a killed compiler, an
unwritable session cache, damaged capture records, vanished sources and workspaces, and a
burst of saves. Each gives a clear event, the daemon stays up, and once the cause is gone
the next edit patches the running host again (``assert_nothing_lost``)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import anyio
import pytest

from daemon.socket.client import connect
from tests.support.faults import (
    assert_nothing_lost,
    capture_copy,
    collect_until,
    is_outcome,
    kill_first_rustc,
    outcome_of,
    quiet_mark,
    run,
    save_like_an_editor,
    set_greeting,
    start_daemon,
    start_host,
)

pytestmark = pytest.mark.cargo


def outcome(daemon, captured, action) -> dict:
    events = run(outcome_of, daemon.socket_path, captured.workspace, action)
    assert events[0]["type"] == "build-started", events
    return events[-1]


def assert_still_serving(daemon) -> None:
    assert daemon.proc.poll() is None, daemon.log()
    async def ping():
        async with connect(daemon.socket_path) as client:
            return await client.request({"type": "ping"})

    assert run(ping)["type"] == "pong"


# --------------------------------------------------------------------------- the toolchain


def test_rustc_missing_then_reinstalled(captured, daemon, host, source):
    rustc = captured.toolchain.path("rustc")
    captured.toolchain.remove("rustc")
    try:
        failed = outcome(daemon, captured, lambda: set_greeting(source, "NO RUSTC"))
        assert failed["type"] == "build-failed", failed
        assert f"rustc not found: {rustc}" in failed["message"], failed
        assert "thinpatch capture" in failed["message"]
        host.expect(lambda line: line == "EVENT build-failed")
        assert_still_serving(daemon)
    finally:
        captured.toolchain.restore("rustc")
    assert_nothing_lost(host, source, "RUSTC BACK")


def test_linker_missing_then_reinstalled(captured, daemon, host, source):
    captured.toolchain.remove("cc")
    try:
        failed = outcome(daemon, captured, lambda: set_greeting(source, "NO LINKER"))
        assert failed["type"] == "build-failed", failed
        assert "linker not found: cc" in failed["message"], failed
        assert_still_serving(daemon)
    finally:
        captured.toolchain.restore("cc")
    assert_nothing_lost(host, source, "LINKER BACK")


def test_rustc_exiting_non_zero_without_diagnostics(captured, daemon, host, source):
    captured.toolchain.replace_with_script(
        "rustc",
        "echo \"thread 'rustc' panicked at compiler/rustc_middle/src/ty/mod.rs:1:1\" >&2\n"
        "echo 'error: the compiler unexpectedly panicked. this is a bug.' >&2\n"
        "exit 101\n",
    )
    try:
        failed = outcome(daemon, captured, lambda: set_greeting(source, "ICE"))
        assert failed["type"] == "build-failed", failed
        assert "the compiler unexpectedly panicked" in failed["message"], failed
        assert "101" in failed["message"] or "panicked" in failed["message"]
        assert_still_serving(daemon)
    finally:
        captured.toolchain.restore("rustc")
    assert_nothing_lost(host, source, "AFTER ICE")


SLOW_CONST = """
// Const evaluation keeps rustc busy for a few seconds.
#[allow(long_running_const_eval)]
const SLOW_FAULT: u64 = {
    let mut i = 0u64;
    let mut x = 0u64;
    while i < 1_500_000 { x = x.wrapping_mul(31).wrapping_add(i); i += 1; }
    x
};
"""


def test_rustc_killed_halfway(captured, daemon, host, source):
    original = source.read_text()
    slow = original.replace("// APP-EDIT", "let _ = SLOW_FAULT;") + SLOW_CONST
    killed: list[int] = []

    def slow_save_then_kill() -> None:
        save_like_an_editor(source, slow)
        started = time.monotonic()
        killed.append(kill_first_rustc(daemon.proc.pid))
        killed.append(round((time.monotonic() - started) * 1000))

    failed = outcome(daemon, captured, slow_save_then_kill)
    assert failed["type"] == "build-failed", failed
    assert "SIGKILL" in failed["message"] and "rustc" in failed["message"], failed
    assert "does not compile" not in failed["message"], failed
    assert_still_serving(daemon)
    assert not any(p.name.startswith(".") and p.name.endswith(".tmp") for p in _patches_dir(captured).iterdir())
    assert_nothing_lost(host, source, "AFTER KILL", base=original)


def _patches_dir(captured) -> Path:
    return captured.capture_root / "sessions" / "host-debug" / "patches"


# --------------------------------------------------------------------------- the session cache


def test_session_cache_unwritable(captured, daemon, host, source):
    # chmod does not stop root (CI runs as root): a file where the directory should be does.
    sessions = captured.capture_root / "sessions"
    aside = sessions.with_name("sessions.aside")
    os.rename(sessions, aside)
    sessions.write_text("not a directory\n")
    try:
        failed = outcome(daemon, captured, lambda: set_greeting(source, "NO CACHE"))
        assert failed["type"] == "build-failed", failed
        assert "session cache" in failed["message"] and str(sessions) in failed["message"], failed
        assert "internal error" not in failed["message"], failed
        assert_still_serving(daemon)
    finally:
        sessions.unlink()
        os.rename(aside, sessions)
    assert_nothing_lost(host, source, "CACHE BACK")


# --------------------------------------------------------------------------- capture records


def _put_back(path: Path, data: bytes) -> None:
    """Restore a record as the capture wrote it (0600)."""
    path.write_bytes(data)
    path.chmod(0o600)


def _record(captured, kind: str, name: str) -> Path:
    [path] = (captured.capture_root / "captures" / "host-debug" / kind).glob(name)
    return path


def test_capture_records_deleted_or_damaged_mid_session(captured, daemon, host, source):
    """Records are read when a session starts: records deleted or damaged later do not stop
    the session running on what it read."""
    deleted = _record(captured, "rustc", "counterlib.lib.json")
    damaged = _record(captured, "rustc", "livehost.bin.json")
    saved = {p: p.read_bytes() for p in (deleted, damaged)}
    try:
        deleted.unlink()
        damaged.write_text('{"format": 1, "crate_name": ')
        assert_nothing_lost(host, source, "RECORDS GONE")
    finally:
        for path, data in saved.items():
            _put_back(path, data)


def test_session_starting_on_a_damaged_record(captured, daemon, host, source):
    """A link record rewritten (as a new capture does) starts a new session. When it is
    damaged, the session says which records it skipped, builds fail naming them, and a good
    record brings patching back."""
    link = _record(captured, "link", "livehost-*.json")
    good = link.read_bytes()

    async def damage_link_then_save() -> tuple[list[dict], list[dict]]:
        async with connect(daemon.socket_path) as client:
            await client.subscribe(workspace=str(captured.workspace))
            link.write_bytes(b"\0garbage\xff")
            announced = await collect_until(client, lambda e: e["type"] == "full-rebuild-required", timeout=30)
            status = await client.request({"type": "status"})
            [ws] = status["workspaces"]
            assert any(str(link) in w for w in ws["capture_warnings"]), ws
            await anyio.to_thread.run_sync(lambda: set_greeting(source, "BAD LINK"))
            return announced, await collect_until(client, is_outcome, timeout=60)

    try:
        announced, events = run(damage_link_then_save)
        types = [e["type"] for e in announced if not e.get("replayed")]
        assert types[-2:] == ["session-reset", "full-rebuild-required"], types
        assert announced[-1]["files"] == [str(link)], announced[-1]
        assert "thinpatch capture" in announced[-1]["reason"]
        failed = events[-1]
        assert failed["type"] == "build-failed", events
        assert "no link line captured" in failed["message"] and str(link) in failed["message"], failed
        assert_still_serving(daemon)
    finally:
        _put_back(link, good)
    host.expect(lambda line: line == "EVENT build-failed", timeout=30)
    host.expect(lambda line: line == "EVENT session-reset", timeout=30)
    assert_nothing_lost(host, source, "RECORDS BACK")


# --------------------------------------------------------------------------- sources


def test_edited_source_deleted_then_restored(captured, daemon, host, source):
    original = source.read_text()
    failed = outcome(daemon, captured, source.unlink)
    assert failed["type"] == "build-failed", failed
    assert "main.rs" in failed["message"], failed
    assert_still_serving(daemon)
    assert_nothing_lost(host, source, "UNDELETED", base=original)


def test_edited_source_renamed_away_and_back(captured, daemon, host, source):
    original = source.read_text()
    moved = source.with_name("main.rs.renamed")
    failed = outcome(daemon, captured, lambda: os.rename(source, moved))
    assert failed["type"] == "build-failed", failed
    assert "main.rs" in failed["message"], failed
    restored = outcome(daemon, captured, lambda: os.rename(moved, source))
    assert restored["type"] == "patch-ready", restored
    assert_nothing_lost(host, source, "RENAMED BACK", base=original)


def test_100_saves_within_a_second(captured, daemon, host, source):
    original = source.read_text()

    def burst() -> None:
        started = time.monotonic()
        for i in range(100):
            set_greeting(source, f"BURST {i}", original)
            time.sleep(max(0.0, started + (i + 1) * 0.009 - time.monotonic()))
        assert time.monotonic() - started < 1.0

    async def main():
        async with connect(daemon.socket_path) as client:
            await client.subscribe(workspace=str(captured.workspace))
            mark = await quiet_mark(client, captured.workspace)
            await anyio.to_thread.run_sync(burst)
            final = await collect_until(
                client, lambda e: e["type"] == "patch-ready" and not e.get("replayed") and e["seq"] > mark, 90
            )
            # later builds of the same burst may still follow: wait until the daemon is idle
            end = await quiet_mark(client, captured.workspace)
            return [e for e in final if not e.get("replayed") and e["seq"] > mark], end

    events, _ = run(main)
    started = [e for e in events if e["type"] == "build-started"]
    assert 1 <= len(started) <= 3, [e["type"] for e in events]
    print(f"100 saves: {len(started)} build(s) started")
    host.expect(lambda line: line.startswith("PATCHED"), timeout=60)
    deadline = time.monotonic() + 30
    while not host.tick()["app"].startswith("app BURST 99 #"):
        assert time.monotonic() < deadline, "the final content never reached the host"
        host.expect(lambda line: line.startswith("PATCHED"), timeout=30)
    assert_nothing_lost(host, source, "AFTER BURST", base=original)


# --------------------------------------------------------------------------- the workspace


def test_workspace_directory_deleted_then_restored(tmp_path_factory, capture_state_dir):
    captured = capture_copy(tmp_path_factory.mktemp("faults deleted"))
    daemon = start_daemon(tmp_path_factory.mktemp("sock"), captured.workspace)
    host = start_host(captured.workspace, daemon.socket_path)
    backup = captured.workspace.with_name("backup")
    try:
        shutil.copytree(captured.workspace, backup, symlinks=True)  # keeps mtimes
        [gone] = run(outcome_of, daemon.socket_path, captured.workspace, lambda: shutil.rmtree(captured.workspace))
        assert gone["type"] == "full-rebuild-required", gone
        assert str(captured.workspace / "Cargo.toml") in gone["files"], gone
        assert f"the workspace directory {captured.workspace} was deleted" in gone["reason"], gone
        host.expect(lambda line: line == "EVENT full-rebuild-required")
        assert_still_serving(daemon)
        # Back as it was: the watcher re-arms on the re-created directories; the restored
        # sources rebuild (the same code), and no full rebuild is asked for.
        restored = run(
            outcome_of, daemon.socket_path, captured.workspace, lambda: os.rename(backup, captured.workspace)
        )
        assert [e["type"] for e in restored] == ["build-started", "patch-ready"], restored
        assert_nothing_lost(host, captured.app_source, "WORKSPACE BACK")
    finally:
        host.close()
        daemon.kill()
