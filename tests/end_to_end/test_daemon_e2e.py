"""End to end: a real daemon process, a real captured fixture, editor-like saves, and the
live Rust host subscribed over the socket, applying `patch-ready` events as they come."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from daemon.socket.client import connect
from tests.conftest import copy_fixture
from tests.support.daemon_process import (
    DaemonProcess,
    collect_until,
    is_outcome,
    quiet_mark,
    save_like_an_editor,
)

pytestmark = pytest.mark.cargo

APP = "app/src/main.rs"
ORIGINAL_GREETING = 'format!("app v1 #{} calls={}", n, calls)'


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, capture_state_dir):
    from daemon.cli.capture_run import run_capture

    ws = copy_fixture("livehost", tmp_path_factory.mktemp("daemon e2e"))
    assert run_capture(ws).exit_code == 0
    return ws


@pytest.fixture
def app_source(workspace):
    path = workspace / APP
    original = path.read_text()
    yield path
    if path.read_text() != original:
        save_like_an_editor(path, original)


def test_a_new_session_warms_up_without_telling_anyone(workspace, daemon):
    """The daemon compiles the program once when its session starts (so the first save is as
    fast as later ones), and publishes nothing for it: no build, no patch."""
    deadline = time.monotonic() + 120
    while "warmed up" not in daemon.log():
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.2)
    out = subprocess.run([sys.executable, "-m", "daemon", "status", "--json", "--socket", str(daemon.socket_path)],
                         capture_output=True, text=True, timeout=60)
    [ws] = [w for w in json.loads(out.stdout)["workspaces"] if w["workspace"] == str(workspace)]
    assert ws["builds"] == 0 and ws["last_patch"] is None
    assert all(p["last_patch"] is None for p in ws["programs"])


def test_a_save_patches_the_subscribed_host_without_a_restart(workspace, daemon, host, app_source):
    before = host.tick()
    save_like_an_editor(
        app_source, app_source.read_text().replace(ORIGINAL_GREETING, 'format!("app SAVED #{} calls={}", n, calls)')
    )
    host.expect(lambda line: line.startswith("PATCHED"), timeout=60)
    after = host.tick()
    assert after["app"].startswith("app SAVED #")
    assert int(after["counter"]) == int(before["counter"]) + 1
    assert host.alive()


@pytest.mark.asyncio
async def test_compile_error_then_fix(workspace, daemon, host, app_source):
    good = app_source.read_text()
    async with connect(daemon.socket_path) as client:
        await client.subscribe(workspace=str(workspace))
        mark = await quiet_mark(client, workspace)  # an earlier test's restore may still be building
        save_like_an_editor(app_source, good.replace(ORIGINAL_GREETING, 'format!("broken #{}", n calls)'))
        events = await collect_until(client, lambda e: is_outcome(e) and e["seq"] > mark)
        events = [e for e in events if not e.get("replayed") and e["seq"] > mark]
        failed = events[-1]
        assert failed["type"] == "build-failed", events
        assert events[0]["type"] == "build-started" and str(app_source) in events[0]["files"]
        primary = [d for d in failed["diagnostics"] if d["level"] == "error"]
        assert primary, failed
        spans = [s for d in primary for s in d.get("spans", []) if s.get("is_primary")]
        assert any(s["file_name"].endswith("main.rs") and s["line_start"] > 0 for s in spans), primary
        assert "main.rs" in failed["message"]
        host.expect(lambda line: line == "EVENT build-failed")

        save_like_an_editor(app_source, good.replace(ORIGINAL_GREETING, 'format!("app FIXED #{} calls={}", n, calls)'))
        events = await collect_until(client, is_outcome)
        assert events[-1]["type"] == "patch-ready", events
    host.expect(lambda line: line.startswith("PATCHED"))
    assert host.tick()["app"].startswith("app FIXED #")


def _patch_holds(event: dict, text: bytes) -> bool:
    return event["type"] == "patch-ready" and text in Path(event["lib"]).read_bytes()


@pytest.mark.asyncio
async def test_a_save_written_in_place_in_two_parts_patches_the_final_content(workspace, daemon, host, app_source):
    # Truncate and write, with a pause longer than the watcher's quiet period in between:
    # the daemon sees the half-written file, and the next event must restart the build on
    # the final content. Whatever the half file gave, the last outcome is the final code.
    final = app_source.read_text().replace(ORIGINAL_GREETING, 'format!("app IN PLACE #{} calls={}", n, calls)')
    half = len(final) // 2
    async with connect(daemon.socket_path) as client:
        await client.subscribe(workspace=str(workspace))
        mark = await quiet_mark(client, workspace)
        with open(app_source, "w") as out:
            out.write(final[:half])
            out.flush()
            os.fsync(out.fileno())
            await anyio.sleep(0.15)
            out.write(final[half:])
        final_patch = await collect_until(client, lambda e: is_outcome(e) and _patch_holds(e, b"app IN PLACE #"))
        try:  # nothing comes after it: no build of the half-written file wins
            after = await collect_until(client, is_outcome, timeout=1.5)
        except TimeoutError:
            after = []
    assert after == [], after
    outcomes = [e for e in final_patch if is_outcome(e) and e["seq"] > mark]
    host.expect(lambda line: line.startswith("PATCHED") and f"id={outcomes[-1]['id']}" in line, timeout=60)
    assert host.tick()["app"].startswith("app IN PLACE #")


@pytest.mark.asyncio
async def test_two_clients_both_get_every_event_and_watch_json_shows_the_same_stream(workspace, daemon, app_source):
    watch = subprocess.Popen(
        [sys.executable, "-m", "daemon", "watch", "--json", "--socket", str(daemon.socket_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    watch_lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [watch_lines.put(line) for line in watch.stdout], daemon=True).start()
    try:
        async with connect(daemon.socket_path) as a, connect(daemon.socket_path) as b:
            await a.subscribe()
            await b.subscribe()
            with anyio.fail_after(20):  # the host, a, b and `watch` are all subscribed
                while (await a.request({"type": "status"}))["daemon"]["subscribers"] < 4:
                    await anyio.sleep(0.1)
            mark = await quiet_mark(a, workspace)
            save_like_an_editor(
                app_source,
                app_source.read_text().replace(ORIGINAL_GREETING, 'format!("app TWO #{} calls={}", n, calls)'),
            )
            events_a = await collect_until(a, lambda e: is_outcome(e) and e["seq"] > mark)
            events_b = await collect_until(b, lambda e: is_outcome(e) and e["seq"] > mark)
        # b subscribed a moment after a: compare what both saw after the mark
        live_a = [(e["type"], e["seq"]) for e in events_a if not e.get("replayed") and e["seq"] > mark]
        assert live_a == [(e["type"], e["seq"]) for e in events_b if not e.get("replayed") and e["seq"] > mark]
        # An earlier build may be superseded by this save (restart policy): it only shows as
        # an extra build-started. The live host's report of an earlier patch may come in between.
        assert live_a[-1][0] == "patch-ready"
        assert (
            {"build-started", "patch-ready"}
            <= {t for t, _ in live_a}
            <= {"build-started", "patch-ready", "patch-result"}
        )
        # `watch` subscribed before this save: it must show this build's events.
        final_id = events_a[-1]["id"]
        wanted = {e["seq"] for e in events_a if e.get("id") == final_id and not e.get("replayed")}
        assert len(wanted) == 2
        seen = set()
        deadline = time.monotonic() + 20
        while not wanted <= seen and time.monotonic() < deadline:
            try:
                seen.add(json.loads(watch_lines.get(timeout=1)).get("seq"))
            except queue.Empty:
                pass
        assert wanted <= seen
    finally:
        watch.terminate()
        watch.wait(timeout=5)


@pytest.mark.asyncio
async def test_new_subscriber_gets_the_last_valid_patch(workspace, daemon, app_source):
    async with connect(daemon.socket_path) as client:
        await client.subscribe(workspace=str(workspace))
        mark = await quiet_mark(client, workspace)  # an earlier test's restore may still be building
        save_like_an_editor(
            app_source, app_source.read_text().replace(ORIGINAL_GREETING, 'format!("app LAST #{} calls={}", n, calls)')
        )
        events = await collect_until(client, lambda e: is_outcome(e) and e["seq"] > mark)
        assert events[-1]["type"] == "patch-ready"
        lib = events[-1]["lib"]
    async with connect(daemon.socket_path) as late:
        await late.subscribe(workspace=str(workspace))
        replayed = await collect_until(late, lambda e: e["type"] == "patch-ready", timeout=5)
        assert replayed[-1]["lib"] == lib and replayed[-1].get("replayed") is True


@pytest.mark.asyncio
async def test_manifest_change_requires_a_full_rebuild_and_sends_no_patch(workspace, daemon):
    manifest = workspace / "counterlib" / "Cargo.toml"
    original = manifest.read_text()
    try:
        async with connect(daemon.socket_path) as client:
            await client.subscribe(workspace=str(workspace))
            mark = await quiet_mark(client, workspace)  # an earlier test's restore may still be building
            manifest.write_text(original + "\n[features]\nextra = []\n")
            events = await collect_until(client, lambda e: is_outcome(e) and e["seq"] > mark)
        assert [e["type"] for e in events if not e.get("replayed") and e["seq"] > mark] == ["full-rebuild-required"]
        assert str(manifest) in events[-1]["files"]
        assert "thinpatch capture" in events[-1]["reason"]
    finally:
        manifest.write_text(original)


@pytest.mark.asyncio
async def test_rebuild_request_and_bad_crate_names(workspace, daemon):
    async with connect(daemon.socket_path) as client:
        await client.subscribe(workspace=str(workspace))
        # an earlier test's restored source may still be building: it would join this patch
        mark = await quiet_mark(client, workspace)
        reply = await client.request({"type": "rebuild", "workspace": str(workspace), "crate": "counterlib"})
        assert reply["type"] == "ok"
        # (the previous test's Cargo.toml restore may still announce a full rebuild first)
        events = await collect_until(
            client, lambda e: is_outcome(e) and e["type"] != "full-rebuild-required" and e["seq"] > mark
        )
        assert events[-1]["type"] == "patch-ready" and events[-1]["edited_crate"] == "counterlib"
    from daemon.socket.client import RequestFailed

    async with connect(daemon.socket_path) as client:
        for bad in ("../../etc", "nosuchcrate"):
            with pytest.raises(RequestFailed) as info:
                await client.request({"type": "rebuild", "workspace": str(workspace), "crate": bad})
            assert info.value.reply["type"] == "error" and info.value.reply["message"]


def test_status_command_lists_the_workspace(workspace, daemon):
    out = subprocess.run(
        [sys.executable, "-m", "daemon", "status", "--json", "--socket", str(daemon.socket_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    [ws] = [w for w in status["workspaces"] if w["workspace"] == str(workspace)]
    assert "livehost.bin" in ws["crates"] and ws["watched_files"] >= 4


def test_fresh_capture_resets_the_session(workspace, daemon, tmp_path):
    from daemon.cli.capture_run import run_capture

    async def main():
        async with connect(daemon.socket_path) as client:
            await client.subscribe(workspace=str(workspace))
            result = await anyio.to_thread.run_sync(lambda: run_capture(workspace))
            assert result.exit_code == 0
            events = await collect_until(client, lambda e: e["type"] == "session-reset", timeout=30)
            assert events[-1]["workspace"] == str(workspace)

    anyio.run(main)


def test_sigterm_shuts_down_within_a_second_and_removes_the_socket(workspace, tmp_path):
    d = DaemonProcess(tmp_path / "t.sock", [workspace])
    took = d.terminate()
    assert d.proc.returncode == 0, d.log()
    assert took < 1.5, took
    assert not (tmp_path / "t.sock").exists()


def test_a_second_daemon_on_the_same_socket_is_refused(workspace, daemon):
    out = subprocess.run(
        [sys.executable, "-m", "daemon", "serve", "--socket", str(daemon.socket_path), "--workspace", str(workspace)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "already running" in out.stderr


def test_thinpatch_patch_lets_the_running_daemon_build_and_deliver(workspace, daemon, host, app_source):
    """A one-shot `thinpatch patch` uses the daemon that serves the program: warm caches, and
    the subscribed host gets the same patch. --no-daemon builds in the command itself."""
    save_like_an_editor(
        app_source, app_source.read_text().replace(ORIGINAL_GREETING, 'format!("app ONE-SHOT #{} calls={}", n, calls)')
    )
    command = [
        sys.executable,
        "-m",
        "daemon",
        "patch",
        "--json",
        "--workspace",
        str(workspace),
        "--socket",
        str(daemon.socket_path),
    ]
    by_daemon = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert by_daemon.returncode == 0, by_daemon.stderr
    result = json.loads(by_daemon.stdout)
    assert result["built_by"] == "daemon" and result["program"]["name"] == "livehost"
    assert result["jump_table"]["lib"] == result["lib"]
    host.expect(lambda line: line.startswith("PATCHED"), timeout=60)
    assert host.tick()["app"].startswith("app ONE-SHOT #")

    local = subprocess.run([*command, "--no-daemon"], capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr
    assert "built_by" not in json.loads(local.stdout)
